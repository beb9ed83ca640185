"""A digest: what a manager reads in a minute about a period, against the period before, and how it is said in
each place it goes (the webhook's JSON, Slack blocks, an email's HTML and plain text, Markdown, the page).

The numbers are the overview's (dashboards.kpis.overview over the same period, and the honest-comparison rule
of dashboards.compare for every change), so a digest and the overview never disagree. What it says first:

* **movers**: the KPI changes across features with the largest relative change, ``top`` each way (worse,
  better), among the changes the comparison rule shows; for periods of 7 days or less each is tested and
  explained by GET /v1/explain's method (monitor.foundation.explain, its significance test and contributors)
  and kept only when significant; longer periods are not explained (it reads raw rows) and say so;
* **SLOs at risk**: error budget remaining under 25%, or spent faster than the period's share of it;
* **incidents** that started in the period, with their time to resolve;
* **releases** started in the period, with their verdicts and rollbacks;
* **cost**: total, per successful outcome with its change, and the features that drive it;
* **hallucination**: reviewed rates with their intervals and coverage, and a judge's corrected estimate where
  reviews are thin.

Only aggregates and links: a digest never carries a prompt, an answer or a context.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from dashboards import compare, evaluators as evaluator_views, kpis
from dashboards.formatting import fmt
from monitor.foundation import explain
from monitor.foundation.clock import iso_utc
from monitor.foundation.config import DigestConfig
from monitor.foundation.metrics import floor_to
from monitor.foundation.tables import alert_history, metric_points, releases

# Every KPI a feature row carries: metric name (docs/metrics.md) -> (unit, higher is better; None: neither);
# the overview's own columns as the overview shows them, and three it shows in cells of their own.
_OVERVIEW = {key: (unit, better) for key, _, unit, better, _ in kpis.KPI_COLUMNS}
KPIS = {**{k: _OVERVIEW[k] for k in ("requests", "error_rate", "latency_p95_ms", "thumbs_up_rate", "task_success_rate")},
        "hallucination_rate": ("pct", False), "cost_usd": ("usd", None),
        "cost_per_successful_outcome_usd": _OVERVIEW["cost_per_successful_outcome_usd"],
        "slo_error_budget_remaining": ("pct", True)}
LABELS = {"requests": "Requests", "error_rate": "Error rate", "latency_p95_ms": "Latency p95",
          "thumbs_up_rate": "Thumbs-up rate", "task_success_rate": "Task success", "hallucination_rate": "Hallucination",
          "cost_usd": "Cost", "cost_per_successful_outcome_usd": "Cost / success",
          "slo_error_budget_remaining": "SLO budget left"}
# The KPIs that can move for better or worse and that explain can test: the movers' candidates.
MOVERS = ("error_rate", "latency_p95_ms", "thumbs_up_rate", "task_success_rate", "cost_per_successful_outcome_usd")
EXPLAIN_BUDGET = 12          # explanations tried per digest, biggest changes first
AT_RISK = 0.25               # an SLO with less error budget left than this is at risk
SPARK = "▁▂▃▄▅▆▇█"
TEMPLATES = Path(__file__).parent / "templates"


def period_of(cfg: DigestConfig, fired: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The period a digest fired at ``fired`` covers: the ``period`` before that minute (Monday 08:00's weekly
    digest, the 7 days to Monday 08:00). So the period before it is covered by data as soon as the service has
    watched twice the period when the schedule fires (a calendar-aligned period would leave it partial by the
    hours since midnight)."""
    end = floor_to(fired, 60)
    return end - cfg.span, end


@dataclass
class Digest:
    name: str
    start: dt.datetime
    end: dt.datetime
    url: str
    total: dict = field(default_factory=dict)
    features: list[dict] = field(default_factory=list)
    movers: dict = field(default_factory=lambda: {"worse": [], "better": []})
    movers_note: str = ""
    slos_at_risk: list[dict] = field(default_factory=list)
    incidents: list[dict] = field(default_factory=list)
    releases: list[dict] = field(default_factory=list)
    cost: dict = field(default_factory=dict)
    hallucination: list[dict] = field(default_factory=list)

    @property
    def previous(self) -> tuple[dt.datetime, dt.datetime]:
        return self.start - (self.end - self.start), self.start


def _in_scope(cfg: DigestConfig, service: str, feature: str) -> bool:
    return (not cfg.services or service in cfg.services) and (not cfg.features or feature in cfg.features)


