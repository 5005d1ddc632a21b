"""Small statistics helpers for the bench (no numpy: the bench runs anywhere pyexec does).

Every helper takes plain lists of floats (seconds unless said otherwise) and
returns plain values, so results serialise straight into JSON.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, TypeVar

__all__ = ["percentile", "median", "summarize", "ratio", "rotation", "rate", "fmt_ms", "fmt_ratio"]

T = TypeVar("T")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between the
    two nearest ranks (numpy's default, "linear"). ValueError when empty."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0..100")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """n, median, p95, mean, min and max of ``values`` (same unit as the input)."""
    if not values:
        raise ValueError("summary of no values")
    return {"n": len(values), "median": median(values), "p95": percentile(values, 95),
            "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def ratio(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    """value / reference, or None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def rotation(items: Sequence[T], round_index: int) -> List[T]:
    """The order of ``items`` in round ``round_index``: a balanced Latin square
    (Williams design). Over one period (len(items) rounds, twice that for an
    odd count) every item runs in every position equally often and directly
    after every other item equally often, so what ran just before (a cgroup
    being torn down, a cold cache, crun's bimodal latency) weighs on every tool
    alike; a plain cyclic rotation would always give each tool the same
    predecessor."""
    k = len(items)
    if k == 0:
        return []
    first, low, high = [0], 1, k - 1
    while len(first) < k:  # 0, 1, k-1, 2, k-2, ...
        if len(first) % 2:
            first.append(low)
            low += 1
        else:
            first.append(high)
            high -= 1
    period = k if k % 2 == 0 else 2 * k
    r = round_index % period
    order = [(i + r) % k for i in first]
    if r >= k:  # odd k: the second half of the period runs the rows reversed
        order.reverse()
    return [items[i] for i in order]


def rate(count: int, seconds: float) -> float:
    """Events per second."""
    if seconds <= 0:
        raise ValueError("rate over a non-positive time")
    return count / seconds


def fmt_ms(seconds: Optional[float], digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.{digits}f}"


def fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}x"
