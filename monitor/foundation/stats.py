"""Statistics the jobs and the pages share, so a figure is computed one way wherever it is shown."""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def ratio(num: float, den: float) -> float | None:
    """num / den, or None without a denominator: "no data" is not 0%."""
    return num / den if den else None


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
