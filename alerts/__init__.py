"""The alert engine (a capability): rules over ``metric_points``, routing, silences and receivers.

rules, evaluator (states and transitions), dispatch (routes, groups, inhibition,
the notification log), delivery (the durable outbox), notify (one module per
receiver kind), api (GET /v1/alerts, silences), engine (one evaluation run).

Layer rule: imports the foundation and this package; never jobs, dashboards,
monitor.ingest or the composition root.
"""
