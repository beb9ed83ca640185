"""The comparison rule (dashboards.compare) at its edges, the figures' formatters and the overview's
worst-value pick: pure functions, no store. The markdown export is checked to print the rule's words."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from dashboards import compare, incidents, kpis
from dashboards.compare import MIN_FEEDBACK, MIN_REQUESTS, MIN_REVIEWS, compare as cmp
from dashboards.formatting import count, exact, fmt, money
from dashboards.views import worst
from monitor.foundation.tables.alert_history import IncidentSpan

pytestmark = pytest.mark.fast  # no store, server or model

PREV = dt.datetime(2026, 11, 10, 12, 1, tzinfo=dt.timezone.utc)  # a previous period's start (minute-aligned)
HOUR = dt.timedelta(hours=1)


def side(requests=1000, **extra):
    return {"requests": requests, **extra}


# -- the rule --------------------------------------------------------------------------------
def test_a_covered_previous_period_with_enough_data_gives_the_change():
    ch = cmp("error_rate", "pct", side(error_rate=0.05), side(error_rate=0.02), PREV - HOUR, PREV, better=False)
    assert (ch.text, ch.tone, ch.reason, ch.shown) == ("+3.00 pp", "bad", "", True)
    ch = cmp("requests", "count", side(1500), side(1000), PREV, PREV, better=None)
    assert (ch.text, ch.tone) == ("+50.0%", "")
    ch = cmp("task_success_rate", "pct", side(task_success_rate=0.9, task_labels=40),
             side(task_success_rate=0.8, task_labels=40), PREV, PREV, better=True)
    assert (ch.text, ch.tone) == ("+10.00 pp", "good")


def test_first_data_exactly_at_the_previous_start_covers_it_one_bucket_later_does_not():
    for first, expected in ((PREV, "+10.0%"), (PREV - dt.timedelta(days=30), "+10.0%"),
                            (PREV + compare.COVERAGE_TOLERANCE, "partial previous period"),
                            (PREV + dt.timedelta(minutes=1), "partial previous period"), (None, "partial previous period")):
        assert cmp("requests", "count", side(1100), side(1000), first, PREV).text == expected, first
    assert compare.covered(PREV, PREV) and not compare.covered(PREV + HOUR, PREV)
    # The partial cell says where the data starts.
    assert "2026-11-10 13:01" in cmp("requests", "count", side(1100), side(1000), PREV + HOUR, PREV).title


def test_no_previous_requests_is_new_whether_or_not_older_data_exists():
    for first in (PREV - dt.timedelta(days=3), PREV + dt.timedelta(days=3), None):
        for prev in ({}, side(0), side(0, error_rate=None)):
            ch = cmp("error_rate", "pct", side(error_rate=0.1), prev, first, PREV)
            assert (ch.text, ch.reason, ch.shown) == ("new", "new", False)
    # "new" comes before "partial": a row that did not exist yet is new, not partial.
    assert cmp("requests", "count", side(10), side(0), PREV + dt.timedelta(days=1), PREV).text == "new"


@pytest.mark.parametrize("key,den,minimum,what", [
    ("error_rate", "requests", MIN_REQUESTS, "requests"),
    ("latency_p95_ms", "requests", MIN_REQUESTS, "requests"),
    ("ttft_p95_ms", "ttft_requests", MIN_REQUESTS, "streamed requests"),
    ("cost_per_successful_outcome_usd", "successful_outcomes", MIN_REQUESTS, "successes"),
    ("thumbs_up_rate", "thumbs", MIN_FEEDBACK, "thumbs"),
    ("task_success_rate", "task_labels", MIN_FEEDBACK, "task labels"),
    ("hallucination_rate", "hallucination_reviews", MIN_REVIEWS, "reviews"),
])
def test_a_rate_needs_its_minimum_denominator_in_both_periods(key, den, minimum, what):
    def figures(n, v):
        return {"requests": max(n, 1), den: n, key: v}

    at_min = cmp(key, "pct", figures(minimum, 0.2), figures(minimum, 0.1), PREV, PREV)
    assert at_min.shown and at_min.text == "+10.00 pp"
    before = cmp(key, "pct", figures(minimum, 0.2), figures(minimum - 1, 0.1), PREV, PREV)
    assert (before.text, before.reason) == (f"too few {what} ({minimum - 1} before)", "too few")
    now = cmp(key, "pct", figures(minimum - 1, 0.2), figures(minimum + 500, 0.1), PREV, PREV)
    assert now.text == f"too few {what} ({minimum - 1} now)"
    assert f"at least {minimum} {what}" in now.title
    # A missing denominator counts as none.
    assert den == "requests" or cmp(key, "pct", figures(minimum, 0.2), {"requests": 100, key: 0.1}, PREV, PREV).text == \
        f"too few {what} (0 before)"


def test_counts_and_amounts_need_no_minimum_but_the_rest_of_the_rule():
    assert cmp("requests", "count", side(3), side(2), PREV, PREV).text == "+50.0%"
    assert cmp("cost_usd", "usd", side(3, cost_usd=1.5), side(2, cost_usd=1.0), PREV, PREV).text == "+50.0%"
    assert cmp("cost_usd", "usd", side(3, cost_usd=1.5), side(2, cost_usd=0.0), PREV, PREV).text == "from 0"
    assert cmp("cost_usd", "usd", side(3, cost_usd=1.5), side(2, cost_usd=1.0), PREV + HOUR, PREV).text == \
        "partial previous period"


def test_no_current_value_or_no_previous_value():
    assert cmp("ttft_p95_ms", "ms", side(ttft_requests=100), side(ttft_p95_ms=200.0, ttft_requests=100),
               PREV, PREV).text == "–"
    ch = cmp("ttft_p95_ms", "ms", side(ttft_p95_ms=200.0, ttft_requests=100), side(ttft_requests=100), PREV, PREV)
    assert (ch.text, ch.reason) == ("none before", "none before")


def test_the_overview_row_and_incident_counts_follow_the_rule():
    row = kpis.Row("support-bot", "answer", current=side(100), previous=side(80), first_seen=PREV, baseline_start=PREV)
    span = IncidentSpan("fp", "HighErrorRate", {}, "page", PREV, None, 0.5)
    row.incidents, row.previous_incidents = [span], [span, span]
    assert compare.row_change(row, "requests", "count").text == "+25.0%"
    assert compare.incidents_change(row).text == "prev 2"
    row.first_seen = PREV + HOUR
    assert compare.incidents_change(row).text == "partial previous period"
    row.previous = {}
    assert compare.incidents_change(row).text == "new"


# -- the markdown export prints the rule's words ---------------------------------------------
def _report(rows):
    from dashboards.incidents import IncidentReport
    return IncidentReport(kpis.Period("custom", PREV + dt.timedelta(days=7), PREV + dt.timedelta(days=7, hours=2)),
                          kpis.Period("baseline", PREV, PREV + dt.timedelta(hours=2)), {}, rows, {}, [], [], [], [],
                          [], [], [], [])


def test_markdown_export_uses_the_same_rule_and_words():
    cur = side(500, error_rate=0.1, thumbs_up_rate=0.7, thumbs=200, cost_usd=2.0)
    rows = [
        kpis.Row("", "", current=cur, previous=side(400, error_rate=0.05, thumbs_up_rate=0.8, thumbs=12, cost_usd=1.0),
                 first_seen=PREV - dt.timedelta(days=30), baseline_start=PREV),
        kpis.Row("search", "query-rewrite", current=cur, previous=side(400, error_rate=0.05, cost_usd=1.0),
                 first_seen=PREV + HOUR, baseline_start=PREV),
        kpis.Row("support-bot", "answer", current=cur, previous={}, first_seen=PREV + dt.timedelta(days=7),
                 baseline_start=PREV),
    ]
    md = incidents.as_markdown(_report(rows))
    table = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line.rstrip(" |").rsplit("|", 1)[1].strip()
             for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Scope")}
    assert table[("all traffic", "Error rate")] == "+5.00 pp"
    assert table[("all traffic", "Thumbs-up rate")] == "too few thumbs (12 before)"
    assert table[("all traffic", "Cost")] == "+100.0%"
    assert table[("search/query-rewrite", "Error rate")] == "partial previous period"
    assert table[("support-bot/answer", "Requests")] == "new"
    for r in rows:  # every change cell is the rule's own text
        name = "all traffic" if r.is_total else f"{r.service}/{r.feature}"
        for key, label, unit in incidents.SLI_TABLE:
            if (name, label) in table:
                assert table[(name, label)] == compare.row_change(r, key, unit).text
    # The impact section does not quote a figure the rule would not compare with.
    assert "a week before +" not in md and "(a week before $1.00)" in md
    rows[0].first_seen = PREV + HOUR
    md = incidents.as_markdown(_report(rows))
    assert "(a week before partial previous period)" in md and "a week before partial previous period)." in md
    csv_text = incidents.as_csv(_report(rows))
    assert "sli,all,all,error_rate,0.1,0.05,partial previous period" in csv_text
    assert incidents.as_json(_report(rows))["slis"][2]["changes"]["requests"] == "new"


# -- formatters ------------------------------------------------------------------------------
@pytest.mark.parametrize("value,text", [
    (None, "–"), (float("nan"), "–"), (0, "$0.00"), (0.0, "$0.00"), (3.1e-05, "$0.000031"), (-3.1e-05, "-$0.000031"),
    (3.14159e-05, "$0.0000314"), (1e-12, "$0.000000000001"), (0.0123456, "$0.0123"), (0.5, "$0.50"),
    (0.999, "$0.999"), (0.9996, "$1.00"), (1, "$1.00"), (12.4, "$12.40"), (-12.4, "-$12.40"), (999.99, "$999.99"),
    (1234.4, "$1,234"), (999_999.4, "$999,999"), (1_234_567, "$1.2M"), (2.5e9, "$2.5B"),
])
def test_money_keeps_significant_digits(value, text):
    assert money(value) == text
    assert fmt(value, "usd") == text


@pytest.mark.parametrize("value,short,full", [
    (None, "–", "–"), (0, "0", "0"), (7, "7", "7"), (999, "999", "999"), (1000, "1k", "1,000"),
    (1234, "1.2k", "1,234"), (120_812, "120.8k", "120,812"), (999_949, "1M", "999,949"),
    (1_234_567, "1.2M", "1,234,567"), (-120_812, "-120.8k", "-120,812"), (3.2e9, "3.2B", "3,200,000,000"),
    (7284.0, "7.3k", "7,284"),
])
def test_counts_abbreviate_only_when_short(value, short, full):
    assert count(value, short=True) == short and fmt(value, "count", short=True) == short
    assert count(value) == full and fmt(value, "count") == full


def test_exact_values_for_titles_and_other_units():
    assert exact(120_812, "count") == "120,812" and exact(None, "count") == ""
    assert exact(3.1234567e-05, "usd") == "$0.0000312346" and exact(1234.5, "usd") == "$1,234.50"
    assert exact(-0.5, "usd") == "-$0.50" and exact(0.123456, "pct") == "12.3456%"
    assert fmt(0.1234, "pct") == "12.34%" and fmt(1234.4, "ms") == "1,234 ms" and fmt(1.5, "x") == "1.5×"
    assert fmt(None, "pct") == "–"


# -- the worst value of a column -----------------------------------------------------------------
def test_worst_follows_the_better_direction_and_skips_what_cannot_be_told_apart():
    assert worst([0.9, 0.7, None, 0.8], True) == 1
    assert worst([0.01, 0.07, None, 0.02], False) == 1
    assert worst([0.5, None], False) is None  # one value: nothing to compare with
    assert worst([0.5, 0.5, 0.5], False) is None  # all equal
    assert worst([10, 20], None) is None  # no better direction (requests)
    assert worst([0, 0, 3], False) == 2 and worst([0, 0], False) is None


def test_docs_state_the_rule_and_its_minimums():
    from pathlib import Path
    doc = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    section = doc.split("## Changes against a previous period", 1)[1].split("\n## ", 1)[0]
    for words in (compare.NEW, compare.PARTIAL, "too few"):
        assert f"`{words}" in section
    minimums = {int(m) for m in re.findall(r"^\|[^|]+\|[^|]+\| (\d+) \|$", section, flags=re.M)}
    assert minimums == {m for _, m, _ in compare.DENOMINATORS.values()}
    assert compare.COVERAGE_TOLERANCE == HOUR and "first hour" in section
