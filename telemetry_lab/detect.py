"""Rolling z-score anomaly detection: a pure array core plus a streaming event builder.

The ``zscore`` detector is the original method, exactly: a centred window of ``W`` samples
with zeros outside the signal, as ``numpy.convolve(x, numpy.ones(W) / W, mode="same")``
gives; the rolling variance is the same rolling mean applied to ``(x - mean) ** 2``;
``z = |x - mean| / sqrt(max(var, floor))``. It costs O(N) per channel (running sums), not
O(N * W).

Missing samples (NaN) are never flagged and never enter a window: a window's mean and
variance are taken over its valid samples and scaled by its in-signal fraction, which is
the zero-padded definition above whenever nothing is missing.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np


def _window_sums(v: np.ndarray, window: int, pad_value: float = 0.0) -> np.ndarray:
    """Sum of ``v`` over the centred window at each sample, padded with ``pad_value``.

    The window at ``i`` covers ``[i - window // 2, i + (window - 1) // 2]``, the alignment
    of ``numpy.convolve(..., mode="same")``.
    """
    left, right = window // 2, (window - 1) // 2
    cs = np.empty(len(v) + window)
    cs[0] = 0.0
    body = cs[1:]
    body[:left] = pad_value
    body[left:left + len(v)] = v
    body[left + len(v):] = pad_value
    np.cumsum(body, out=body)
    return cs[window:] - cs[:-window]


def rolling_mean_std(x: np.ndarray, window: int, *, variance_floor: float = 1e-9):
    """Centred rolling mean and standard deviation with zeros outside ``x``.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Samples, any unit; NaN marks a missing sample.
    window : int
        Window length, samples.
    variance_floor : float
        Lower bound of the variance, squared units of ``x``.

    Returns
    -------
    mean, std : ndarray, shape (n,)
    """
    x = np.asarray(x, dtype=np.float64)
    missing = np.isnan(x)
    if not missing.any():
        # Subtracting an offset keeps the running sums small and exact; the zero padding
        # outside the signal becomes ``-offset`` in the shifted frame.
        offset = float(x[len(x) // 2]) if len(x) else 0.0
        mean = _window_sums(x - offset, window, -offset) / window + offset
        dev2 = np.square(x - mean)
        var = _window_sums(dev2, window) / window
    else:
        valid = ~missing
        offset = float(np.nanmedian(x)) if valid.any() else 0.0
        shifted = np.where(valid, x - offset, 0.0)
        n_valid = _window_sums(valid.astype(np.float64), window)
        n_inside = _window_sums(np.ones(len(x)), window)
        with np.errstate(invalid="ignore", divide="ignore"):
            fill = np.where(n_valid > 0, n_inside / n_valid, 0.0)
            mean = (_window_sums(shifted, window) + offset * n_valid) * fill / window
            dev2 = np.where(valid, np.square(x - mean), 0.0)
            var = _window_sums(dev2, window) * fill / window
    np.maximum(var, variance_floor, out=var)
    return mean, np.sqrt(var)


def zscore(x: np.ndarray, window: int, *, variance_floor: float = 1e-9):
    """``|x - rolling mean| / rolling std`` and the two rolling series; NaN where x is NaN."""
    mean, std = rolling_mean_std(x, window, variance_floor=variance_floor)
    z = np.abs(x - mean) / std
    return z, mean, std


@dataclass
class Event:
    """One anomaly event on one channel; ``start``/``end`` are sample indices, inclusive."""

    channel: str
    start: int
    end: int
    start_ns: int
    end_ns: int
    peak_z: float
    peak_value: float
    peak_index: int

    @property
    def samples(self) -> int:
        return self.end - self.start + 1

    def to_dict(self) -> dict:
        return {
            "channel": self.channel,
            "start_ns": int(self.start_ns),
            "end_ns": int(self.end_ns),
            "samples": int(self.samples),
            "peak_z": round(float(self.peak_z), 6),
            "peak_value": float(self.peak_value),
        }


def flagged_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) indices of the runs of True in ``mask``."""
    edges = np.diff(mask.view(np.int8), prepend=0, append=0)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


@dataclass
class EventBuilder:
    """Collapses flagged samples of one channel into events, chunk by chunk.

    Feed it consecutive stretches of the channel; runs that cross a stretch border are
    joined, runs separated by at most ``merge_gap`` unflagged samples are merged, events
    shorter than ``min_samples`` are dropped, and only the ``keep`` strongest events (by
    peak z) are kept, while :attr:`count` counts them all.
    """

    channel: str
    min_samples: int = 1
    merge_gap: int = 0
    keep: int = 1000
    count: int = 0
    _open: Event | None = None
    _heap: list = field(default_factory=list)
    _seq: int = 0

    def feed(self, mask: np.ndarray, z: np.ndarray, x: np.ndarray, timestamps: np.ndarray,
             offset: int) -> None:
        """Add a stretch starting at sample ``offset`` of the channel."""
        starts, stops = flagged_runs(mask)
        if len(starts) == 0:
            return
        # Peak of each run without a Python loop: max z per run, then its first position.
        zz = np.where(mask, z, -np.inf)
        bounds = np.empty(2 * len(starts), dtype=np.intp)
        bounds[0::2], bounds[1::2] = starts, stops
        peaks = np.maximum.reduceat(zz, bounds[bounds < len(zz)])[0::2]
        marker = np.zeros(len(mask), dtype=np.intp)
        marker[starts] = 1
        run_id = np.cumsum(marker) - 1
        at_peak = mask & (zz == peaks[np.clip(run_id, 0, None)])
        peak_pos = np.flatnonzero(at_peak)
        first_of_run = np.unique(run_id[peak_pos], return_index=True)[1]
        peak_pos = peak_pos[first_of_run]
        for s, e, p in zip(starts.tolist(), stops.tolist(), peak_pos.tolist()):
            self._add(Event(self.channel, offset + s, offset + e - 1, int(timestamps[s]),
                            int(timestamps[e - 1]), float(z[p]), float(x[p]), offset + p))

    def _add(self, ev: Event) -> None:
        cur = self._open
        if cur is not None and ev.start - cur.end - 1 <= self.merge_gap:
            cur.end, cur.end_ns = ev.end, ev.end_ns
            if ev.peak_z > cur.peak_z:
                cur.peak_z, cur.peak_value, cur.peak_index = ev.peak_z, ev.peak_value, ev.peak_index
            return
        self._close()
        self._open = ev

    def _close(self) -> None:
        ev, self._open = self._open, None
        if ev is None or ev.samples < self.min_samples:
            return
        self.count += 1
        self._seq += 1
        item = (ev.peak_z, -self._seq, ev)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def finish(self) -> list[Event]:
        """Close the last event; the kept events in time order."""
        self._close()
        return sorted((item[2] for item in self._heap), key=lambda e: e.start)
