"""The read side over HTTP (a capability): pages for managers, on-call engineers and postmortem
authors, and the read APIs behind them.

access (sign-in, CSRF, headers), views (the pages), kpis (the overview's figures),
charts, incidents (the explorer and its exports), series (GET /v1/metrics and
/metrics), reports (drift reports), review (the review API and queue), jobs (GET /v1/jobs).

Layer rule: imports the foundation and this package; never jobs, alerts,
monitor.ingest or the composition root (what they compute is read from the
store through the foundation's table owners).
"""
