"""Alert rules: the shipped defaults, the config's and rule files', and SLO burn-rate rules.

Every rule is validated when the service starts; a mistake names the rule and
the field (``alerts.rules[HighErrorRate].threshold: ...``).

Burn-rate rules follow the SRE workbook's multi-window, multi-burn-rate
recipe. For a 30-day SLO: page when 2% of the budget burns in 1h (14.4x, with
5m as the short window) or 5% in 6h (6x, 30m); ticket when 10% burns in 1d
(3x, 2h) or in 3d (1x, 6h). Both windows of a tier must exceed its threshold;
as in Sloth, each SLO has one page and one ticket alert, each firing on either
of its tiers. For
another period P the budget shares stay and the threshold becomes
share x P / long window, so a 30-day SLO gets exactly the workbook's numbers.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import yaml
from pydantic import ValidationError

from monitor.foundation.config import AlertRule, Config, ConfigError, parse_duration
from monitor.foundation.metrics import LABELS, LIVE_FEEDBACK_METRICS, LIVE_REQUEST_METRICS, METRICS, WINDOWS
from monitor.foundation.rollups import segment_dimensions

DEFAULTS = Path(__file__).with_name("default_rules.yaml")

# Two alerts per SLO, as Sloth generates them: a page when either fast tier burns, a ticket when either
# slow tier does; each tier is (budget share, long window, short window). One alert per severity, not
# per tier, so an incident that crosses two tiers (a slow burn reaching 1d after 3d) is one alert.
# Pages fire at once (the workbook's detection times assume so) and hold 10 minutes; tickets wait an
# hour (Pyrra's `for` for its 1d tier: half the short window) and hold an hour, so a burn hovering at
# its threshold opens one ticket, not one an hour.
BURN_RATE_ALERTS = (
    ("page", ((Fraction(2, 100), "1h", "5m"), (Fraction(5, 100), "6h", "30m")),
     dt.timedelta(0), dt.timedelta(minutes=10)),
    ("ticket", ((Fraction(10, 100), "1d", "2h"), (Fraction(10, 100), "3d", "6h")),
     dt.timedelta(hours=1), dt.timedelta(hours=1)),
)


@dataclass(frozen=True)
class BurnTier:
    long_window: str
    short_window: str
    threshold: Fraction


@dataclass
class BurnRateRule:
    """Fires when the SLO's burn rate exceeds a tier's ``threshold`` over both of its windows, for any tier."""

    name: str
    slo: str
    severity: str
    tiers: tuple[BurnTier, ...]
    labels: dict[str, str]
    annotations: dict[str, str]
    for_: dt.timedelta = dt.timedelta(0)
    keep_firing_for: dt.timedelta = dt.timedelta(0)
    min_requests: int = 0
    nodata: str | None = None
    slo_config: object = None  # the SloConfig: its service, feature, SLI and objective
    kind: str = field(default="burn_rate", init=False)


@dataclass
class SystemRule:
    """An alert nlpmon raises about its data and itself (``alerts.system``): what it reads and when it holds
    is a function registered for its name in alerts/reads.py (SYSTEM_READS; every one has its read)."""

    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    for_: dt.timedelta = dt.timedelta(0)
    keep_firing_for: dt.timedelta = dt.timedelta(0)
    nodata: str | None = None
    kind: str = field(default="system", init=False)


def system_rules(config: Config) -> list[SystemRule]:
    if not config.alerts.system.enabled:
        return []
    book = f"{config.alerts.external_url}/docs/runbooks#"
    return [
        SystemRule("TrafficStopped", {"severity": "page"}, {
            "summary": "{{ $labels.service }} stopped sending requests",
            "description": "No request from {{ $labels.service }} in the last minutes, after more than "
                           f"{config.alerts.system.traffic_stopped_min_per_minute:g} a minute the hour before.",
            "runbook_url": book + "traffic-stopped"}),
        SystemRule("JobStalled", {"severity": "ticket"}, {
            "summary": "nlpmon job {{ $labels.job }} has not completed for {{ $value }} s",
            "description": f"No successful run for {config.alerts.system.job_stalled_intervals} of its intervals: "
                           "its metrics are stale, and alerts on them see no data.",
            "runbook_url": book + "job-stalled"}, for_=dt.timedelta(minutes=1)),
        SystemRule("IngestRejectRateHigh", {"severity": "ticket"}, {
            "summary": "nlpmon rejects {{ $value }} of the rows sent in the last 15 minutes",
            "description": "GET /v1/rejected lists the rows and the reasons.",
            "runbook_url": book + "ingest-rejects"}, for_=dt.timedelta(minutes=5)),
        SystemRule("NotificationsUndeliverable", {"severity": "ticket"}, {
            "summary": "{{ $value }} notifications to receiver {{ $labels.receiver }} cannot be delivered",
            "description": "Failed for good in the last hour, or still retrying after several attempts.",
            "runbook_url": book + "notifications-undeliverable"}),
        SystemRule("Watchdog", {"severity": "none"}, {
            "summary": "nlpmon is alive: this alert always fires",
            "description": "Routed only to alerts.system.watchdog_receiver (an outside dead-man's switch), "
                           "every alerts.system.watchdog_interval; its silence means nlpmon is down.",
            "runbook_url": book + "watchdog"}),
    ]


def burn_rate_threshold(share: Fraction, period: dt.timedelta, long_window: str) -> Fraction:
    return share * Fraction(int(period.total_seconds())) / WINDOWS[long_window]


def slo_rules(config: Config) -> list[BurnRateRule]:
    out = []
    for slo in config.slos:
        for severity, tiers, hold_for, keep_for in BURN_RATE_ALERTS:
            burn = tuple(BurnTier(long_w, short_w, burn_rate_threshold(share, slo.period, long_w))
                         for share, long_w, short_w in tiers)
            labels = {"severity": severity, "slo": slo.name, "service": slo.service}
            if slo.feature:
                labels["feature"] = slo.feature
            either = " or ".join(f"{float(t.threshold):g}x over {t.long_window} and {t.short_window} "
                                 f"({float(share):.0%} of the {_period(slo.period)} budget in {t.long_window})"
                                 for t, (share, _, _) in zip(burn, tiers))
            out.append(BurnRateRule(
                name="SLOBurnRate", slo=slo.name, severity=severity, tiers=burn, labels=labels,
                annotations={
                    "summary": f"SLO {slo.name} is burning its error budget too fast ({severity})",
                    "description": f"Burn rate above {either}; value: the burn rate over the long window of the "
                                   "tier furthest over its threshold, {{ $value }}.",
                    "runbook_url": f"{config.alerts.external_url}/docs/runbooks#slo-burn-rate"},
                for_=hold_for, keep_firing_for=keep_for, slo_config=slo))
    return out


def _period(period: dt.timedelta) -> str:
    days = period.total_seconds() / 86400
    return f"{days:g}-day"


def load_rules(config: Config) -> list:
    """Default rules, rule files and config rules (later ones replace earlier ones of the same name),
    then the SLO burn-rate rules. Raises ConfigError naming the rule and field."""
    rules: dict[str, AlertRule] = {}
    sources = []
    if config.alerts.default_rules:
        sources.append((str(DEFAULTS), yaml.safe_load(DEFAULTS.read_text())["rules"]))
    for path in config.alerts.rule_files:
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"alerts.rule_files: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"alerts.rule_files: {path} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
            raise ConfigError(f"alerts.rule_files: {path} must hold a mapping with a 'rules' list")
        sources.append((path, doc["rules"]))
    for where, raw_rules in sources:
        for i, raw in enumerate(raw_rules):
            rule = _validate(raw, f"{where}: rules[{i}]")
            rules[rule.name] = rule
    for rule in config.alerts.rules:
        rules[rule.name] = rule
    segments = segment_dimensions(config)
    for rule in rules.values():
        where = f"alerts.rules[{rule.name}]"
        if rule.metric not in METRICS:
            raise ConfigError(f"{where}.metric: unknown metric {rule.metric!r} (see docs/metrics.md)")
        if is_live(rule):
            try:
                seconds = parse_duration(rule.window).total_seconds()
            except ValueError as exc:
                raise ConfigError(f"{where}.window: {exc}") from None
            if not 60 <= seconds <= 86400 or seconds % 60:
                raise ConfigError(f"{where}.window: a live window is whole minutes from 1m to 1d, not {rule.window!r}")
            labels = set(rule.selector) | set(rule.by)
            for label in labels:
                if label not in LIVE_LABELS + segments:
                    raise ConfigError(f"{where}.by: a live rule groups by {', '.join(LIVE_LABELS)} or one segment "
                                      f"dimension ({', '.join(segments)}), not {label!r}")
            used = sorted(labels & set(segments))
            if used and (len(used) > 1 or labels & {"model", "prompt_version"}):
                raise ConfigError(f"{where}.by: a segment dimension ({', '.join(used)}) goes with service and "
                                  f"feature only: segments are counted one dimension at a time")
            if used and rule.metric not in LIVE_REQUEST_METRICS:
                raise ConfigError(f"{where}.by: {rule.metric} is not counted per segment (request metrics are)")
        else:
            if rule.source == "live":
                raise ConfigError(f"{where}.source: {rule.metric} is not computed live; use source: points")
            windows = METRICS[rule.metric][1]
            if rule.window not in windows:
                raise ConfigError(f"{where}.window: {rule.metric} is kept for windows {', '.join(windows)}, "
                                  f"not {rule.window!r}")
        if rule.baseline is not None:
            if is_live(rule):
                raise ConfigError(f"{where}.baseline: only for points rules (source: points or a metric the "
                                  "jobs compute)")
            windows = METRICS[rule.metric][1]
            if rule.baseline not in windows or WINDOWS[rule.baseline] <= WINDOWS[rule.window]:
                longer = [w for w in windows if WINDOWS[w] > WINDOWS[rule.window]]
                raise ConfigError(f"{where}.baseline: a longer window of {rule.metric} than {rule.window!r} "
                                  f"({', '.join(longer) or 'it has none'}), not {rule.baseline!r}")
        if rule.min_failures and rule.metric not in ("error_rate", "availability"):
            raise ConfigError(f"{where}.min_failures: only for error_rate and availability")
        if rule.min_reviews and not rule.metric.startswith("hallucination_rate"):
            raise ConfigError(f"{where}.min_reviews: only for hallucination_rate and its bounds")
        for label in list(rule.selector) + rule.by:
            if label not in LABELS and not (is_live(rule) and label in segments):
                raise ConfigError(f"{where}.selector: unknown label {label!r}; labels are {', '.join(LABELS)}")
        for name, text in rule.annotations.items():
            bad = [v for v in re.findall(r"\{\{\s*(.*?)\s*\}\}", text) if not _TEMPLATE_VAR.fullmatch(v)]
            if bad:
                raise ConfigError(f"{where}.annotations.{name}: unknown template {bad[0]!r}; use "
                                  "{{ $value }} or {{ $labels.NAME }}")
    out: list = list(rules.values())
    if config.alerts.slo_rules:
        out += slo_rules(config)
    return out + system_rules(config)


# The dimensions a live rule can group and select by (those of the rollups that labels carry).
LIVE_LABELS = ("service", "feature", "model", "prompt_version")


def is_live(rule) -> bool:
    """Whether a threshold rule is computed from the rollups at each evaluation (see AlertRule.source)."""
    live = rule.metric in LIVE_REQUEST_METRICS or rule.metric in LIVE_FEEDBACK_METRICS
    return live and rule.source in ("auto", "live")


_TEMPLATE_VAR = re.compile(r"\$value|\$labels\.[A-Za-z_][A-Za-z0-9_]*")


def _validate(raw, where: str) -> AlertRule:
    try:
        return AlertRule.model_validate(raw)
    except ValidationError as exc:
        name = raw.get("name") if isinstance(raw, dict) else None
        label = f"rule {name}" if name else where
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{label} ({where}): {errors}") from None


def render(template: str, labels: dict[str, str], value: float | None) -> str:
    """``{{ $value }}`` and ``{{ $labels.NAME }}``, the subset of Prometheus templating rules use."""
    def sub(m: re.Match) -> str:
        var = m.group(1)
        if var == "$value":
            return "n/a" if value is None else f"{value:.4g}"
        return labels.get(var[len("$labels."):], "")
    return re.sub(r"\{\{\s*(\$value|\$labels\.[A-Za-z_][A-Za-z0-9_]*)\s*\}\}", sub, template)


__all__ = ["load_rules", "slo_rules", "system_rules", "render", "BurnRateRule", "SystemRule", "burn_rate_threshold",
           "BURN_RATE_ALERTS", "BurnTier", "is_live", "Decimal"]
