"""Event contract v1: the fields of request and feedback events and their validation.

``docs/events.md`` documents every field here; a test keeps the two in step.
Validation is a plain loop over a field table rather than a model library,
because every rejected row must say which field was wrong and why in words a
client developer understands, and it runs for every row on the ingest path.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Callable

STATUSES = ("ok", "error", "timeout", "blocked", "cancelled")
FEEDBACK_KINDS = ("thumbs", "rating", "task_success", "hallucination", "safety", "comment")
FEEDBACK_SOURCES = ("user", "reviewer", "auto")
HALLUCINATION_LABELS = ("hallucinated", "grounded", "unsure")

MAX_ID = 128
MAX_DIMENSION = 128
MAX_TOKENS = 10_000_000
MAX_LATENCY_MS = 86_400_000.0
MAX_TAGS = 64
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 1024
MAX_EMBEDDING_DIM = 4096


class FieldError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # id | dimension | text | int | number | bool | timestamp | enum | tags | embedding
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    maximum: float | None = None


REQUEST_FIELDS: tuple[Field, ...] = (
    Field("request_id", "id", required=True),
    Field("ts", "timestamp", required=True),
    Field("service", "dimension", required=True),
    Field("feature", "dimension", required=True),
    Field("model", "dimension", required=True),
    Field("provider", "dimension", default=""),
    Field("prompt_version", "dimension", default=""),
    Field("environment", "dimension", default="production"),
    Field("region", "dimension", default=""),
    Field("language", "dimension", default=""),
    Field("tenant", "dimension", default=""),
    Field("status", "enum", required=True, choices=STATUSES),
    Field("error_type", "dimension", default=""),
    Field("http_status", "int", default=0, maximum=999),
    Field("latency_ms", "number", required=True, maximum=MAX_LATENCY_MS),
    Field("ttft_ms", "number", default=None, maximum=MAX_LATENCY_MS),
    Field("input_tokens", "int", default=0, maximum=MAX_TOKENS),
    Field("output_tokens", "int", default=0, maximum=MAX_TOKENS),
    Field("cached_input_tokens", "int", default=0, maximum=MAX_TOKENS),
    Field("cost_usd", "number", default=None, maximum=1_000_000.0),
    Field("input_text", "text", default=""),
    Field("output_text", "text", default=""),
    Field("context_text", "text", default=""),
    Field("retrieval_hit", "bool", default=None),
    Field("grounded", "bool", default=None),
    Field("cache_hit", "bool", default=False),
    Field("safety_flagged", "bool", default=False),
    Field("pii_detected", "bool", default=False),
    Field("injection_detected", "bool", default=False),
    Field("user_id", "id", default=""),
    Field("session_id", "id", default=""),
    Field("tags", "tags", default=None),
    Field("input_embedding", "embedding", default=None),
)

FEEDBACK_FIELDS: tuple[Field, ...] = (
    Field("feedback_id", "id", default=""),
    Field("request_id", "id", required=True),
    Field("ts", "timestamp", required=True),
    Field("kind", "enum", required=True, choices=FEEDBACK_KINDS),
    Field("value", "number", default=None, maximum=1e9),
    Field("label", "dimension", default=""),
    Field("source", "enum", default="user", choices=FEEDBACK_SOURCES),
    Field("reviewer", "id", default=""),
    Field("comment", "text", default=""),
)

FIELDS = {"requests": REQUEST_FIELDS, "feedback": FEEDBACK_FIELDS}
FIELD_NAMES = {k: frozenset(f.name for f in v) for k, v in FIELDS.items()}
TEXT_FIELDS = {"requests": ("input_text", "output_text", "context_text"), "feedback": ("comment",)}


@dataclass
class Limits:
    max_text_chars: int
    truncate_text: bool
    max_future: dt.timedelta
    max_age: dt.timedelta


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_timestamp(value: Any) -> dt.datetime:
    """ISO 8601 (naive means UTC) or Unix epoch seconds (milliseconds when above 1e11)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            ts = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("must be an ISO 8601 timestamp such as 2026-11-24T09:30:00Z or epoch seconds") from None
        return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)
    if _is_number(value):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        seconds = value / 1000 if value > 1e11 else value
        try:
            return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError("epoch value out of range") from None
    raise ValueError("must be an ISO 8601 string or epoch seconds")


