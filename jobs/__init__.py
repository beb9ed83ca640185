"""Scheduled jobs (a capability) that turn stored events into rows of ``metric_points``.

base (closed windows, catch-up, idempotent writes, run records), one module per
job (sli, slo, cost, hallucination, drift, grounding, incident_kpis) and what only
jobs use (embeddings, drift_methods). Which jobs run, and how often, is wired in
``monitor.scheduler``.

Layer rule: imports the foundation and this package; never alerts, dashboards,
monitor.ingest or the composition root. A job module is not a query library for
the pages: shared SQL and statistics live in the foundation.
"""
