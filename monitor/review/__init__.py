"""Review (a capability): the queue of sampled answers that people label for hallucinations.

sampling (the ``hallucination_sample`` job: deterministic hash sampling into the queue),
leases (an item is one reviewer's at a time, across API instances), queue (the next item,
a label stored, today's progress: what the API and the /review page share), api
(GET /v1/review/next, POST /v1/review/<request_id>). The reviewed rates are a metric job's
(jobs/hallucination.py); the statements on the queue's tables, the table owner's
(monitor/foundation/tables/review.py).

Layer rule: imports the foundation and this package; the read side may use ``queue``.
"""