def _kpi(row: kpis.Row, key: str, value, previous) -> dict:
    unit, better = KPIS[key]
    if key == "slo_error_budget_remaining":  # a level the slo job writes, not a period figure with a denominator
        change = (compare.Change("–", reason="no value") if value is None
                  else compare.Change("new", reason="new") if previous is None else compare.Change(""))
    else:
        change = compare.row_change(row, key, unit, better)
    out = {"value": value, "previous": previous, "change": None, "relative": None, "reason": change.reason or None,
           "text": fmt(value, unit)}
    if change.shown and value is not None and previous is not None:
        out["change"] = value - previous
        out["relative"] = (value - previous) / previous if previous else None
        out["change_text"] = compare.number(value, previous, unit)
        out["tone"] = "" if better is None or value == previous else ("good" if (value > previous) == better else "bad")
    else:
        out["change_text"] = change.text
        out["tone"] = ""
    return out


def build(store, config, cfg: DigestConfig, start: dt.datetime, end: dt.datetime,
          fired: dt.datetime | None = None) -> Digest:
    """The digest of [start, end) against the period before; ``fired`` (its schedule's time) makes its link."""
    url = f"{config.external_url()}/digest/{cfg.name}?at={iso_utc(fired or end)}"
    d = Digest(cfg.name, start, end, url)
    period = kpis.Period("custom", start, end)
    rows = kpis.overview(store, config, period, {}, trend=True)
    budgets_now = metric_points.latest_by_label(store, "slo_error_budget_remaining", "slo",
                                                end - dt.timedelta(days=1), end)
    budgets_then = metric_points.latest_by_label(store, "slo_error_budget_remaining", "slo",
                                                 start - dt.timedelta(days=1), start)
    for r in rows:
        if not r.is_total and not _in_scope(cfg, r.service, r.feature):
            continue
        slos = [s for s in config.slos if s.service == r.service and (not s.feature or s.feature == r.feature)]
        now_b = [budgets_now[s.name] for s in slos if s.name in budgets_now]
        then_b = [budgets_then[s.name] for s in slos if s.name in budgets_then]
        entry = {"service": r.service or None, "feature": r.feature or None,
                 "href": _link(config, "/detail", r.service, r.feature, start, end), "kpis": {}}
        for key in KPIS:
            if key == "slo_error_budget_remaining":
                if r.is_total:
                    continue
                entry["kpis"][key] = _kpi(r, key, min(now_b) if now_b else None, min(then_b) if then_b else None)
            else:
                entry["kpis"][key] = _kpi(r, key, r.current.get(key), r.previous.get(key))
        entry["trend"] = {k: _spark([v for _, v in r.trend.get(k, [])]) for k in ("requests", "error_rate",
                                                                                 "latency_p95_ms")}
        entry["hallucination"] = {"rate": r.current.get("hallucination_rate"),
                                  "low": r.current.get("hallucination_rate_low"),
                                  "high": r.current.get("hallucination_rate_high"),
                                  "reviews": r.current.get("hallucination_reviews") or 0,
                                  "coverage": r.current.get("review_coverage"),
                                  "samples": r.current.get("review_samples") or 0}
        if r.is_total:
            d.total = entry
        else:
            d.features.append(entry)
    _movers(store, config, cfg, d)
    _slos(config, cfg, d, budgets_now, budgets_then, start, end)
    _incidents(store, config, cfg, d, start, end)
    _releases(store, config, cfg, d, start, end)
    _cost(d)
    _hallucination(store, config, d, end)
    return d


def _link(config, path: str, service: str, feature: str, start: dt.datetime, end: dt.datetime) -> str:
    from urllib.parse import urlencode
    query = {k: v for k, v in (("service", service), ("feature", feature)) if v}
    query.update({"period": "custom", "from": iso_utc(start), "to": iso_utc(end)})
    return f"{config.external_url()}{path}?{urlencode(query)}"


def _spark(values: list) -> str:
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return ""
    lo, hi = min(known), max(known)
    step = (hi - lo) / (len(SPARK) - 1) or 1
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int(round((v - lo) / step)))] for v in values)


