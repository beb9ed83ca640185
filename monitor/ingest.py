"""The ingest pipeline: validate, redact, hash, price, de-duplicate and store a batch.

Used by the HTTP API and by the CLI (``nlpmon ingest``, ``nlpmon demo``), so
every event that reaches ClickHouse passed through the same code.
Bad rows never cost good ones: each invalid row is answered with its index,
field and reason, and kept in ``rejected_events``; valid rows in the same
batch land.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field

from . import events
from .config import Config
from .pricing import PriceTable
from .redact import Redactor
from .storage import Store

REQUEST_COLUMNS = [
    "request_id", "ts", "service", "feature", "model", "provider", "prompt_version", "environment", "region",
    "language", "tenant", "status", "error_type", "http_status", "latency_ms", "ttft_ms", "input_tokens",
    "output_tokens", "cached_input_tokens", "cost_usd", "cost_source", "input_text", "output_text",
    "context_text", "text_truncated", "retrieval_hit", "grounded", "cache_hit", "safety_flagged",
    "pii_detected", "injection_detected", "user_id_hash", "session_id", "tags", "input_embedding", "ingested_at",
]
FEEDBACK_COLUMNS = ["feedback_id", "request_id", "ts", "kind", "value", "label", "source", "reviewer", "comment",
                    "ingested_at", "request_ts", "service", "feature", "model", "prompt_version", "environment",
                    "region", "request_status"]
# Copied from the request onto its feedback, so rollups attribute feedback without a join.
_REQUEST_CONTEXT = ("service", "feature", "model", "prompt_version", "environment", "region")
REJECTED_COLUMNS = ["rejected_id", "received_at", "kind", "batch_id", "row_index", "field", "reason", "raw",
                    "api_key_id"]
MAX_ERRORS_IN_RESPONSE = 1000
MAX_RAW_CHARS = 256_000


def half_md5(text: str) -> int:
    """ClickHouse's halfMD5: the first 8 bytes of the MD5 digest, big-endian."""
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big")


class Unparseable:
    """An NDJSON line that is not JSON; it becomes a rejected row, not a failed batch."""

    def __init__(self, text: str, reason: str):
        self.text = text
        self.reason = reason


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
    query = "SELECT min(value) FROM instance_settings WHERE key = 'user_id_salt'"
    found = store.scalar(query)
    if not found:
        store.insert("instance_settings", [["user_id_salt", secrets.token_hex(32), 0]], ["key", "value", "version"])
        # Read back rather than trust our own value: if two processes raced, both settle on the smallest.
        found = store.scalar(query)
    return found.encode()


