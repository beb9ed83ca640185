"""Which alerts belong to a view filtered by service or feature: the one rule every page and export uses.

An alert belongs when each filtered label it carries has the filtered value. An alert
without the label (TrafficStopped names a service but no feature; JobStalled and the
SLO of a whole service name less) is about more than one service or feature, so it
belongs to every view: an on-call filtering by their service still sees it.
"""
from __future__ import annotations

from typing import Mapping

SCOPE_LABELS = ("service", "feature")


def in_scope(labels: Mapping[str, str], filters: Mapping[str, str | None],
             keys: tuple[str, ...] = SCOPE_LABELS) -> bool:
    """``keys``: the filtered labels that decide; a view filtered by a segment adds its dimension (an alert
    of a rule ``by: [service, feature, language]`` names one language)."""
    return all(not filters.get(k) or not labels.get(k) or labels[k] == filters[k] for k in keys)
