"""Per-channel summary statistics accumulated over chunks (Chan et al.'s parallel update)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _kernels


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
        """Add the samples of ``x`` (1-D, real; NaN marks a missing sample)."""
        x = np.asarray(x)
        if x.ndim != 1 or x.dtype.kind == "c":
            raise ValueError(f"RunningStats takes one real channel (1-D), not {x.dtype} of "
                             f"shape {x.shape}")
        n, missing, lo, hi, mean, m2 = _kernels.moments(np.ascontiguousarray(x, dtype=np.float64))
        self.missing += missing
        if n == 0:
            return
        self.minimum = min(self.minimum, lo)
        self.maximum = max(self.maximum, hi)
        if self.count == 0:  # nothing to merge with (and inf * 0 would make NaN)
            self.count, self.mean, self.m2 = n, mean, m2
            return
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
