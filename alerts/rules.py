"""Alert rules: the shipped defaults, the config's and rule files', and SLO burn-rate rules.

Every rule is validated when the service starts; a mistake names the rule and
the field (``alerts.rules[HighErrorRate].threshold: ...``).

Burn-rate rules follow the SRE workbook's multi-window, multi-burn-rate
recipe. For a 30-day SLO: page when 2% of the budget burns in 1h (14.4x, with
5m as the short window) or 5% in 6h (6x, 30m); ticket when 10% burns in 1d
(3x, 2h) or in 3d (1x, 6h). Both windows must exceed the threshold. For
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

from monitor.foundation.config import AlertRule, Config, ConfigError
from monitor.foundation.metrics import LABELS, METRICS, WINDOWS

DEFAULTS = Path(__file__).with_name("default_rules.yaml")

# (severity, budget share, long window, short window)
BURN_RATE_TIERS = (
    ("page", Fraction(2, 100), "1h", "5m"),
    ("page", Fraction(5, 100), "6h", "30m"),
    ("ticket", Fraction(10, 100), "1d", "2h"),
    ("ticket", Fraction(10, 100), "3d", "6h"),
)


@dataclass
class BurnRateRule:
    """Fires when the SLO's burn rate exceeds ``threshold`` over both windows."""

    name: str
    slo: str
    long_window: str
    short_window: str
    threshold: Fraction
    labels: dict[str, str]
    annotations: dict[str, str]
    for_: dt.timedelta = dt.timedelta(0)
    keep_firing_for: dt.timedelta = dt.timedelta(0)
    min_requests: int = 0
    nodata: str | None = None
    kind: str = field(default="burn_rate", init=False)


def burn_rate_threshold(share: Fraction, period: dt.timedelta, long_window: str) -> Fraction:
    return share * Fraction(int(period.total_seconds())) / WINDOWS[long_window]


def slo_rules(config: Config) -> list[BurnRateRule]:
    out = []
    for slo in config.slos:
        for severity, share, long_w, short_w in BURN_RATE_TIERS:
            threshold = burn_rate_threshold(share, slo.period, long_w)
            labels = {"severity": severity, "slo": slo.name, "service": slo.service}
            if slo.feature:
                labels["feature"] = slo.feature
            out.append(BurnRateRule(
                name="SLOBurnRate", slo=slo.name, long_window=long_w, short_window=short_w, threshold=threshold,
                labels={**labels, "long_window": long_w, "short_window": short_w},
                annotations={
                    "summary": f"SLO {slo.name} is burning its error budget {float(threshold):g}x too fast",
                    "description": (f"Burn rate over {long_w} and {short_w} is above {float(threshold):g} "
                                    f"({float(share):.0%} of the {_period(slo.period)} budget in {long_w}); "
                                    "value is the {long_w} burn rate: {{ $value }}.").replace("{long_w}", long_w),
                    "runbook_url": f"{config.alerts.external_url}/docs/runbooks#slo-burn-rate"}))
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
    for rule in rules.values():
        where = f"alerts.rules[{rule.name}]"
        if rule.metric not in METRICS:
            raise ConfigError(f"{where}.metric: unknown metric {rule.metric!r} (see docs/metrics.md)")
        windows = METRICS[rule.metric][1]
        if rule.window not in windows:
            raise ConfigError(f"{where}.window: {rule.metric} is kept for windows {', '.join(windows)}, "
                              f"not {rule.window!r}")
        for label in list(rule.selector) + rule.by:
            if label not in LABELS:
                raise ConfigError(f"{where}.selector: unknown label {label!r}; labels are {', '.join(LABELS)}")
        for name, text in rule.annotations.items():
            bad = [v for v in re.findall(r"\{\{\s*(.*?)\s*\}\}", text) if not _TEMPLATE_VAR.fullmatch(v)]
            if bad:
                raise ConfigError(f"{where}.annotations.{name}: unknown template {bad[0]!r}; use "
                                  "{{ $value }} or {{ $labels.NAME }}")
    out: list = list(rules.values())
    if config.alerts.slo_rules:
        out += slo_rules(config)
    return out


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


__all__ = ["load_rules", "slo_rules", "render", "BurnRateRule", "burn_rate_threshold", "BURN_RATE_TIERS",
           "Decimal"]
