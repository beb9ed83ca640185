"""A model call's span and its content log events, ingested as one request whatever order they arrive in.

Instrumentations send message content either on the span or as log events on
/v1/logs, exported by another batch processor, so a span's texts may come
seconds before or after it. A span that carries its texts is ingested at once.
One without them is ingested at once when its content events are already
stored, else parked (in ``otlp_parts``, so accepted is never lost) for
``otlp.logs_wait``; the ``otlp_join`` job then ingests it with whatever content
arrived. Content that comes for a request already stored is not kept (requests are
immutable once stored): when it would have given the request a text, it is counted
(``nlpmon_otlp_late_content_total``) and the reason said in the log once a minute at most;
raise ``otlp.logs_wait`` for an exporter that sends logs late. Ids come from the trace and span ids, so a
replayed span or a run of the job after a crash lands once.

Nothing waits in clear: a span is validated, its user id hashed and its texts cut
and redacted by the pipeline (:meth:`Ingestor.sanitized`) before it is parked, and
content texts likewise (:meth:`Ingestor.sanitized_texts`); the pipeline takes the
parked parts back without hashing or redacting them again.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid

from monitor.foundation.tables import job_runs, otlp_parts, requests
from monitor.foundation.tables.job_runs import RunResult
from monitor.ingest import genai
from monitor.ingest.pipeline import Ingestor, IngestResult, Mapped, Sanitized, merge_text, user_id_salt

TEXTS = ("input_text", "output_text")
LATE_SAID_EVERY = dt.timedelta(minutes=1)
log = logging.getLogger(__name__)


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
        self._late_said_at: dt.datetime | None = None  # late content is logged at most once a minute

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
    def spans(self, spans: list[tuple[str, str, Mapped]], api_key_id: str = "") -> IngestResult:
        """(trace_id, span_id, request row) of model-call spans: ingested now or parked. Returns the
        IngestResult of those ingested now (parked ones count as accepted); its errors' indexes are in ``spans``."""
        now = self.clock.now()
        stored = self._contents([(t, s) for t, s, row in spans if _without_texts(row)])
        ready, order, parked = [], [], []
        for i, (t, s, row) in enumerate(spans):
            if _without_texts(row):
                clean, errors = self.ingestor.sanitized(row)
                if errors:  # rejected now, so the exporter hears of it in this answer (partial_success)
                    row = Mapped(None, row.source, errors=errors)
                elif (t, s) in stored or self.wait <= dt.timedelta(0):
                    row = Sanitized(_merged(clean.row, stored.get((t, s), [])))
                else:
                    parked.append((t, s, "span", "", clean.row, "parked", now))
                    continue
            ready.append(row)
            order.append(i)
        otlp_parts.write(self.store, parked)
        result = self.ingestor.ingest("requests", ready, api_key_id=api_key_id)
        _renumber(result, order)
        result.accepted += len(parked)
        return result

    def contents(self, records: list[tuple[str, str, int, Mapped]], api_key_id: str = "") -> IngestResult:
        """(trace_id, span_id, time, texts) of content log records: their texts, sanitized, kept for their span
        (of one export, the newest of each text per span). Returns the IngestResult of the records rejected
        (kept in rejected_events like any rejected request); its errors' indexes are in ``records``."""
        now = self.clock.now()
        kept: dict[tuple[str, str], dict] = {}
        senders: dict[tuple[str, str], int] = {}  # records that brought texts, per span
        rejected, order = [], []
        for i in sorted(range(len(records)), key=lambda i: records[i][2]):  # oldest first: the newest wins
            t, s, at, row = records[i]
            texts, errors = self.ingestor.sanitized_texts(row.row) if row.row is not None else ({}, row.errors)
            if errors:
                rejected.append(Mapped(None, row.source, errors=row.named(errors)))
                order.append(i)
            elif texts:
                kept.setdefault((t, s), {}).update(texts, at=at)
                senders[(t, s)] = senders.get((t, s), 0) + 1
        stored = self._stored(kept)
        late = sum(senders[key] for key, missing in stored.items() if missing & kept[key].keys())
        if late:
            self._said_late(late, now)
        otlp_parts.write(self.store, [(t, s, "content", uuid.uuid4().hex, texts, "", now)
                                      for (t, s), texts in kept.items() if (t, s) not in stored])
        result = self.ingestor.ingest("requests", rejected, api_key_id=api_key_id) if rejected else IngestResult()
        _renumber(result, order)
        return result

    def _stored(self, kept: dict[tuple[str, str], dict]) -> dict[tuple[str, str], set[str]]:
        """Of the spans these texts are for, those already stored as requests, with the texts each is without:
        a stored request never changes, so what comes for it now is not kept."""
        ids = {genai.request_id(bytes.fromhex(t), bytes.fromhex(s)): (t, s) for t, s in kept}
        return {ids[request_id]: missing for request_id, missing in requests.missing_texts(self.store, ids).items()}

    def _said_late(self, records: int, now: dt.datetime) -> None:
        """Content records that would have given a stored request a text: counted (/metrics,
        nlpmon_otlp_late_content_total) and said in the log at most once a minute, whatever their number."""
        counters = self.ingestor.counters
        counters["otlp_late_content"] += records
        if self._late_said_at is not None and now - self._late_said_at < LATE_SAID_EVERY:
            return
        self._late_said_at = now
        if self.wait <= dt.timedelta(0):
            why = "otlp.logs_wait is 0s, so spans are stored at once and their texts come from the spans alone"
        else:
            why = (f"they came more than otlp.logs_wait ({self.wait.total_seconds():g}s) after their span; if the "
                   f"logs exporter sends later than the traces exporter, raise otlp.logs_wait above that delay")
        log.warning("%d OpenTelemetry content log records came after their span was stored as a request (%d since "
                    "start, nlpmon_otlp_late_content_total), so their texts are not in it: %s "
                    "(docs/opentelemetry.md, late content; said at most once a minute)",
                    records, counters["otlp_late_content"], why)

    # -- the job -----------------------------------------------------------------------------
    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> RunResult:
        now = now or self.clock.now()
        result = RunResult(self.name, now, now, run_id=uuid.uuid4())
        with job_runs.recorded(self.store, result, now):
            due = otlp_parts.parked_before(self.store, now - self.wait)
            stored = self._contents([(t, s) for t, s, _, _ in due])
            events = [self._joined(ev, stored.get((t, s), [])) for t, s, _, ev in due]
            if events:
                self.ingestor.ingest("requests", events)
                # Marked done after the ingest: a crash in between ingests them again, and the ids drop that.
                otlp_parts.write(self.store, [(t, s, "span", "", ev, "done", at) for t, s, at, ev in due])
            result.rows = len(events)
            result.details = {"ingested": len(events)}
        return result

    def _joined(self, parked: dict, contents: list[dict]) -> Sanitized | dict:
        if "user_id_hash" not in parked:  # parked by a version that parked spans as they came
            clean, errors = self.ingestor.sanitized(parked)
            if errors:
                return parked  # for the pipeline to reject and keep
            parked = clean.row
        return Sanitized(_merged(parked, contents))

    def _contents(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[dict]]:
        """The content kept for these spans; texts kept as they came, by a version that did not sanitize them
        first ({field: str}), sanitized now."""
        out = otlp_parts.contents(self.store, keys)
        for kept in out.values():
            for content in kept:
                plain = {k: v for k, v in content.items() if k in TEXTS and isinstance(v, str)}
                if plain:
                    for name in plain:
                        del content[name]  # one over the limit in reject mode is dropped, never used in clear
                    content.update(self.ingestor.sanitized_texts(plain)[0])
        return out


def _without_texts(row: Mapped) -> bool:
    """A valid span without texts: it waits for its content events."""
    return row.row is not None and not _has_texts(row.row)


def _has_texts(event: dict) -> bool:
    return bool(event.get("input_text") or event.get("output_text"))


def _renumber(result: IngestResult, order: list[int]) -> None:
    for e in result.errors:
        e["index"] = order[e["index"]]


def _merged(event: dict, contents: list[dict]) -> dict:
    """A sanitized request with the sanitized texts of its content events, in the order the events happened
    (``at``): the newest user message is the question, the first choice the answer; a text on the span wins."""
    out = dict(event)
    ordered = sorted(contents, key=lambda c: c.get("at", 0))
    question = next((c for c in reversed(ordered) if c.get("input_text")), None)
    answer = next((c for c in ordered if c.get("output_text")), None)
    for name, content in (("input_text", question), ("output_text", answer)):
        if content is not None and not out.get(name):
            merge_text(out, name, content[name])
    return out
