"""``nlpmon demo``: synthetic traffic with injected incidents, for trying nlpmon out.

Part of the composition root, like the CLI and the scheduler wiring (layer
rule: may import anything). Nothing below the root imports it.

* :mod:`monitor.demo.traffic`: the event generator;
* :mod:`monitor.demo.timeline`: the window, the load curve and the incidents;
* :mod:`monitor.demo.texts` and ``texts.json``: the text pools and traffic tables, as data;
* :mod:`monitor.demo.load`: what ``nlpmon demo`` does with the events (store them, compute the
  metrics for the demo window, replay the alerts). Not imported here, so
  ``from monitor import demo`` stays cheap for tests and benchmarks that only need events.
"""
from monitor.demo.timeline import incidents
from monitor.demo.traffic import FEATURES, Feature, expected_requests, generate

__all__ = ["FEATURES", "Feature", "expected_requests", "generate", "incidents"]
