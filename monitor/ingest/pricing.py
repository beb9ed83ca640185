"""Cost of a request from the price table in config, for events that carry no ``cost_usd``."""
from __future__ import annotations

import bisect
import datetime as dt
import re
from collections import defaultdict

from monitor.foundation.config import Price


# A provider's dated snapshot of a model (gpt-4o-2024-08-06, claude-3-5-sonnet-20241022): priced as the model.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


class PriceTable:
    """Per model, the prices in force from each ``effective_from`` date on."""

    def __init__(self, prices: list[Price]):
        by_model: dict[str, list[Price]] = defaultdict(list)
        for p in prices:
            by_model[p.model].append(p)
        self._dates = {}
        self._prices = {}
        for model, rows in by_model.items():
            rows.sort(key=lambda p: p.effective_from)
            self._dates[model] = [p.effective_from for p in rows]
            self._prices[model] = rows

    def price(self, model: str, day: dt.date) -> Price | None:
        dates = self._dates.get(model)
        if not dates:
            base = _SNAPSHOT.sub("", model)
            if base == model or base not in self._dates:
                return None
            model, dates = base, self._dates[base]
        i = bisect.bisect_right(dates, day) - 1
        return self._prices[model][i] if i >= 0 else None

    def cost(self, model: str, day: dt.date, input_tokens: int, output_tokens: int,
             cached_input_tokens: int = 0) -> float | None:
        """USD, or None when no price is in force for the model on that day."""
        p = self.price(model, day)
        if p is None:
            return None
        cached_price = p.cached_input_per_mtok if p.cached_input_per_mtok is not None else p.input_per_mtok
        uncached = max(input_tokens - cached_input_tokens, 0)
        return (uncached * p.input_per_mtok + cached_input_tokens * cached_price
                + output_tokens * p.output_per_mtok) / 1_000_000
