"""Per-channel summary statistics accumulated over chunks (Chan et al.'s parallel update)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class RunningStats:
    """Count, missing count, min, max, mean and population standard deviation.

    Feeding a signal in pieces gives the same result (to rounding) as the whole signal.
    NaN samples are counted in :attr:`missing` and otherwise ignored.
    """

    count: int = 0
    missing: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: np.ndarray) -> None:
        total = float(x.sum())
        if np.isnan(total):  # the sum is needed anyway, and tells whether NaN is present
            nan = np.isnan(x)
            self.missing += int(nan.sum())
            x = x[~nan]
            total = float(x.sum())
        n = len(x)
        if n == 0:
            return
        mean = total / n
        d = x - mean
        m2 = float(np.dot(d, d))
        self.minimum = min(self.minimum, float(x.min()))
        self.maximum = max(self.maximum, float(x.max()))
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else math.nan

    def to_dict(self) -> dict:
        if not self.count:
            return {"count": 0, "missing": self.missing, "min": None, "max": None,
                    "mean": None, "std": None}
        return {
            "count": self.count,
            "missing": self.missing,
            "min": self.minimum,
            "max": self.maximum,
            "mean": self.mean,
            "std": self.std,
        }
