"""Ingest (a capability): validate, redact, hash, price, de-duplicate and store events.

pipeline (the one ingest pipeline), api (POST /v1/requests, /v1/feedback and the
lookups of what was stored), redact, pricing.

Layer rule: imports the foundation and this package; never jobs, alerts,
dashboards or the composition root.
"""