def _movers(store, config, cfg: DigestConfig, d: Digest) -> None:
    candidates = []
    for f in d.features:
        for key in MOVERS:
            k = f["kpis"][key]
            if k["change"] is None or not k["previous"] or not k["tone"]:
                continue
            candidates.append((abs(k["relative"] or 0.0), f, key, k))
    candidates.sort(key=lambda c: -c[0])
    explainable = d.end - d.start <= explain.MAX_WINDOW
    if not explainable:
        d.movers_note = (f"Periods over {explain.MAX_WINDOW.days} days are not tested nor explained (explaining reads "
                         "raw rows): these are the largest changes the comparison rule shows.")
    tried = 0
    for magnitude, f, key, k in candidates:
        side = "worse" if k["tone"] == "bad" else "better"
        if len(d.movers[side]) >= cfg.top:
            continue
        mover = {"service": f["service"], "feature": f["feature"], "metric": key, "label": LABELS[key],
                 "value": k["value"], "previous": k["previous"], "change_text": k["change_text"],
                 "relative": k["relative"], "text": k["text"], "previous_text": fmt(k["previous"], KPIS[key][0]),
                 "explanation": [], "significant": None, "href": f["href"]}
        if explainable:
            if tried >= EXPLAIN_BUDGET:
                break
            tried += 1
            try:
                e = explain.run(store, config, key, (d.start, d.end), d.previous,
                                {"service": f["service"], "feature": f["feature"]})
            except explain.ExplainError:
                continue
            if not e.significant:
                continue  # within the noise of the two periods: not a mover
            mover["significant"] = True
            mover["p_value"] = e.p_value
            mover["explanation"] = [explain.sentence(key, c) for c in e.contributors[:2]]
        d.movers[side].append(mover)
        if all(len(d.movers[s]) >= cfg.top for s in ("worse", "better")):
            break


def _slos(config, cfg: DigestConfig, d: Digest, now_b: dict, then_b: dict, start, end) -> None:
    for slo in config.slos:
        if (cfg.services and slo.service not in cfg.services) or (
                cfg.features and slo.feature and slo.feature not in cfg.features):
            continue
        left, before = now_b.get(slo.name), then_b.get(slo.name)
        if left is None:
            continue
        # Spent faster than the period's share of the SLO's window: at that pace it runs out before the window ends.
        share = (end - start) / slo.period
        spent = (before - left) if before is not None else None
        fast = spent is not None and share and spent > share
        if left < AT_RISK or fast:
            d.slos_at_risk.append({"slo": slo.name, "service": slo.service, "feature": slo.feature or None,
                                   "budget_remaining": left, "budget_remaining_before": before,
                                   "why": ("budget under 25%" if left < AT_RISK else
                                           f"spent {spent:.0%} of its budget in the period (more than its "
                                           f"{share:.0%} share)")})


def _incidents(store, config, cfg: DigestConfig, d: Digest, start, end) -> None:
    for s in alert_history.incident_spans(store, start, end):
        svc, feat = s.labels.get("service", ""), s.labels.get("feature", "")
        if (cfg.services or cfg.features) and not _in_scope(cfg, svc, feat):
            continue
        resolve = (s.end - s.start).total_seconds() if s.end is not None else None
        d.incidents.append({"rule": s.rule, "severity": s.severity, "service": svc or None, "feature": feat or None,
                            "start": iso_utc(s.start), "end": iso_utc(s.end) if s.end else None,
                            "time_to_resolve_seconds": resolve,
                            "href": f"{config.external_url()}/incidents?fingerprint={s.fingerprint}"
                                    f"&from={iso_utc(s.start - dt.timedelta(minutes=30))}"
                                    f"&to={iso_utc((s.end or end) + dt.timedelta(minutes=30))}"})


def _releases(store, config, cfg: DigestConfig, d: Digest, start, end) -> None:
    for r in releases.search(store, lo=start, hi=end):
        if not _in_scope(cfg, r.service, r.feature):
            continue
        d.releases.append({"service": r.service, "feature": r.feature, "dimension": r.dimension,
                           "previous_value": r.previous_value, "value": r.value, "mode": r.mode or None,
                           "verdict": r.verdict, "reason": r.reason, "rollback": bool(r.rollback_of),
                           "start": iso_utc(r.ts), "href": f"{config.external_url()}/releases/{r.release_id}"})


def _cost(d: Digest) -> None:
    total = d.total.get("kpis", {})
    spent = [(f["kpis"]["cost_usd"]["value"] or 0.0, f) for f in d.features]
    whole = sum(v for v, _ in spent) or 0.0
    drivers = []
    for v, f in sorted(spent, key=lambda x: -x[0])[:3]:
        if v <= 0:
            continue
        drivers.append({"service": f["service"], "feature": f["feature"], "cost_usd": v,
                        "share": v / whole if whole else None, "change_text": f["kpis"]["cost_usd"]["change_text"],
                        "per_success": f["kpis"]["cost_per_successful_outcome_usd"]})
    d.cost = {"cost_usd": total.get("cost_usd"), "per_success": total.get("cost_per_successful_outcome_usd"),
              "drivers": drivers}


