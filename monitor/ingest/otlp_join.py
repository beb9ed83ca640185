"""A model call's span and its content log events, ingested as one request whatever order they arrive in.

Instrumentations send message content either on the span or as log events on
/v1/logs, exported by another batch processor, so a span's texts may come
seconds before or after it. A span that carries its texts is ingested at once.
One without them is ingested at once when its content events are already
stored, else parked (in ``otlp_parts``, so accepted is never lost) for
``otlp.logs_wait``; the ``otlp_join`` job then ingests it with whatever content
arrived. Content later than that is dropped (requests are immutable once stored):
raise ``otlp.logs_wait`` for an exporter that sends logs late. Ids come from the trace and span ids, so a
replayed span or a run of the job after a crash lands once.
"""
from __future__ import annotations

import datetime as dt
import uuid

from monitor.foundation import events
from monitor.foundation.tables import job_runs, otlp_parts
from monitor.foundation.tables.job_runs import RunResult
from monitor.ingest.pipeline import Ingestor, user_id_salt


class OtlpJoin:
    name = "otlp_join"
    description = "ingest parked OpenTelemetry spans with the content log events that arrived for them"
    show_progress = False
    start_offset = dt.timedelta(0)

    def __init__(self, store, config, clock, ingestor=None, interval: dt.timedelta = dt.timedelta(seconds=5)):
        self.store = store
        self.config = config
        self.clock = clock
        self._ingestor = ingestor
        self.interval = interval

    @property
    def ingestor(self):
        # The scheduler's own, built on first use: the salt lives in the store, which may be down at start.
        if self._ingestor is None:
            self._ingestor = Ingestor(self.store, self.config, self.clock,
                                      user_id_salt(self.store, self.config, self.clock))
        return self._ingestor

    @property
    def wait(self) -> dt.timedelta:
        return self.config.otlp.logs_wait

    # -- the front doors ---------------------------------------------------------------------
    def spans(self, spans: list[tuple[str, str, dict]], api_key_id: str = ""):
        """(trace_id, span_id, request event) of model-call spans: ingested now or parked. Returns the
        IngestResult of those ingested now (parked ones count as accepted)."""
        now = self.clock.now()
        keys = [(t, s) for t, s, ev in spans if not _has_texts(ev)]
        stored = otlp_parts.contents(self.store, keys)
        ready, parked = [], []
        limits = self.ingestor.limits()
        for t, s, ev in spans:
            # A span that would be rejected goes to the pipeline now, so the exporter hears of it in this
            # answer (partial_success) and the row is kept with the other rejected rows.
            now_ready = _has_texts(ev) or (t, s) in stored or self.wait <= dt.timedelta(0)
            if now_ready or events.validate("requests", ev, limits, now)[1]:
                ready.append(_merged(ev, stored.get((t, s), [])))
            else:
                parked.append((t, s, "span", "", ev, "parked", now))
        otlp_parts.write(self.store, parked)
        result = self.ingestor.ingest("requests", ready, api_key_id=api_key_id)
        result.accepted += len(parked)
        return result, ready

    def contents(self, parts: list[tuple[str, str, dict]]) -> None:
        """(trace_id, span_id, texts) from content log events: kept for their span."""
        if not parts:
            return
        now = self.clock.now()
        otlp_parts.write(self.store, [(t, s, "content", uuid.uuid4().hex, texts, "", now) for t, s, texts in parts])

    # -- the job -----------------------------------------------------------------------------
    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> RunResult:
        now = now or self.clock.now()
        result = RunResult(self.name, now, now, run_id=uuid.uuid4())
        with job_runs.recorded(self.store, result, now):
            due = otlp_parts.parked_before(self.store, now - self.wait)
            stored = otlp_parts.contents(self.store, [(t, s) for t, s, _, _ in due])
            events = [_merged(ev, stored.get((t, s), [])) for t, s, _, ev in due]
            if events:
                self.ingestor.ingest("requests", events)
                # Marked done after the ingest: a crash in between ingests them again, and the ids drop that.
                otlp_parts.write(self.store, [(t, s, "span", "", ev, "done", at) for t, s, at, ev in due])
            result.rows = len(events)
            result.details = {"ingested": len(events)}
        return result


def _has_texts(event: dict) -> bool:
    return bool(event.get("input_text") or event.get("output_text"))


def _merged(event: dict, contents: list[dict]) -> dict:
    """The event with the texts of its content events, in the order the events happened (``at``): the
    newest user message is the question, the first choice the answer; a text on the span itself wins."""
    out = dict(event)
    ordered = sorted(contents, key=lambda c: c.get("at", 0))
    questions = [c["input_text"] for c in ordered if c.get("input_text")]
    answers = [c["output_text"] for c in ordered if c.get("output_text")]
    if questions and not out.get("input_text"):
        out["input_text"] = questions[-1]
    if answers and not out.get("output_text"):
        out["output_text"] = answers[0]
    return out
