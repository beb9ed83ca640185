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
from typing import Any

from monitor.foundation.clock import parse_time

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


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {_json_type(v)}")
    return v


def _bounded_string(limit: int, required: bool):
    def check(v, ctx):
        _string(v)
        if required and not v.strip():
            raise ValueError("must not be empty")
        if len(v) > limit:
            raise ValueError(f"longer than {limit} characters ({len(v)})")
        return v
    return check


def limited_text(v: Any, limits: Limits) -> tuple[str, bool]:
    """(the text within ``limits.max_text_chars``, whether it was cut); ValueError when it may not be."""
    _string(v)
    if len(v) > limits.max_text_chars:
        if not limits.truncate_text:
            raise ValueError(f"longer than {limits.max_text_chars} characters ({len(v)})")
        return v[: limits.max_text_chars], True
    return v, False


def _text(v, ctx):
    text, cut = limited_text(v, ctx[0])
    if cut:
        ctx[2]["truncated"] = True
    return text


def _enum(choices: tuple[str, ...]):
    allowed = frozenset(choices)

    def check(v, ctx):
        _string(v)
        if v not in allowed:
            raise ValueError(f"unknown value {v[:40]!r}; expected one of {', '.join(choices)}")
        return v
    return check


def _int(maximum: float | None):
    def check(v, ctx):
        if type(v) is not int:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"must be a finite integer, got {v}")
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ValueError(f"must be an integer, got {_json_type(v)}")
        if v < 0:
            raise ValueError(f"must not be negative ({v})")
        if maximum is not None and v > maximum:
            raise ValueError(f"above the limit of {int(maximum)} ({v})")
        return v
    return check


def _number(maximum: float | None):
    def check(v, ctx):
        if not _is_number(v):
            raise ValueError(f"must be a number, got {_json_type(v)}")
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        if v < 0:
            raise ValueError(f"must not be negative ({v})")
        if maximum is not None and v > maximum:
            raise ValueError(f"above the limit of {maximum:g} ({v})")
        return float(v)
    return check


def _bool(v, ctx):
    if v is not True and v is not False:
        raise ValueError(f"must be true or false, got {_json_type(v)}")
    return v


def _timestamp(v, ctx):
    limits, now, _ = ctx
    ts = parse_time(v, epoch_strings=False)
    if ts > now + limits.max_future:
        raise ValueError(f"is in the future ({ts.isoformat()}; server time {now.isoformat()})")
    if ts < now - limits.max_age:
        raise ValueError(f"is older than the retention period ({ts.isoformat()})")
    return ts


def _tags(v, ctx):
    if not isinstance(v, dict):
        raise ValueError(f"must be an object of string values, got {_json_type(v)}")
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


def _embedding(v, ctx):
    if not isinstance(v, list) or not v:
        raise ValueError("must be a non-empty array of numbers")
    if len(v) > MAX_EMBEDDING_DIM:
        raise ValueError(f"more than {MAX_EMBEDDING_DIM} dimensions ({len(v)})")
    for x in v:
        if not _is_number(x) or not math.isfinite(x):
            raise ValueError("must contain only finite numbers")
    return [float(x) for x in v]


def _checker(f: Field):
    k = f.kind
    if k == "id":
        return _bounded_string(MAX_ID, f.required)
    if k == "dimension":
        return _bounded_string(MAX_DIMENSION, f.required)
    if k == "enum":
        return _enum(f.choices)
    if k == "int":
        return _int(f.maximum)
    if k == "number":
        return _number(f.maximum)
    return {"text": _text, "bool": _bool, "timestamp": _timestamp, "tags": _tags, "embedding": _embedding}[k]


# Per kind: (name, required, default, check) with the check chosen once, not per value.
_PLANS = {kind: tuple((f.name, f.required, f.default, _checker(f)) for f in fields) for kind, fields in FIELDS.items()}


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
    errors: list[FieldError] = []
    flags: dict = {}
    ctx = (limits, now, flags)
    row: dict = {}
    get = raw.get
    for name, required, default, check in _PLANS[kind]:
        v = get(name)
        if v is None:
            if required:
                errors.append(FieldError(name, "required field is missing" if name not in raw else "must not be null"))
            row[name] = default
            continue
        try:
            row[name] = check(v, ctx)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))
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

