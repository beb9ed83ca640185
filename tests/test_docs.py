"""docs/events.md documents every field the validator knows, and nothing it doesn't."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.foundation import events

DOC = (Path(__file__).resolve().parent.parent / "docs" / "events.md").read_text()


def documented(section: str) -> set[str]:
    body = DOC.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.M))


@pytest.mark.fast
def test_request_fields_are_documented():
    assert documented("Request event") == set(events.field_names("requests"))


@pytest.mark.fast
def test_feedback_fields_are_documented():
    assert documented("Feedback event") == set(events.field_names("feedback"))


@pytest.mark.fast
def test_statuses_and_kinds_are_documented():
    for value in events.STATUSES + events.FEEDBACK_KINDS + events.HALLUCINATION_LABELS:
        assert f"`{value}`" in DOC


@pytest.mark.fast
def test_every_metric_is_documented():
    from monitor.foundation.metrics import METRICS
    doc = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", doc, flags=re.M))
    assert set(METRICS) <= listed, set(METRICS) - listed


def test_every_sql_statement_in_the_deploy_guide_parses(make_config, make_store):
    """The guide's SQL is copied into a real cluster's shell: the real engine's parser reads each statement."""
    store = make_store(make_config(), upgrade=False)
    text = (Path(__file__).parent.parent / "docs" / "deploy.md").read_text()
    statements = [s.strip() for block in re.findall(r"```sql\n(.*?)```", text, re.S)
                  for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()]
    assert len(statements) >= 5
    for sql in statements:
        assert store.scalar("SELECT formatQuery({q:String})", {"q": sql}), sql
