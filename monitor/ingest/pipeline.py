"""The ingest pipeline: validate, redact, hash, price, de-duplicate and store a batch.

Used by the HTTP API and by the CLI (``nlpmon ingest``, ``nlpmon demo``), so
every event that reaches ClickHouse passed through the same code.
Bad rows never cost good ones: each invalid row is answered with its index,
field and reason, and kept in ``rejected_events``; valid rows in the same
batch land.

A row is an event as sent (a dict) or one of: :class:`Unparseable` (a line that
is not JSON), :class:`Mapped` (an OTLP record mapped to an event: its problems
name the record's attributes) and :class:`Sanitized` (a request already redacted
and hashed by :meth:`Ingestor.sanitized` while it waited for the rest of it).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from typing import Callable

import orjson

from monitor.foundation import events
from monitor.foundation.clock import iso_utc
from monitor.foundation.config import Config
from monitor.foundation.storage import Store
from monitor.foundation.tables import feedback, requests, settings
from monitor.foundation.tables._raw import RAW_WRITES
from monitor.foundation.tables import rejected as rejected_events
from monitor.ingest.cardinality import CardinalityBudget
from monitor.ingest.language import SENT, UND, UNDETERMINED, LanguageDetector, sent_language
from monitor.ingest.pricing import PriceTable
from monitor.ingest.redact import Redactor

MAX_ERRORS_IN_RESPONSE = 1000
MAX_RAW_CHARS = 256_000


class Unparseable:
    """An NDJSON line that is not JSON; it becomes a rejected row, not a failed batch."""

    def __init__(self, text: str, reason: str):
        self.text = text
        self.reason = reason


@dataclass
class Mapped:
    """A row mapped from another format (an OTLP span or log record), whose problems are the sender's to fix
    and so name the sender's fields: ``origin`` maps a row field to the attribute it came from. Problems the
    mapping itself found come in ``errors`` (``row`` is then None). A rejected one is kept in rejected_events
    as ``source()`` returns it, the record as it was sent (built only for the rejected)."""

    row: dict | None
    source: Callable[[], object]
    origin: dict[str, str] = field(default_factory=dict)
    errors: list[events.FieldError] = field(default_factory=list)

    def named(self, errors: list[events.FieldError]) -> list[events.FieldError]:
        return [events.FieldError(self.origin.get(e.field, e.field), e.reason) for e in errors]


# What a sanitized request holds beyond the event contract: fields the server fills when it sanitizes.
SANITIZED_FIELDS = ("user_id_hash", "text_truncated")


@dataclass
class Sanitized:
    """A request validated, its texts cut to the limit and redacted and its user id hashed
    (:meth:`Ingestor.sanitized`), as it may wait outside the raw tables (``otlp_parts``) for the rest of it.
    ``row`` is plain JSON: the event's fields, ``user_id_hash`` for ``user_id``, and ``text_truncated``.
    :meth:`Ingestor.ingest` validates it again (it may have been stored) but neither redacts nor hashes it
    again, so a text redacted once keeps its ``pii_detected`` and a user id is never hashed twice."""

    row: dict


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
               "errors": self.errors[:MAX_ERRORS_IN_RESPONSE]}
        if len(self.errors) > MAX_ERRORS_IN_RESPONSE:
            out["errors_truncated"] = True
        return out

    def add(self, other: "IngestResult") -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.errors.extend(other.errors)


def user_id_salt(store: Store, config: Config, clock) -> bytes:
    """The configured salt, or one generated on first start and kept in the store."""
    if config.privacy.user_id_salt:
        return config.privacy.user_id_salt.encode()
    return settings.get_or_create(store, "user_id_salt").encode()


class Ingestor:
    def __init__(self, store: Store, config: Config, clock, salt: bytes):
        self.store = store
        self.config = config
        self.clock = clock
        self.salt = salt
        self.redactor = Redactor(config.privacy.redact) if config.privacy.redact_pii else None
        self.prices = PriceTable(config.pricing)
        self.budget = CardinalityBudget(store, config)
        self.languages = (LanguageDetector(config.segments.language_confidence) if config.segments.detect_language
                          else None)
        self.counters = {"requests": 0, "feedback": 0, "rejected": 0, "duplicates": 0, "otlp_spans_ignored": 0,
                         "otlp_late_content": 0}

    def limits(self) -> events.Limits:
        return events.Limits(
            max_text_chars=self.config.ingest.max_text_chars,
            truncate_text=self.config.ingest.text_over_limit == "truncate",
            max_future=self.config.ingest.max_future_skew,
            max_age=dt.timedelta(days=self.config.retention.days),
        )

    # -- public ---------------------------------------------------------------
    def ingest(self, kind: str, rows: list, api_key_id: str = "") -> IngestResult:
        if kind not in events.FIELDS:
            raise ValueError(f"kind must be requests or feedback, got {kind!r}")
        now = self.clock.now()
        limits = self.limits()
        result = IngestResult()
        good: list[dict] = []
        sent: list[bytes] = []  # each good row as the client sent it, canonical: its share of the token
        rejected: list[tuple[int, list[events.FieldError], object]] = []
        prepare = self._prepare_request if kind == "requests" else self._prepare_feedback
        for i, raw in enumerate(rows):
            row, errors = self._checked(kind, raw, limits, now)
            if errors:
                rejected.append((i, errors, _as_kept(raw)))
                continue
            sent.append(_canonical(_as_sent(raw)))
            good.append(prepare(row, now))
        if kind == "requests":
            self.budget.apply(good)

        id_col = "request_id" if kind == "requests" else "feedback_id"
        content = {}
        for row, raw in zip(good, sent):
            content.setdefault(row[id_col], raw)
        with RAW_WRITES:
            fresh = self._drop_duplicates(kind, id_col, good)
            if kind == "feedback":
                self._attach_requests(fresh)
            self._insert(kind, id_col, fresh, content)
            self._store_rejected(kind, rejected, now, api_key_id)
        result.accepted = len(good)
        result.duplicates = len(good) - len(fresh)
        result.rejected = len(rejected)
        for i, errors, _ in rejected:
            for e in errors:
                result.errors.append({"index": i, "field": e.field, "reason": e.reason})
        self.counters[kind] += len(fresh)
        self.counters["rejected"] += len(rejected)
        self.counters["duplicates"] += result.duplicates
        return result

    def sanitized(self, raw: dict | Mapped) -> tuple[Sanitized | None, list[events.FieldError]]:
        """A request as it may wait outside the raw tables (otlp_parts) before :meth:`ingest` takes it: what
        ingest would do to it but pricing and storing, done now, so nothing in clear waits anywhere. None and
        the errors ingest would reject it with when it is not valid."""
        row, errors = self._checked("requests", raw, self.limits(), self.clock.now())
        if errors:
            return None, errors
        row["ts"] = iso_utc(row["ts"])
        return Sanitized(row), []

    def sanitized_texts(self, texts: dict[str, str]) -> tuple[dict[str, dict], list[events.FieldError]]:
        """Texts of a request that arrive apart from it (OTLP content log events), cut to the limit and redacted
        as the request's own would be, to wait for it: ``{field: {"text", "pii", "truncated"}}``
        (:func:`merge_text` puts one in the request); the errors of those over the limit in reject mode."""
        limits = self.limits()
        out, errors = {}, []
        for name, text in texts.items():
            try:
                text, cut = events.limited_text(text, limits)
            except ValueError as exc:
                errors.append(events.FieldError(name, str(exc)))
                continue
            text, hit = self._redact(text)
            out[name] = {"text": text, "pii": hit, "truncated": cut}
        return out, errors

    # -- per row ----------------------------------------------------------------
    def _checked(self, kind: str, raw, limits: events.Limits, now: dt.datetime) -> tuple[dict | None, list]:
        """The row validated and sanitized (texts cut and redacted, the user id hashed), or its errors."""
        if isinstance(raw, Unparseable):
            return None, [events.FieldError("_row", raw.reason)]
        if isinstance(raw, Mapped):
            if raw.errors:
                return None, raw.errors
            row, errors = self._checked(kind, raw.row, limits, now)
            return row, raw.named(errors)
        if isinstance(raw, Sanitized):
            return self._restored(kind, raw.row, limits, now)
        row, errors, truncated = events.validate(kind, raw, limits, now)
        if errors:
            return None, errors
        return (self._sanitize_request if kind == "requests" else self._sanitize_feedback)(row, truncated), []

    def _restored(self, kind: str, sanitized: dict, limits: events.Limits, now: dt.datetime):
        """A sanitized request validated again (its fields came back from JSON) and nothing redone."""
        fields = {k: v for k, v in sanitized.items() if k not in SANITIZED_FIELDS}
        row, errors, _ = events.validate(kind, fields, limits, now)
        if errors:
            return None, errors
        del row["user_id"]
        row.update({k: sanitized[k] for k in SANITIZED_FIELDS})
        return row, []

    def _redact(self, text: str) -> tuple[str, bool]:
        return self.redactor.redact(text) if self.redactor else (text, False)

    def _sanitize_request(self, row: dict, truncated: bool) -> dict:
        pii = row["pii_detected"]
        for name in events.TEXT_FIELDS["requests"]:
            row[name], hit = self._redact(row[name])
            pii = pii or hit
        row["pii_detected"] = pii
        uid = row.pop("user_id")
        row["user_id_hash"] = hmac.new(self.salt, uid.encode(), hashlib.sha256).hexdigest()[:32] if uid else ""
        row["text_truncated"] = truncated
        return row

    def _sanitize_feedback(self, row: dict, truncated: bool) -> dict:
        row["comment"], _ = self._redact(row["comment"])
        return row

    def _prepare_request(self, row: dict, now: dt.datetime) -> dict:
        if row["cost_usd"] is None:
            cost = self.prices.cost(row["model"], row["ts"].date(), row["input_tokens"], row["output_tokens"],
                                    row["cached_input_tokens"])
            row["cost_usd"], row["cost_source"] = (0.0, "unpriced") if cost is None else (cost, "price_table")
        else:
            row["cost_source"] = "event"
        row["language"], row["language_source"] = self._language(row)
        row["tags"] = row["tags"] or {}
        row["segment_tags"] = {k: row["tags"][k] for k in self.config.segments.tags if row["tags"].get(k)}
        row["input_embedding"] = row["input_embedding"] or []
        row["ingested_at"] = now
        return row

    def _language(self, row: dict) -> tuple[str, str]:
        """The language as sent, else as detected from the input (already redacted: the detector drops the
        redaction marks), else ``und``. Here, not when a request is sanitized, because an OTLP request's
        input may arrive after its span (otlp_join) and is only whole now."""
        if row["language"]:
            return sent_language(row["language"]), SENT
        if self.languages is None:
            return UND, UNDETERMINED
        return self.languages.detect(row["input_text"])

    def _prepare_feedback(self, row: dict, now: dt.datetime) -> dict:
        if not row["feedback_id"]:
            # A stable id makes replays of id-less feedback idempotent too.
            key = "|".join(str(row[k]) for k in ("request_id", "kind", "source", "reviewer", "value", "label"))
            row["feedback_id"] = hashlib.sha256(f"{key}|{row['ts'].isoformat()}".encode()).hexdigest()[:32]
        row["ingested_at"] = now
        return row

    # -- storage -----------------------------------------------------------------
    def _drop_duplicates(self, kind: str, id_col: str, rows: list[dict]) -> list[dict]:
        """Rows whose id is neither earlier in the batch nor already stored: the first arrival wins.

        The id alone is the key, whatever the replay's ts or other fields: the raw tables would not
        collapse a replay with another ts (their sort keys hold the time), and the rollups fed from
        them at insert time would count it again, so replays stop here.
        """
        if not rows:
            return rows
        seen: set[str] = set()
        unique = []
        for r in rows:
            if r[id_col] not in seen:
                seen.add(r[id_col])
                unique.append(r)
        existing = _TABLES[kind].existing_ids(self.store, seen)
        return [r for r in unique if r[id_col] not in existing]

    def _insert(self, kind: str, id_col: str, rows: list[dict], content: dict[str, bytes]) -> None:
        """One insert per partition, each with a token made of what the client sent for its rows.

        The id check above orders senders within this process only. Two processes (API replicas
        behind a load balancer) that receive the same batch at once both find its ids absent and
        both insert: the same rows make the same token, so ClickHouse keeps one block, in the raw
        table and in every rollup. Per partition, because a retry that finds part of a batch stored
        (one day's part landed, the next day's not yet) sends the rest, which must carry the token
        that rest had. Fields the server fills (ingested_at, prices, the user hash, attribution) are
        not in the token: they may differ between processes for the same event.
        """
        table = _TABLES[kind]
        parts: dict[str, list[dict]] = {}
        for r in rows:
            parts.setdefault(table.partition_of(r), []).append(r)
        for part, group in parts.items():
            digest = hashlib.sha256(b"\n".join(content[r[id_col]] for r in group)).hexdigest()
            table.insert(self.store, group, token=f"{kind}:{part}:{digest}")

    def _attach_requests(self, rows: list[dict]) -> None:
        """Give each feedback row its request's time, dimensions and status.

        Feedback whose request is not stored (yet) keeps empty dimensions and no
        request_ts; the rollups count it as orphaned until the ``reconcile`` job attributes it,
        the first run after its request arrives.
        """
        found = requests.context_of(self.store, {r["request_id"] for r in rows})
        for r in rows:
            rec = found.get(r["request_id"])
            r["request_ts"] = rec["ts"] if rec else None
            r["request_status"] = rec["status"] if rec else ""
            for d, empty in requests.CONTEXT.items():
                r[d] = rec[d] if rec else empty

    def _store_rejected(self, kind: str, rejected: list, now: dt.datetime, api_key_id: str) -> None:
        if not rejected:
            return
        batch_id = uuid.uuid4().hex
        out = []
        for i, errors, raw in rejected:
            text = raw if isinstance(raw, str) else json.dumps(raw, default=str, ensure_ascii=False)
            text, _ = self._redact(text[:MAX_RAW_CHARS])
            out.append([uuid.uuid4(), now, kind, batch_id, i, errors[0].field,
                        "; ".join(f"{e.field}: {e.reason}" for e in errors), text, api_key_id])
        rejected_events.insert(self.store, out)


_TABLES = {"requests": requests, "feedback": feedback}


def merge_text(request: dict, name: str, text: dict) -> None:
    """Put a text of :meth:`Ingestor.sanitized_texts` into a sanitized request (``Sanitized.row``)."""
    request[name] = text["text"]
    request["pii_detected"] = request["pii_detected"] or text["pii"]
    request["text_truncated"] = request["text_truncated"] or text["truncated"]


def _as_sent(raw):
    """What the client sent for a good row: what the token of its insert is made of."""
    return raw.row if isinstance(raw, (Mapped, Sanitized)) else raw


def _as_kept(raw):
    """What rejected_events keeps of a rejected row: the row as it was sent."""
    if isinstance(raw, Unparseable):
        return raw.text
    if isinstance(raw, Mapped):
        return raw.source()
    return _as_sent(raw)


def _canonical(raw) -> bytes:
    """A row as the client sent it, in one byte form whichever process parses it (keys sorted)."""
    return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
