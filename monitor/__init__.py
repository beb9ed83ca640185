"""nlpmon: observability and drift monitoring for NLP and LLM features in production.

The layers, and the one rule for imports (``tests/test_layers.py`` checks it):

- foundation, ``monitor.foundation``: config, clock, storage, the event and
  metric contracts, rollup SQL, statistics, the HTTP basics, and one owner
  module per table (``monitor.foundation.tables``). Imports nothing above it.
- capabilities: ingest (``monitor.ingest``), ``jobs``, ``alerts``, ``dashboards``.
  Each imports the foundation and its own package, never another capability.
- composition root: the app factory (``monitor.app``), the CLI (``monitor.cli``),
  the scheduler wiring (``monitor.scheduler``), health checks (``monitor.health``)
  and the demo (``monitor.demo``). Imports anything, and is imported by nothing.
- ``monitor.client``, the Python client applications use, imports only this
  package's version.
- ``migrations``: frozen DDL, imports nothing from the application.
"""

__version__ = "0.1.0"