class Ingestor:
    def __init__(self, store: Store, config: Config, clock, salt: bytes):
        self.store = store
        self.config = config
        self.clock = clock
        self.salt = salt
        self.redactor = Redactor(config.privacy.redact) if config.privacy.redact_pii else None
        self.prices = PriceTable(config.pricing)
        self._write_lock = threading.Lock()
        self.counters = {"requests": 0, "feedback": 0, "rejected": 0, "duplicates": 0}

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
        rejected: list[tuple[int, list[events.FieldError], object]] = []
        prepare = self._prepare_request if kind == "requests" else self._prepare_feedback
        for i, raw in enumerate(rows):
            if isinstance(raw, Unparseable):
                rejected.append((i, [events.FieldError("_row", raw.reason)], raw.text))
                continue
            row, errors, truncated = events.validate(kind, raw, limits, now)
            if errors:
                rejected.append((i, errors, raw))
                continue
            good.append(prepare(row, truncated, now))

        id_col = "request_id" if kind == "requests" else "feedback_id"
        with self._write_lock:
            fresh = self._drop_duplicates(kind, id_col, good)
            if kind == "feedback":
                self._attach_requests(fresh)
            self._insert(kind, fresh)
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

    # -- per row ----------------------------------------------------------------
    def _redact(self, text: str) -> tuple[str, bool]:
        return self.redactor.redact(text) if self.redactor else (text, False)

    def _prepare_request(self, row: dict, truncated: bool, now: dt.datetime) -> dict:
        pii = row["pii_detected"]
        for name in events.TEXT_FIELDS["requests"]:
            row[name], hit = self._redact(row[name])
            pii = pii or hit
        row["pii_detected"] = pii
        uid = row.pop("user_id")
        row["user_id_hash"] = hmac.new(self.salt, uid.encode(), hashlib.sha256).hexdigest()[:32] if uid else ""
        if row["cost_usd"] is None:
            cost = self.prices.cost(row["model"], row["ts"].date(), row["input_tokens"], row["output_tokens"],
                                    row["cached_input_tokens"])
            row["cost_usd"], row["cost_source"] = (0.0, "unpriced") if cost is None else (cost, "price_table")
        else:
            row["cost_source"] = "event"
        row["tags"] = row["tags"] or {}
        row["input_embedding"] = row["input_embedding"] or []
        row["text_truncated"] = truncated
        row["ingested_at"] = now
        return row

    def _prepare_feedback(self, row: dict, truncated: bool, now: dt.datetime) -> dict:
        row["comment"], _ = self._redact(row["comment"])
        if not row["feedback_id"]:
            # A stable id makes replays of id-less feedback idempotent too.
            key = "|".join(str(row[k]) for k in ("request_id", "kind", "source", "reviewer", "value", "label"))
            row["feedback_id"] = hashlib.sha256(f"{key}|{row['ts'].isoformat()}".encode()).hexdigest()[:32]
        row["ingested_at"] = now
        return row

    # -- storage -----------------------------------------------------------------
    def _drop_duplicates(self, kind: str, id_col: str, rows: list[dict]) -> list[dict]:
        """Rows whose id is neither earlier in the batch nor already stored.

        The raw tables would collapse replays anyway (ReplacingMergeTree), but the
        rollups fed from them at insert time would not, so replays stop here.
        """
        if not rows:
            return rows
        seen: set[str] = set()
        unique = []
        for r in rows:
            if r[id_col] not in seen:
                seen.add(r[id_col])
                unique.append(r)
        lo = min(r["ts"] for r in unique)
        hi = max(r["ts"] for r in unique)
        table = "requests" if kind == "requests" else "feedback"
        # Ids travel as 64-bit hashes (binding a thousand strings costs more than the
        # query); the exact ids that come back are compared, so a collision drops nothing.
        existing = {x[0] for x in self.store.query(
            f"SELECT {id_col} FROM {table} WHERE ts >= {{lo:DateTime64(3, 'UTC')}} AND ts <= {{hi:DateTime64(3, 'UTC')}} "
            f"AND halfMD5({id_col}) IN {{hashes:Array(UInt64)}}",
            {"lo": lo, "hi": hi, "hashes": [half_md5(i) for i in seen]})}
        return [r for r in unique if r[id_col] not in existing]

    def _attach_requests(self, rows: list[dict]) -> None:
        """Give each feedback row its request's time, dimensions and status.

        Feedback whose request is not stored (yet) keeps empty dimensions and no
        request_ts; the rollups count it as orphaned.
        """
        if not rows:
            return
        ids = {r["request_id"] for r in rows}
        found = {}
        for rec in self.store.query_dicts(
                "SELECT request_id, ts, status, " + ", ".join(_REQUEST_CONTEXT) + " FROM requests "
                "WHERE halfMD5(request_id) IN {hashes:Array(UInt64)} LIMIT 1 BY request_id",
                {"hashes": [half_md5(i) for i in ids]}):
            if rec["request_id"] in ids:
                found[rec["request_id"]] = rec
        for r in rows:
            rec = found.get(r["request_id"])
            r["request_ts"] = rec["ts"] if rec else None
            r["request_status"] = rec["status"] if rec else ""
            for d in _REQUEST_CONTEXT:
                r[d] = rec[d] if rec else ""

    def _insert(self, kind: str, rows: list[dict]) -> None:
        if not rows:
            return
        cols = REQUEST_COLUMNS if kind == "requests" else FEEDBACK_COLUMNS
        self.store.insert_columns(kind, [[r[c] for r in rows] for c in cols], cols)

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
        self.store.insert("rejected_events", out, REJECTED_COLUMNS)
