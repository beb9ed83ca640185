"""``nlpmon demo``: synthetic traffic with injected incidents, for trying nlpmon out.

Part of the composition root, like the CLI and the scheduler wiring (layer
rule: may import anything). Nothing below the root imports it.

* :mod:`monitor.demo.traffic`: the event generator;
* :mod:`monitor.demo.timeline`: the window, the load curve and the incidents;
* :mod:`monitor.demo.texts` and ``texts.json``: the text pools and traffic tables, as data;
* :mod:`monitor.demo.load`: what ``nlpmon demo`` does with the events (store them, compute the
  metrics for the demo window, replay the alerts). Not imported here, so
  ``from monitor import demo`` stays cheap for tests and benchmarks that only need events;
* :mod:`monitor.demo.background`: ``nlpmon serve --demo``, the same load in the background while the
  pages answer, then live traffic.
"""
from monitor.demo.timeline import incidents
from monitor.demo.traffic import FEATURES, Feature, expected_requests, generate

# Two weeks: every period choice up to 7 days has a full previous period, every incident a full week before.
DEFAULT_DAYS, DEFAULT_RPS, DEFAULT_SEED = 14.0, 0.2, 7

__all__ = ["DEFAULT_DAYS", "DEFAULT_RPS", "DEFAULT_SEED", "FEATURES", "Feature", "expected_requests", "generate", "incidents"]