def _hallucination(store, config, d: Digest, end: dt.datetime) -> None:
    judged = evaluator_views.estimates(store, config, end)
    for f in d.features:
        h = dict(f["hallucination"])
        estimate = judged.get((f["service"], f["feature"]))
        if h["samples"] == 0 and h["rate"] is None and not estimate:
            continue
        h.update(service=f["service"], feature=f["feature"])
        if estimate and h["reviews"] < compare.MIN_REVIEWS:
            h["estimate"] = estimate
        d.hallucination.append(h)


# -- how it is said ---------------------------------------------------------------------------------------------
def as_json(d: Digest) -> dict:
    """The webhook's body."""
    def feature(f):
        return {"service": f["service"], "feature": f["feature"], "url": f["href"],
                **{k: {"value": v["value"], "previous": v["previous"], "change": v["change"],
                       "relative_change": v["relative"], **({"reason": v["reason"]} if v["reason"] else {})}
                   for k, v in f["kpis"].items()}}
    return {"kind": "digest", "name": d.name, "from": iso_utc(d.start), "to": iso_utc(d.end),
            "previous_from": iso_utc(d.previous[0]), "previous_to": iso_utc(d.previous[1]), "url": d.url,
            "total": feature(d.total) if d.total else None, "features": [feature(f) for f in d.features],
            "movers": {side: [{k: v for k, v in m.items() if k not in ("text", "previous_text")} for m in ms]
                       for side, ms in d.movers.items()}, "movers_note": d.movers_note or None,
            "slos_at_risk": d.slos_at_risk, "incidents": d.incidents, "releases": d.releases,
            "cost": {"cost_usd": d.cost.get("cost_usd", {}).get("value"),
                     "cost_per_successful_outcome_usd": d.cost.get("per_success", {}).get("value"),
                     "drivers": [{k: v for k, v in x.items() if k != "per_success"} for x in d.cost.get("drivers", [])]},
            "hallucination": d.hallucination}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "still firing"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _title(d: Digest) -> str:
    return f"nlpmon digest {d.name}: {d.start:%Y-%m-%d} to {d.end:%Y-%m-%d}"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["num"] = lambda v, unit: fmt(v, unit)
    env.filters["duration"] = _duration
    env.globals.update(LABELS=LABELS, KPIS=KPIS)
    return env


_ENV = _env()


def as_html(d: Digest, page: bool = False) -> str:
    """The email's HTML, and the page (``page``: with its print rules and a link back)."""
    return _ENV.get_template("digest.html").render(d=d, title=_title(d), page=page)


