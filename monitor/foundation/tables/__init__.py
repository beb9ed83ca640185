"""One owner per table: every statement against a table is a named function in its module here.

Callers (ingest, jobs, alerts, dashboards, the CLI) never write SQL for a table
themselves; they call these. So a column is renamed in one place, a query that
needs the id-hash skip index uses it everywhere, and a reader finds every way a
table is used in one file. A statement that reads one table to write another
(a rollup rebuild) lives with the table it writes.

Foundation layer: imports only the rest of the foundation.
"""
