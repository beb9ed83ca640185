"""The foundation: what two or more capabilities share, and nothing else.

config (the one config object), clock (injected time, the one time parser),
storage (the one Store), migrate (schema), events (event contract v1), metrics
(the metric contract: names, labels, windows, Point), rollups (the rollup SQL),
stats, filters (the one filter builder), incident_window, http (ApiError, query
parameters), auth (API keys, the scope decorator), matchers, and ``tables``:
one owner module per table.

Layer rule: a foundation module imports only the foundation (and ``migrations``).
Never monitor.ingest, jobs, alerts, dashboards or the composition root.
"""
