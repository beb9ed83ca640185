"""The one config object.

Loaded from a YAML file (``MONITOR_CONFIG``, default ``./monitor.yaml``) and then
overridden by ``MONITOR_<SECTION>_<KEY>`` environment variables. Every mistake
fails at start-up with the dotted key named, because a typo that silently
falls back to a default is found only when it matters.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.foundation.clock import utc
from monitor.foundation.events import REQUEST_FIELDS
from monitor.foundation.metrics import LABELS

ENV_PREFIX = "MONITOR_"
DEFAULT_PATH = "./monitor.yaml"


class ConfigError(ValueError):
    """A config key is unknown or has a bad value; the message names the key."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def parse_duration(value: Any) -> dt.timedelta:
    """'90s', '5m', '24h', '7d' or a number of seconds."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return dt.timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    raise ValueError(f"expected a duration such as '90s', '5m', '24h' or '7d', got {value!r}")


def parse_size(value: Any) -> int:
    """'16MiB', '1MB', '512KiB' or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    raise ValueError(f"expected a size such as '16MiB' or a number of bytes, got {value!r}")


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    threads: int = Field(8, ge=1, le=256)
    # The address people reach the pages at, for links in digests (and, when alerts.external_url is not
    # set apart, in alert notifications); empty: alerts.external_url.
    external_url: str = ""


DIGEST_KINDS = ("webhook", "slack", "email")  # receiver kinds a digest can go to