def as_text(d: Digest) -> str:
    """Plain text (the email's text part) and Markdown alike: readable as either."""
    lines = [f"# {_title(d)}", "", f"Against {d.previous[0]:%Y-%m-%d} to {d.previous[1]:%Y-%m-%d}. {d.url}", ""]
    t = d.total.get("kpis", {})
    if t:
        lines.append("All traffic: " + "; ".join(
            f"{LABELS[k]} {t[k]['text']} ({t[k]['change_text']})" for k in ("requests", "error_rate", "latency_p95_ms",
                                                                             "cost_per_successful_outcome_usd")))
        lines.append("")
    for side, heading in (("worse", "Got worse"), ("better", "Got better")):
        lines.append(f"## {heading}")
        for m in d.movers[side]:
            why = f" — {'; '.join(m['explanation'])}" if m["explanation"] else ""
            lines.append(f"- {m['service']}/{m['feature']}: {m['label']} {m['previous_text']} → {m['text']} "
                         f"({m['change_text']}){why}")
        if not d.movers[side]:
            lines.append("- nothing significant")
        lines.append("")
    if d.movers_note:
        lines += [d.movers_note, ""]
    lines.append("## SLOs at risk")
    lines += [f"- {s['slo']} ({s['service']}): {fmt(s['budget_remaining'], 'pct')} of the budget left, {s['why']}"
              for s in d.slos_at_risk] or ["- none"]
    lines += ["", f"## Incidents ({len(d.incidents)})"]
    lines += [f"- {i['start'][:16].replace('T', ' ')} {i['rule']} ({i['severity'] or 'no severity'}) on "
              f"{i['service'] or 'all'}/{i['feature'] or 'all'}: resolved in {_duration(i['time_to_resolve_seconds'])}"
              for i in d.incidents] or ["- none"]
    lines += ["", f"## Releases ({len(d.releases)})"]
    lines += [f"- {r['service']}/{r['feature']} {r['dimension']} {r['previous_value']} → {r['value']}: {r['verdict']}"
              f"{' (rollback)' if r['rollback'] else ''}" for r in d.releases] or ["- none"]
    c = d.cost
    lines += ["", "## Cost",
              f"- {fmt(c.get('cost_usd', {}).get('value'), 'usd')} ({c.get('cost_usd', {}).get('change_text', '')}); "
              f"per successful outcome {c.get('per_success', {}).get('text', '–')} "
              f"({c.get('per_success', {}).get('change_text', '')})"]
    lines += [f"- {x['service']}/{x['feature']}: {fmt(x['cost_usd'], 'usd')} ({fmt(x['share'], 'pct')} of it)"
              for x in c.get("drivers", [])]
    lines += ["", "## Hallucination"]
    for h in d.hallucination:
        if h["rate"] is not None:
            lines.append(f"- {h['service']}/{h['feature']}: {fmt(h['rate'], 'pct')} ({fmt(h['low'], 'pct')} – "
                         f"{fmt(h['high'], 'pct')}), {h['reviews']} reviews, coverage {fmt(h['coverage'], 'pct')}")
        if h.get("estimate"):
            e = h["estimate"]
            lines.append(f"- {h['service']}/{h['feature']}: estimated {fmt(e['rate'], 'pct')} ({fmt(e['low'], 'pct')} – "
                         f"{fmt(e['high'], 'pct')}) from judge {e['evaluator']} (few reviews)")
    if not d.hallucination:
        lines.append("- no reviewed samples")
    return "\n".join(lines) + "\n"


def as_slack(d: Digest, channel: str = "") -> dict:
    def esc(text: str) -> str:
        return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    t = d.total.get("kpis", {})
    head = [f"*{esc(LABELS[k])}* {esc(t[k]['text'])} ({esc(t[k]['change_text'])})"
            for k in ("requests", "error_rate", "latency_p95_ms", "cost_per_successful_outcome_usd") if k in t]
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": _title(d)[:150]}},
              {"type": "section", "text": {"type": "mrkdwn", "text": "All traffic: " + " · ".join(head)}}]
    for side, heading in (("worse", ":small_red_triangle: Got worse"), ("better", ":small_green_triangle: Got better")):
        items = [f"• {esc(m['service'])}/{esc(m['feature'])}: {esc(m['label'])} {esc(m['previous_text'])} → "
                 f"{esc(m['text'])} ({esc(m['change_text'])})"
                 + (f"\n    _{esc('; '.join(m['explanation']))}_" if m["explanation"] else "") for m in d.movers[side]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                    "text": f"*{heading}*\n" + ("\n".join(items) or "nothing significant")}})
    facts = [f"*Incidents* {len(d.incidents)}"
             + (f" (resolved in {', '.join(_duration(i['time_to_resolve_seconds']) for i in d.incidents[:5])})"
                if d.incidents else ""),
             f"*Releases* {len(d.releases)}: " + (", ".join(f"{esc(r['feature'])} {esc(r['value'])} {esc(r['verdict'])}"
                                                            + (" (rollback)" if r["rollback"] else "")
                                                            for r in d.releases[:5]) or "none"),
             "*SLOs at risk* " + (", ".join(esc(s["slo"]) for s in d.slos_at_risk) or "none")]
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)[:2900]}})
    blocks.append({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text",
                                                                              "text": "Open the digest"},
                                                    "url": d.url, "action_id": f"digest-{d.name}"[:255]}]})
    out = {"text": _title(d), "blocks": blocks}
    if channel:
        out["channel"] = channel
    return out


def as_email(d: Digest, to: list[str], sender: str) -> dict:
    subject = " ".join(_title(d).split())
    return {"to": list(to), "from": sender, "subject": subject, "text": as_text(d), "html": as_html(d)}


def payload(kind: str, target, d: Digest) -> dict:
    """The outbox payload of receiver kind ``kind`` (its settings ``target``) for digest ``d``."""
    if kind == "webhook":
        return as_json(d)
    if kind == "slack":
        return as_slack(d, getattr(target, "channel", "") or "")
    if kind == "email":
        return as_email(d, getattr(target, "to", []), getattr(target, "from_", ""))
    raise ValueError(f"a digest cannot go to a {kind} receiver")

