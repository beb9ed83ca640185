"""Inhibition (Alertmanager's ``inhibit/``): a firing alert that matches a rule's source mutes the alerts
that match its target and carry the same values of its ``equal`` labels (a page mutes its own ticket)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from monitor.foundation.matchers import Matcher, match_all, parse_all


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


def inhibit_rules(config) -> list[InhibitRule]:
    return [InhibitRule(tuple(parse_all(r.source_matchers)), tuple(parse_all(r.target_matchers)), tuple(r.equal))
            for r in config.alerts.inhibit_rules]


class Inhibitor:
    """A Muter over the alerts firing now: ``mutes(labels)`` when one of them inhibits an alert with ``labels``."""

    def __init__(self, rules: list[InhibitRule], firing: list[Mapping[str, str]]):
        self.rules = rules
        self.firing = firing

    def mutes(self, labels: Mapping[str, str]) -> bool:
        for rule in self.rules:
            if not match_all(rule.target, labels):
                continue
            for source in self.firing:
                if source != labels and match_all(rule.source, source) and all(
                        source.get(k, "") == labels.get(k, "") for k in rule.equal):
                    return True
        return False