def _check(f: Field, v: Any, limits: Limits, now: dt.datetime, flags: dict) -> Any:
    k = f.kind
    if k in ("id", "dimension"):
        if not isinstance(v, str):
            raise ValueError(f"must be a string, got {type(v).__name__}")
        if f.required and not v.strip():
            raise ValueError("must not be empty")
        limit = MAX_ID if k == "id" else MAX_DIMENSION
        if len(v) > limit:
            raise ValueError(f"longer than {limit} characters ({len(v)})")
        return v
    if k == "text":
        if not isinstance(v, str):
            raise ValueError(f"must be a string, got {type(v).__name__}")
        if len(v) > limits.max_text_chars:
            if not limits.truncate_text:
                raise ValueError(f"longer than {limits.max_text_chars} characters ({len(v)})")
            flags["truncated"] = True
            return v[: limits.max_text_chars]
        return v
    if k == "enum":
        if not isinstance(v, str):
            raise ValueError(f"must be a string, got {type(v).__name__}")
        if v not in f.choices:
            raise ValueError(f"unknown value {v[:40]!r}; expected one of {', '.join(f.choices)}")
        return v
    if k == "int":
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"must be an integer, got {type(v).__name__}")
        if v < 0:
            raise ValueError(f"must not be negative ({v})")
        if f.maximum is not None and v > f.maximum:
            raise ValueError(f"above the limit of {int(f.maximum)} ({v})")
        return v
    if k == "number":
        if not _is_number(v):
            raise ValueError(f"must be a number, got {type(v).__name__}")
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        if v < 0:
            raise ValueError(f"must not be negative ({v})")
        if f.maximum is not None and v > f.maximum:
            raise ValueError(f"above the limit of {f.maximum:g} ({v})")
        return float(v)
    if k == "bool":
        if not isinstance(v, bool):
            raise ValueError(f"must be true or false, got {type(v).__name__}")
        return v
    if k == "timestamp":
        ts = parse_timestamp(v)
        if ts > now + limits.max_future:
            raise ValueError(f"is in the future ({ts.isoformat()}; server time {now.isoformat()})")
        if ts < now - limits.max_age:
            raise ValueError(f"is older than the retention period ({ts.isoformat()})")
        return ts
    if k == "tags":
        if not isinstance(v, dict):
            raise ValueError(f"must be an object of string values, got {type(v).__name__}")
        if len(v) > MAX_TAGS:
            raise ValueError(f"more than {MAX_TAGS} tags ({len(v)})")
        out = {}
        for tk, tv in v.items():
            if len(tk) > MAX_TAG_KEY:
                raise ValueError(f"tag key longer than {MAX_TAG_KEY} characters")
            if isinstance(tv, bool):
                tv = "true" if tv else "false"
            elif _is_number(tv) and math.isfinite(tv):
                tv = str(tv)
            if not isinstance(tv, str):
                raise ValueError(f"tag {tk[:40]!r} must be a string, number or boolean")
            if len(tv) > MAX_TAG_VALUE:
                raise ValueError(f"tag {tk[:40]!r} longer than {MAX_TAG_VALUE} characters")
            out[tk] = tv
        return out
    if k == "embedding":
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty array of numbers")
        if len(v) > MAX_EMBEDDING_DIM:
            raise ValueError(f"more than {MAX_EMBEDDING_DIM} dimensions ({len(v)})")
        for x in v:
            if not _is_number(x) or not math.isfinite(x):
                raise ValueError("must contain only finite numbers")
        return [float(x) for x in v]
    raise AssertionError(f"unknown field kind {k}")


def _cross_checks(kind: str, row: dict) -> None:
    if kind == "requests":
        ttft = row["ttft_ms"]
        if ttft is not None and ttft > row["latency_ms"]:
            raise FieldError("ttft_ms", f"greater than latency_ms ({ttft:g} > {row['latency_ms']:g})")
        if row["cached_input_tokens"] > row["input_tokens"]:
            raise FieldError("cached_input_tokens", "greater than input_tokens")
        return
    k, value, label = row["kind"], row["value"], row["label"]
    if k in ("thumbs", "task_success"):
        if value not in (0.0, 1.0):
            raise FieldError("value", f"{k} needs value 1 (good) or 0 (bad)")
    elif k == "rating":
        if value is None or not 1 <= value <= 5:
            raise FieldError("value", "rating needs a value from 1 to 5")
    elif k == "hallucination":
        if label not in HALLUCINATION_LABELS:
            raise FieldError("label", f"hallucination needs label {', '.join(HALLUCINATION_LABELS)}")
    elif k == "safety":
        if not label:
            raise FieldError("label", "safety feedback needs a label")
    elif k == "comment" and not row["comment"].strip():
        raise FieldError("comment", "comment feedback needs a non-empty comment")


def validate(kind: str, raw: Any, limits: Limits, now: dt.datetime) -> tuple[dict | None, list[FieldError], bool]:
    """(row, errors, truncated). ``row`` has every field (defaults filled) when ``errors`` is empty."""
    if not isinstance(raw, dict):
        return None, [FieldError("_row", f"must be a JSON object, got {_json_type(raw)}")], False
    fields = FIELDS[kind]
    errors: list[FieldError] = []
    flags: dict = {}
    row: dict = {}
    for f in fields:
        v = raw.get(f.name)
        if v is None:
            if f.required:
                errors.append(FieldError(f.name, "required field is missing" if f.name not in raw else "must not be null"))
            row[f.name] = f.default
            continue
        try:
            row[f.name] = _check(f, v, limits, now, flags)
        except ValueError as exc:
            errors.append(FieldError(f.name, str(exc)))
    known = FIELD_NAMES[kind]
    if not known.issuperset(raw):
        for name in raw:
            if name not in known:
                errors.append(FieldError(str(name)[:64], "unknown field"))
    if not errors:
        try:
            _cross_checks(kind, row)
        except FieldError as exc:
            errors.append(exc)
    return (None if errors else row), errors, bool(flags.get("truncated"))


def _json_type(v: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


def field_names(kind: str) -> list[str]:
    return [f.name for f in FIELDS[kind]]


Validator = Callable[[str, Any, Limits, dt.datetime], tuple]