class DigestConfig(_Section):
    """A digest (dashboards/digest.py): the KPIs, movers, SLOs at risk, incidents, releases, cost and
    hallucination rates of ``period``, sent at ``schedule`` (cron, UTC) to ``receivers`` through the alert
    outbox, once per period. The period is the ``period`` before the schedule's time (a 7d digest at Monday
    08:00 covers the 7 days to Monday 08:00), against the one before it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    schedule: str = "0 8 * * mon"
    period: Literal["1d", "7d", "30d"] = "7d"
    receivers: list[str] = Field(min_length=1)
    services: list[str] = Field(default_factory=list)   # empty: every service
    features: list[str] = Field(default_factory=list)   # empty: every feature
    top: int = Field(3, ge=1, le=10)                    # movers shown each way

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a cron expression (minute hour day month weekday): {exc}") from None
        return value

    @property
    def span(self) -> dt.timedelta:
        return parse_duration(self.period)


class ClickHouseConfig(_Section):
    # chdb://<dir> is the embedded engine; http(s)://user:pass@host:8123/db a server.
    url: str = "chdb://./var/clickhouse"
    database: str = Field("nlpmon", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    connect_timeout_seconds: float = Field(5.0, gt=0)
    # The cluster (a name in the servers' remote_servers, or a macro such as '{cluster}') that
    # `nlpmon db upgrade` creates every table on, with Replicated engines; null: one node.
    # See docs/deploy.md.
    cluster: str | None = Field(None, pattern=r"^[A-Za-z0-9_.{}-]{1,128}$")
    # The embedded engine's memory (a server has its own settings; these are not sent to it). max_memory is
    # its max_server_memory_usage: a statement that would take the engine past it fails with a retryable
    # error (the API answers 503, a job retries) rather than the process growing. cache_memory caps each
    # cache the engine keeps between statements (marks, skip-index marks, primary keys, compiled
    # expressions, query conditions), which it otherwise sizes for a dedicated server (5 GiB each).
    max_memory: Size = 2 * 2**30
    cache_memory: Size = 64 * 2**20

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not re.match(r"^(chdb|https?)://.+", v):
            raise ValueError("must start with chdb://, http:// or https:// followed by a location")
        return v


class IngestConfig(_Section):
    max_body_bytes: Size = 32 * 2**20
    max_rows_per_batch: int = Field(10_000, gt=0)
    max_text_chars: int = Field(32_768, gt=0)
    # truncate: keep the first max_text_chars and set text_truncated; reject: reject the row.
    text_over_limit: Literal["truncate", "reject"] = "truncate"
    max_future_skew: Duration = dt.timedelta(minutes=5)


_TAG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Names a promoted tag may not take: the request event's fields, the labels of nlpmon's series, and the
# names Prometheus and the alert engine give labels of their own.
BUILTIN_LABELS = frozenset({f.name for f in REQUEST_FIELDS} | set(LABELS) | {
    "language_source", "value", "window", "metric", "alertname", "quantile", "le", "job", "instance"})


class SegmentsConfig(_Section):
    """Segments of the traffic. ``detect_language``: a request sent without ``language`` gets the language
    of its input_text (monitor.ingest.language), or ``und`` when the text cannot tell it; a detection under
    ``language_confidence`` (the model's probability) is ``und`` too, not a guess."""

    detect_language: bool = True
    language_confidence: float = Field(0.5, ge=0, le=1)
    # Tag keys promoted to segment dimensions (cohorts: plan, app_version...), counted in the segment
    # rollups beside language, region and tenant, under the cardinality budget (cardinality.limits.<key>).
    tags: list[str] = Field(default_factory=list)

    @field_validator("tags")
    @classmethod
    def _tag_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not _TAG_KEY.match(key):
                raise ValueError(f"{key!r} is not a tag key nlpmon can use as a label (letters, digits and _, "
                                 f"starting with a letter, at most 64 characters)")
            if key in BUILTIN_LABELS:
                raise ValueError(f"{key!r} collides with the built-in label {key!r}; tags promoted to dimensions "
                                 f"need names of their own (built-in: {', '.join(sorted(BUILTIN_LABELS))})")
        if len(set(keys)) != len(keys):
            raise ValueError(f"a key is listed twice: {keys}")
        return keys


# The metrics a release is judged on (jobs/release_verdict.py), and the kind of minimum effect each takes:
# rates in absolute points (0.005 is half a point), the others relative to the baseline (0.1 is 10%).
RELEASE_METRICS = {
    "error_rate": 0.005, "latency_p50_ms": 0.1, "latency_p95_ms": 0.1, "latency_p99_ms": 0.15, "ttft_p95_ms": 0.1,
    "thumbs_up_rate": 0.03, "task_success_rate": 0.03, "hallucination_rate": 0.02, "cost_per_request_usd": 0.1,
    "cost_per_successful_outcome_usd": 0.1, "output_tokens": 0.1, "output_drift": 0.0,
}
RELEASE_RATES = ("error_rate", "thumbs_up_rate", "task_success_rate", "hallucination_rate")
# The dimensions a release can be of: the hourly request rollup's columns, and promoted tags.
RELEASE_DIMENSIONS = ("model", "prompt_version", "environment", "region")


class ReleasesConfig(_Section):
    """Releases (jobs/releases.py): a change of one of ``dimensions`` for a service/feature, found when a value
    starts taking traffic or declared through POST /v1/releases, judged once each side has ``min_requests``
    and updated until ``judge_for`` after full rollout. Per metric ``better``/``worse``/``same`` at
    ``alpha`` over all the metrics of a release (Holm), with ``min_effect`` overriding the smallest change
    that matters (RELEASE_METRICS); a ``critical`` metric worse fails the release."""

    enabled: bool = True
    dimensions: list[str] = Field(default_factory=lambda: ["prompt_version", "model"])
    min_requests: int = Field(200, ge=20)
    judge_for: Duration = dt.timedelta(days=3)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    critical: list[str] = Field(default_factory=lambda: [
        "error_rate", "latency_p95_ms", "thumbs_up_rate", "task_success_rate", "hallucination_rate"])
    min_effect: dict[str, float] = Field(default_factory=dict)

    @field_validator("critical")
    @classmethod
    def _known_critical(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in RELEASE_METRICS:
                raise ValueError(f"{name!r} is not a metric releases are judged on ({', '.join(RELEASE_METRICS)})")
        return names

    @field_validator("min_effect")
    @classmethod
    def _known_effects(cls, effects: dict[str, float]) -> dict[str, float]:
        for name, value in effects.items():
            if name not in RELEASE_METRICS:
                raise ValueError(f"{name!r} is not a metric releases are judged on ({', '.join(RELEASE_METRICS)})")
            if value < 0:
                raise ValueError(f"{name}: a minimum effect is not negative")
        return effects

    def effect(self, metric: str) -> float:
        return self.min_effect.get(metric, RELEASE_METRICS[metric])


HALLUCINATION_JUDGE_PROMPT = """You check whether an AI assistant's answer is supported by the context it was given.

Question or request:
{input}

Context the assistant had:
{context}

The assistant's answer:
{output}

Reply with a JSON object only: {{"label": "hallucinated", "reason": "..."}} when the answer states something the
context does not support, {{"label": "grounded", "reason": "..."}} when everything it states is supported, or
{{"label": "unsure", "reason": "..."}} when you cannot tell. Keep the reason to one sentence."""
PROMPT_FIELDS = ("input", "context", "output")


class EvaluatorConfig(_Section):
    """An automated evaluator (jobs/evaluate.py): an LLM judge behind any OpenAI-compatible chat-completions
    ``endpoint``, asked ``prompt`` about the answers sampled at ``sample_rate`` (the review queue's hash, so the
    judge and the reviewers see overlapping items). Its labels are stored as ``feedback_kind`` feedback with
    source ``auto`` and reviewer ``name``. The key is read from the environment variable ``api_key_env``, never
    from this file."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    kind: Literal["llm_judge"] = "llm_judge"
    endpoint: str                              # base URL: {endpoint}/chat/completions
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    prompt: str = HALLUCINATION_JUDGE_PROMPT   # over {input}, {context}, {output}
    labels: list[str] = Field(default_factory=lambda: ["hallucinated", "grounded", "unsure"], min_length=2)
    feedback_kind: str = "hallucination"
    # For a kind measured by a value (task_success, thumbs: 1 or 0; rating: 1-5), each label's value.
    values: dict[str, float] = Field(default_factory=dict)
    sample_rate: float = Field(0.1, ge=0, le=1)
    services: list[str] = Field(default_factory=list)   # empty: every service
    features: list[str] = Field(default_factory=list)   # empty: every feature
    max_calls_per_hour: int = Field(600, ge=1)
    max_cost_usd_per_day: float = Field(5.0, gt=0)
    timeout: Duration = dt.timedelta(seconds=30)
    concurrency: int = Field(4, ge=1, le=64)
    retries: int = Field(3, ge=0, le=10)       # after the first attempt, on 429, 5xx, timeouts and refused connections
    max_tokens: int = Field(300, ge=16)
    min_kappa: float = Field(0.6, ge=-1, le=1)
    min_overlap: int = Field(30, ge=5)         # answers labelled by both the judge and reviewers to judge the judge
    failed_runs: int = Field(3, ge=1)          # runs in a row whose every call failed: EvaluatorFailing

    @field_validator("endpoint")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL (the base of /chat/completions)")
        return url.rstrip("/")

    @field_validator("prompt")
    @classmethod
    def _template(cls, prompt: str) -> str:
        import string
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a template: {exc} (write literal braces as {{{{ and }}}})") from None
        unknown = fields - set(PROMPT_FIELDS)
        if unknown:
            raise ValueError(f"unknown field {sorted(unknown)[0]!r}: a prompt may use {{input}}, {{context}}, {{output}}")
        if "output" not in fields:
            raise ValueError("must include {output}: the answer to judge")
        return prompt

    @model_validator(mode="after")
    def _labels_fit_kind(self) -> "EvaluatorConfig":
        from monitor.foundation.events import FEEDBACK_KINDS, HALLUCINATION_LABELS
        if self.feedback_kind not in FEEDBACK_KINDS:
            raise ValueError(f"feedback_kind: {self.feedback_kind!r} is not a feedback kind ({', '.join(FEEDBACK_KINDS)})")
        if self.feedback_kind == "hallucination" and not set(self.labels) <= set(HALLUCINATION_LABELS):
            raise ValueError(f"labels: hallucination feedback takes {', '.join(HALLUCINATION_LABELS)}; map other "
                             "label sets to another feedback_kind")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: must be unique")
        if self.feedback_kind in ("thumbs", "task_success", "rating"):
            allowed = (lambda v: 1 <= v <= 5) if self.feedback_kind == "rating" else (lambda v: v in (0, 1))
            for label in self.labels:
                if label not in self.values or not allowed(self.values[label]):
                    raise ValueError(f"values.{label}: {self.feedback_kind} feedback needs a value for every label "
                                     f"({'1 to 5' if self.feedback_kind == 'rating' else '1 or 0'})")
        elif self.feedback_kind == "comment":
            raise ValueError("feedback_kind: comment feedback holds no label; choose a kind labels or values fit")
        return self

    def prompt_version(self) -> str:
        """A changed prompt (or label set, or model) is a new version: the same request is judged again."""
        import hashlib
        key = "\x1f".join([self.prompt, self.model, *self.labels])
        return "p" + hashlib.sha256(key.encode()).hexdigest()[:10]


class OtlpConfig(_Section):
    """OpenTelemetry ingest (POST /v1/traces, /v1/logs, and OTLP/gRPC on ``grpc_port``): which span attributes
    name a request's feature, first present wins; a span with none of them takes its gen_ai.operation.name
    (chat, embeddings...)."""

    # OTLP/gRPC (TraceService, LogsService) on this port of server.host, beside the HTTP port; 0: not served.
    grpc_port: int = Field(4317, ge=0, le=65535)
    # PEM files: both for TLS, neither for plaintext (a Collector or a mesh sidecar may terminate TLS instead).
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = Field(None, validate_default=True)
    feature_attributes: list[str] = Field(default_factory=lambda: ["nlpmon.feature", "gen_ai.agent.name"])
    # A span without its texts waits this long for content log events (0s: ingest at once, texts on spans only).
    logs_wait: Duration = dt.timedelta(seconds=5)
    # gen_ai.evaluation.name -> feedback kind; evaluations of other names are counted and dropped.
    evaluation_kinds: dict[str, str] = Field(default_factory=lambda: {
        "hallucination": "hallucination", "task_success": "task_success", "relevance": "rating"})

    @field_validator("grpc_tls_key")
    @classmethod
    def _tls_pair(cls, key: str | None, info) -> str | None:
        cert = info.data.get("grpc_tls_cert")
        if cert and not key:
            raise ValueError("required when otlp.grpc_tls_cert is set: TLS needs both files")
        if key and not cert:
            raise ValueError("set, but otlp.grpc_tls_cert is not: TLS needs both files")
        return key


class RetentionConfig(_Section):
    days: int = Field(90, ge=1, le=3650)
    text_days: int = Field(30, ge=1, le=3650)


PiiKind = Literal["email", "phone", "card", "ip"]


class PrivacyConfig(_Section):
    redact_pii: bool = True
    redact: list[PiiKind] = Field(default_factory=lambda: ["email", "phone", "card", "ip"])
    # Empty means: generate one on first start and keep it in the store.
    user_id_salt: str = ""


class Price(_Section):
    model: str = Field(min_length=1)
    effective_from: dt.date = dt.date(2000, 1, 1)
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)


def _default_prices() -> list[Price]:
    # Illustrative list prices (USD per million tokens) for the models the demo uses.
    rows = [
        ("gpt-4o", "2024-08-06", 2.50, 10.00, 1.25),
        ("gpt-4o-mini", "2024-07-18", 0.15, 0.60, 0.075),
        ("claude-3-5-sonnet", "2024-10-22", 3.00, 15.00, 0.30),
        ("claude-3-5-haiku", "2024-11-04", 0.80, 4.00, 0.08),
        ("llama-3.1-8b", "2024-07-23", 0.05, 0.08, None),
    ]
    return [
        Price(model=m, effective_from=dt.date.fromisoformat(d), input_per_mtok=i, output_per_mtok=o, cached_input_per_mtok=c)
        for m, d, i, o, c in rows
    ]


class AuthConfig(_Section):
    # How long a looked-up key is trusted before the store is asked again (revocation delay).
    key_cache_seconds: float = Field(10.0, ge=0)
    # Dashboard sign-in: how long a session lasts, and whether its cookie is sent over HTTPS only
    # (set true behind TLS; false lets the loopback demo work over plain HTTP).
    session_lifetime: Duration = dt.timedelta(hours=12)
    cookie_secure: bool = False


class ScheduleConfig(_Section):
    """How often each scheduled task runs: one place for all of them (jobs.schedule)."""

    sli: Duration = dt.timedelta(minutes=1)
    slo: Duration = dt.timedelta(minutes=1)
    cost: Duration = dt.timedelta(minutes=5)
    # The rollup reconciliation: how often it compares rollups with the raw rows.
    reconcile: Duration = dt.timedelta(minutes=1)
    hallucination_sample: Duration = dt.timedelta(minutes=10)
    hallucination: Duration = dt.timedelta(hours=1)
    # The drift job wakes this often; a window is compared when a multiple of its own length has closed.
    drift: Duration = dt.timedelta(hours=1)
    grounding_proxy: Duration = dt.timedelta(hours=1)
    incident_kpis: Duration = dt.timedelta(hours=1)
    # Hidden regressions: a day is judged once it has ended (monitor.foundation.hidden_regressions).
    segment_regression: Duration = dt.timedelta(hours=1)
    # Releases: found, judged and updated as data arrives (jobs/releases.py).
    releases: Duration = dt.timedelta(minutes=15)
    # Automated evaluators (jobs/evaluate.py): sampled answers sent to each configured judge.
    evaluate: Duration = dt.timedelta(minutes=5)
    # Digests (dashboards/digest_task.py): how often their schedules are checked; each is sent once per period.
    digests: Duration = dt.timedelta(minutes=1)
    # Parked OpenTelemetry spans ingested with the content that came for them.
    otlp_join: Duration = dt.timedelta(seconds=5)
    # The alert engine: evaluate, dispatch, deliver (a run starts no send after this much real time).
    alerts: Duration = dt.timedelta(seconds=15)

    @model_validator(mode="after")
    def _positive(self) -> "ScheduleConfig":
        for name, value in self:
            if value <= dt.timedelta(0):
                raise ValueError(f"{name}: must be positive")
        return self


# Keys that named a task's interval before jobs.schedule held them all: still read (with a line in the log).
MOVED_TO_SCHEDULE = {("jobs", "sli_interval"): "sli", ("jobs", "slo_interval"): "slo",
                     ("jobs", "cost_interval"): "cost", ("jobs", "reconcile_interval"): "reconcile",
                     ("review", "sample_interval"): "hallucination_sample", ("review", "rate_interval"): "hallucination",
                     ("drift", "interval"): "drift", ("grounding", "interval"): "grounding_proxy",
                     ("alerts", "interval"): "alerts"}


class JobsConfig(_Section):
    # false on API replicas when one `nlpmon scheduler` process runs the jobs for all of them.
    enabled: bool = True
    # The scheduler lease in the store: one scheduler runs jobs at a time, the others wait; a
    # standby takes over within two of these after the active one stops renewing.
    lease: Duration = dt.timedelta(seconds=30)
    # On SIGTERM (or Ctrl-C): how long the runs in flight may finish before the process exits; then
    # the outbox is delivered once and the lease released.
    shutdown_grace: Duration = dt.timedelta(seconds=10)
    # After downtime, windows older than this are not caught up (use `nlpmon jobs run --from`).
    catchup_max: Duration = dt.timedelta(hours=24)
    # Each run recomputes windows this far back, so rows that arrive late are counted.
    recompute: Duration = dt.timedelta(minutes=10)
    # A window is computed once it has been closed this long (ingest lag).
    grace: Duration = dt.timedelta(seconds=30)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @field_validator("lease")
    @classmethod
    def _lease_positive(cls, v: dt.timedelta) -> dt.timedelta:
        if v < dt.timedelta(seconds=3):
            raise ValueError("must be at least 3s (it is renewed every third of itself)")
        return v
    # How many whole UTC days back the reconciliation compares (older days: `nlpmon rollups rebuild`).
    reconcile_horizon: Duration = dt.timedelta(days=2)


NegativeFeedback = Literal["thumbs_down", "task_failed", "hallucinated"]


class SuccessConfig(_Section):
    statuses: list[Literal["ok", "error", "timeout", "blocked", "cancelled"]] = Field(
        default_factory=lambda: ["ok"], min_length=1)
    negative_feedback: list[NegativeFeedback] = Field(
        default_factory=lambda: ["thumbs_down", "task_failed", "hallucinated"])


class OutcomesConfig(_Section):
    # A request is a successful outcome when its status is in statuses and none of
    # the negative feedback kinds was given for it.
    success: SuccessConfig = Field(default_factory=SuccessConfig)
    # How long feedback may trail its request and still change the outcome counts.
    feedback_delay: Duration = dt.timedelta(hours=24)


class SloConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    service: str = Field(min_length=1)
    feature: str | None = None
    objective: Decimal = Field(gt=0, lt=100)
    period: Duration = dt.timedelta(days=30)
    sli: Literal["availability", "latency"]
    threshold_ms: float | None = Field(None, gt=0)
    description: str = ""

    @field_validator("objective", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        # 99.9 read from YAML is a float; its shortest repr is the decimal the user wrote.
        return Decimal(repr(v)) if isinstance(v, float) else v

    @model_validator(mode="after")
    def _threshold(self) -> "SloConfig":
        from monitor.foundation.rollups import LATENCY_BUCKETS_MS, bucket_index
        if self.sli == "latency":
            if self.threshold_ms is None:
                raise ValueError("threshold_ms is required for a latency SLO")
            if bucket_index(self.threshold_ms) is None:
                raise ValueError(f"threshold_ms must be one of the latency histogram boundaries "
                                 f"{', '.join(str(b) for b in LATENCY_BUCKETS_MS)} (got {self.threshold_ms:g})")
        elif self.threshold_ms is not None:
            raise ValueError("threshold_ms applies only to a latency SLO")
        return self


class ReviewRate(_Section):
    service: str = Field(min_length=1)
    feature: str | None = None
    rate: float = Field(ge=0, le=1)


class ReviewConfig(_Section):
    # Share of answered requests sampled into the review queue, per (service, feature) per day.
    sample_rate: float = Field(0.02, ge=0, le=1)
    rates: list[ReviewRate] = Field(default_factory=list)
    # Each stratum gets at least this many samples a day, however low its traffic.
    min_per_day: int = Field(5, ge=0)
    lease: Duration = dt.timedelta(minutes=10)
    # The order /v1/review/next hands items out: oldest first, or highest grounding proxy first.
    prioritize: Literal["oldest", "ungrounded_proxy"] = "oldest"

    def rate_for(self, service: str, feature: str) -> float:
        best = None
        for r in self.rates:
            if r.service == service and r.feature in (None, feature):
                if best is None or (r.feature is not None and best.feature is None):
                    best = r
        return best.rate if best else self.sample_rate


class EmbeddingsConfig(_Section):
    # A local sentence-transformers model directory; empty means the packaged all-MiniLM-L6-v2.
    model_path: str = ""
    batch_size: int = Field(64, ge=1, le=4096)
    # Torch intra-op threads for encoding; 0 leaves torch's default.
    threads: int = Field(0, ge=0, le=256)
    # bfloat16 encodes under torch.autocast: 1.84x faster here, vectors within 1e-4 cosine of float32
    # (bench/drift.py). auto: bfloat16 when the CPU has native bf16 (AVX512_BF16 or AMX), else float32.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # Encode in a child process (jobs/encoder.py) that ends after worker_idle_seconds without an encode, so
    # the model's ~500 MiB is held only while the drift, grounding and releases jobs run; false keeps the
    # model in the serving process for good (no load of a few seconds on a run's first encode).
    worker: bool = True
    worker_idle_seconds: float = Field(60.0, ge=0)


def _drift_every(v: dt.timedelta | None) -> dt.timedelta | None:
    if v is not None and (v < dt.timedelta(hours=1) or v.total_seconds() % 3600):
        raise ValueError("must be a whole number of hours, at least 1h")
    return v


UtcDatetime = Annotated[dt.datetime, AfterValidator(utc)]  # a time written without an offset is UTC


class DriftReference(_Section):
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime

    @model_validator(mode="after")
    def _order(self) -> "DriftReference":
        if self.to <= self.from_:
            raise ValueError("'to' must be after 'from'")
        return self


DriftWindow = Literal["1h", "6h", "1d", "7d"]


class DriftTarget(_Section):
    """Per (service, feature) settings; anything left out comes from the drift section."""

    service: str = Field(min_length=1)
    feature: str | None = None
    enabled: bool = True
    windows: list[DriftWindow] | None = None
    every: Duration | None = None
    reference: DriftReference | None = None
    reference_days: int | None = Field(None, ge=1, le=90)

    @field_validator("every")
    @classmethod
    def _every(cls, v):
        return _drift_every(v)


class DriftConfig(_Section):
    @field_validator("every")
    @classmethod
    def _every(cls, v):
        return _drift_every(v)

    enabled: bool = True
    windows: list[DriftWindow] = Field(default_factory=lambda: ["1h", "1d"], min_length=1)
    # Cadence: a window is compared at every multiple of this (e.g. 1h for a trailing day each hour);
    # unset, at every multiple of the window's own length.
    every: Duration | None = None
    # Pinned baseline for every target; otherwise the reference trails the current window by reference_days.
    reference: DriftReference | None = None
    reference_days: int = Field(7, ge=1, le=90)
    sample_size: int = Field(1000, ge=10, le=20_000)
    min_samples: int = Field(100, ge=10)
    # Bootstrap quantile each method's score must exceed (Evidently's bootstrap mode).
    quantile: float = Field(0.95, gt=0.5, lt=1)
    # The combined decision: how many of the three methods must agree.
    min_methods: int = Field(2, ge=1, le=3)
    explain_examples: int = Field(10, ge=1, le=100)
    # The drift job catches up at most this far back (each window is an Evidently run).
    catchup_max: Duration = dt.timedelta(hours=6)
    targets: list[DriftTarget] = Field(default_factory=list)

    def target_for(self, service: str, feature: str) -> DriftTarget | None:
        best = None
        for t in self.targets:
            if t.service == service and t.feature in (None, feature):
                if best is None or (t.feature is not None and best.feature is None):
                    best = t
        return best


class GroundingConfig(_Section):
    """The automatic grounding proxy (a proxy, not a label: see jobs/grounding.py)."""

    enabled: bool = True
    # An answer sentence whose best cosine similarity to any context sentence is below this is ungrounded.
    threshold: float = Field(0.5, gt=0, lt=1)
    sample_size: int = Field(200, ge=1, le=10_000)


TAG_LIMIT = 50


class CardinalityLimits(_Section):
    """Distinct values a dimension may take per service and UTC day in the rollups, metrics and pages."""

    feature: int = Field(100, ge=1)
    model: int = Field(50, ge=1)
    prompt_version: int = Field(200, ge=1)
    environment: int = Field(20, ge=1)
    region: int = Field(50, ge=1)
    language: int = Field(60, ge=1)   # ISO 639-1 has 184 codes; a product rarely sees more than a few dozen
    tenant: int = Field(200, ge=1)
    # Each tag promoted by segments.tags: its key, e.g. {plan: 10}; a promoted tag not listed gets TAG_LIMIT.
    tags: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)

    def of(self, dimension: str) -> int:
        """The limit of a built-in dimension, or of a promoted tag by its key."""
        if dimension in type(self).model_fields and dimension != "tags":
            return getattr(self, dimension)
        return self.tags.get(dimension, TAG_LIMIT)


class CardinalityConfig(_Section):
    """The cardinality budget: one application putting an id into a label must not take the monitor down.

    Beyond a limit, a new value of the day counts as ``overflow_value`` in the rollups, metrics, jobs
    and pages; the raw row keeps the real value (``dimension_overflow``), and nlpmon says so (a
    counter on /metrics, the ``cardinality_overflow_requests`` metric and its alert, a line on the
    overview).
    """

    enabled: bool = True
    # Distinct services per UTC day, over all.
    services: int = Field(100, ge=1)
    limits: CardinalityLimits = Field(default_factory=CardinalityLimits)
    overflow_value: str = Field("__overflow__", min_length=1, max_length=64)


class MetricsConfig(_Section):
    # When set, /metrics is also served without a key on this port (bind it to a private interface).
    port: int | None = Field(None, ge=1, le=65535)
    host: str = "127.0.0.1"


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


# -- alerts -----------------------------------------------------------------------
Matcher = Annotated[str, Field(pattern=r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*.*$")]


class AlertRule(_Section):
    """A threshold rule over one metric (see alerts/rules.py).

    ``source``: ``live`` computes the metric at each evaluation from the rollups over the last
    ``window`` (request and feedback SLIs only: they change by the second); ``points`` reads the
    metric's series in metric_points over ``over``, aggregated; ``auto`` (default) is live where it can be.
    """

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    metric: str = Field(min_length=1)
    source: Literal["auto", "live", "points"] = "auto"
    window: str = "5m"              # live: the sliding window; points: which windows of the metric to read
    selector: dict[str, str] = Field(default_factory=dict)
    by: list[str] = Field(default_factory=list)
    over: Duration = dt.timedelta(minutes=5)
    aggregation: Literal["last", "avg", "max", "min"] = "last"
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float
    for_: Duration = Field(dt.timedelta(0), alias="for")
    keep_firing_for: Duration = dt.timedelta(0)
    # Fewer requests than this in the window: too few to tell, so no data (the alert keeps its state, see nodata).
    min_requests: int = Field(0, ge=0)
    # Points rules: compare the value with the same series over this longer window just before it (the
    # newest such point ending at least one rule window before the value's); value and threshold become
    # the ratio, so "cost per outcome twice yesterday's" needs no dollar figure per feature.
    baseline: str | None = None
    # Live rules on error_rate or availability: at least this many failed requests in the window, so
    # isolated failures at low traffic do not page while a burst does (the SRE workbook's low-traffic advice).
    min_failures: int = Field(0, ge=0)
    # Rules on the hallucination rate or its bounds: at least this many reviewed answers in the window. A
    # Wilson bound from two or three reviews still swings past any threshold (1 of 3 has a lower bound of 6%).
    min_reviews: int = Field(0, ge=0)
    nodata: Literal["keep", "resolve", "alert"] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _labels(self) -> "AlertRule":
        if "severity" not in self.labels:
            raise ValueError(f"rule {self.name}: labels.severity is required (e.g. page, ticket, info)")
        return self


class Route(_Section):
    receiver: str | None = None
    matchers: list[Matcher] = Field(default_factory=list)
    continue_: bool = Field(False, alias="continue")
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    routes: list["Route"] = Field(default_factory=list)


class Receiver(_Section):
    """A named receiver and its one kind: ``{name: team, slack: {url: ...}}``.

    The kinds and their settings belong to the alert engine (alerts/notify, one
    module per kind), which the foundation may not import: here a receiver is a
    name plus exactly one other key, the kind, whose value is a mapping. The
    engine validates that mapping with its kind's model at start-up
    (``alerts.notify.receivers``) and names the key of any mistake.
    """

    model_config = ConfigDict(extra="allow")
    # The extra keys: the kind, mapped to its settings.
    __pydantic_extra__: dict[str, dict[str, Any]] = Field(init=False)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")

    @model_validator(mode="after")
    def _one(self) -> "Receiver":
        if len(self.model_extra or {}) != 1:
            raise ValueError("a receiver has exactly one kind, such as webhook, slack, pagerduty, email or alertmanager")
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.model_extra))

    @property
    def settings(self) -> dict[str, Any]:
        return self.model_extra[self.kind]


class InhibitRule(_Section):
    source_matchers: list[Matcher] = Field(min_length=1)
    target_matchers: list[Matcher] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)


class DeliveryConfig(_Section):
    backoff_initial: Duration = dt.timedelta(seconds=2)
    backoff_max: Duration = dt.timedelta(minutes=5)
    give_up_after: Duration = dt.timedelta(hours=24)
    # Sends in flight at once (a thread pool); one receiver uses at most half while others wait (alerts.delivery).
    concurrency: int = Field(16, ge=1, le=256)


class TrafficStoppedOverride(_Section):
    service: str = Field(min_length=1)
    enabled: bool = True
    after: Duration | None = None


class SystemAlertsConfig(_Section):
    """The alerts nlpmon raises about data that stops and about itself (see docs/runbooks.md)."""

    enabled: bool = True
    # TrafficStopped: a service that averaged more than min_per_minute over the hour before
    # `after` and sent nothing since.
    traffic_stopped_after: Duration = dt.timedelta(minutes=10)
    traffic_stopped_min_per_minute: float = Field(1.0, gt=0)
    traffic_stopped: list[TrafficStoppedOverride] = Field(default_factory=list)
    # JobStalled: a job with no successful run for this many of its intervals.
    job_stalled_intervals: int = Field(3, ge=2)
    # IngestRejectRateHigh: rejected rows / all rows over 15 minutes, with at least reject_min rejected.
    ingest_reject_rate: float = Field(0.1, gt=0, le=1)
    ingest_reject_min: int = Field(20, ge=1)
    # NotificationsUndeliverable: a notification failed for good, or still pending after this many attempts.
    undeliverable_attempts: int = Field(3, ge=1)
    # Watchdog: always firing; sent only to this receiver (an outside dead-man's switch), every watchdog_interval.
    watchdog_receiver: str | None = None
    watchdog_interval: Duration = dt.timedelta(minutes=5)

    def traffic_after(self, service: str) -> dt.timedelta | None:
        """How long the service may be quiet before TrafficStopped (None: not watched)."""
        for o in self.traffic_stopped:
            if o.service == service:
                return (o.after or self.traffic_stopped_after) if o.enabled else None
        return self.traffic_stopped_after


class AlertsConfig(_Section):
    enabled: bool = True
    external_url: str = "http://127.0.0.1:8080"
    default_rules: bool = True
    slo_rules: bool = True
    rule_files: list[str] = Field(default_factory=list)
    rules: list[AlertRule] = Field(default_factory=list)
    nodata: Literal["keep", "resolve", "alert"] = "keep"
    route: Route = Field(default_factory=lambda: Route(receiver="default", group_by=["alertname", "service"]))
    receivers: list[Receiver] = Field(default_factory=list)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    system: SystemAlertsConfig = Field(default_factory=SystemAlertsConfig)

    @model_validator(mode="after")
    def _receivers_exist(self) -> "AlertsConfig":
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receivers: names must be unique")

        def walk(route: Route, where: str) -> None:
            if route.receiver is not None and route.receiver not in names and (names or route.receiver != "default"):
                raise ValueError(f"{where}.receiver: no receiver named {route.receiver!r} "
                                 f"(receivers: {', '.join(names) or 'none'})")
            for i, child in enumerate(route.routes):
                walk(child, f"{where}.routes[{i}]")
        walk(self.route, "route")
        watchdog = self.system.watchdog_receiver
        if watchdog is not None and watchdog not in names:
            raise ValueError(f"system.watchdog_receiver: no receiver named {watchdog!r} "
                             f"(receivers: {', '.join(names) or 'none'})")
        return self


class Config(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    clickhouse: ClickHouseConfig = Field(default_factory=ClickHouseConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    otlp: OtlpConfig = Field(default_factory=OtlpConfig)
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig)
    releases: ReleasesConfig = Field(default_factory=ReleasesConfig)
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    digests: list[DigestConfig] = Field(default_factory=list)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    pricing: list[Price] = Field(default_factory=_default_prices)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    outcomes: OutcomesConfig = Field(default_factory=OutcomesConfig)
    slos: list[SloConfig] = Field(default_factory=list)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    cardinality: CardinalityConfig = Field(default_factory=CardinalityConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _digest_receivers(self) -> "Config":
        kinds = {r.name: r.kind for r in self.alerts.receivers}
        names = [d.name for d in self.digests]
        for i, d in enumerate(self.digests):
            if names.count(d.name) > 1:
                raise ValueError(f"digests: the name {d.name!r} is used twice")
            for name in d.receivers:
                if name not in kinds:
                    raise ValueError(f"digests[{i}].receivers: no receiver named {name!r} in alerts.receivers "
                                     f"({', '.join(kinds) or 'none'})")
                if kinds[name] not in DIGEST_KINDS:
                    raise ValueError(f"digests[{i}].receivers: {name!r} is a {kinds[name]} receiver; a digest goes "
                                     f"to {', '.join(DIGEST_KINDS)} receivers")
        return self

    def external_url(self) -> str:
        """Where links point: server.external_url, else alerts.external_url."""
        return (self.server.external_url or self.alerts.external_url).rstrip("/")

    @model_validator(mode="after")
    def _evaluator_names(self) -> "Config":
        names = [e.name for e in self.evaluators]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"evaluators: the name {name!r} is used twice (a judge's labels carry its name)")
        return self

    @model_validator(mode="after")
    def _release_dimensions(self) -> "Config":
        for name in self.releases.dimensions:
            if name not in RELEASE_DIMENSIONS and name not in self.segments.tags:
                raise ValueError(f"releases.dimensions: {name!r} is neither a request dimension releases can be of "
                                 f"({', '.join(RELEASE_DIMENSIONS)}) nor a tag promoted by segments.tags")
        return self

    @model_validator(mode="after")
    def _limits_of_promoted_tags(self) -> "Config":
        for key in self.cardinality.limits.tags:
            if key not in self.segments.tags:
                raise ValueError(f"cardinality.limits.tags.{key}: {key!r} is not a tag promoted by segments.tags "
                                 f"({', '.join(self.segments.tags) or 'none are'})")
        return self


def _scalar_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Env-var name -> dotted path, for every key an environment variable may set."""
    out: dict[str, tuple[str, ...]] = {}
    for name, field in model.model_fields.items():
        path = prefix + (name,)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_scalar_paths(ann, path))
        elif name not in ("pricing", "slos", "rates"):
            out[ENV_PREFIX + "_".join(path).upper()] = path
    return out


def _env_value(raw: str, path: tuple[str, ...]) -> Any:
    if path == ("privacy", "redact"):
        return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


def format_error(err: dict, prefix: str = "") -> str:
    """One pydantic error as ``config key 'a.b': message``; ``prefix`` is the key of what was validated."""
    key = ".".join(([prefix] if prefix else []) + [str(p) for p in err["loc"]])
    if err["type"] == "extra_forbidden":
        return f"config key '{key}': unknown key"
    if err["type"] == "missing":
        return f"config key '{key}': required"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if not key and re.match(r"^[\w.]+: ", msg):  # a check across sections names its key first: "a.b: why"
        key, msg = msg.split(": ", 1)
        return f"config key '{key}': {msg}"
    return f"config key '{key}': {msg}" + ("" if isinstance(got, (dict, list)) else f" (got {got!r})")


def _move_to_schedule(data: dict[str, Any]) -> None:
    """Old interval keys (MOVED_TO_SCHEDULE) of one layer (the file, or the overrides) into its jobs.schedule,
    each with a deprecation line in the log; a value the same layer sets in jobs.schedule itself wins."""
    for (section, key), task in MOVED_TO_SCHEDULE.items():
        node = data.get(section)
        if not isinstance(node, dict) or key not in node:
            continue
        value = node.pop(key)
        jobs = data.setdefault("jobs", {})
        schedule = jobs.setdefault("schedule", {}) if isinstance(jobs, dict) else None
        if isinstance(schedule, dict):
            schedule.setdefault(task, value)
        logging.getLogger(__name__).warning("config key '%s.%s' is deprecated: use 'jobs.schedule.%s'",
                                            section, key, task)


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Read the YAML file, apply env overrides, validate. Raises ConfigError naming the key.

    ``overrides`` is a nested dict applied last (tests and the CLI use it).
    """
    env = dict(os.environ if env is None else env)
    explicit = path is not None or "MONITOR_CONFIG" in env
    path = Path(path if path is not None else env.get("MONITOR_CONFIG", DEFAULT_PATH))
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
        data = loaded
    elif explicit:
        raise ConfigError(f"config file {path}: does not exist")

    _move_to_schedule(data)
    known = {**_scalar_paths(Config), **{ENV_PREFIX + "_".join(old).upper(): ("jobs", "schedule", task)
                                         for old, task in MOVED_TO_SCHEDULE.items()}}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == "MONITOR_CONFIG":
            continue
        if name not in known:
            raise ConfigError(f"environment variable {name}: unknown config key")
        if known[name][:2] == ("jobs", "schedule") and name != ENV_PREFIX + "_".join(known[name]).upper():
            logging.getLogger(__name__).warning("environment variable %s is deprecated: use %s", name,
                                                ENV_PREFIX + "_".join(known[name]).upper())
        section, *rest = known[name]
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{section}': must be a mapping")
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = _env_value(raw, known[name])

    overrides = {k: dict(v) if isinstance(v, dict) else v for k, v in (overrides or {}).items()}
    _move_to_schedule(overrides)
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            merged = {**data[section], **values}
            if isinstance(values.get("schedule"), dict) and isinstance(data[section].get("schedule"), dict):
                merged["schedule"] = {**data[section]["schedule"], **values["schedule"]}
            data[section] = merged
        else:
            data[section] = values
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(format_error(e) for e in exc.errors())) from None
