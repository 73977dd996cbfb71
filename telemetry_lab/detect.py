"""Rolling z-score anomaly detection: a pure array core plus a streaming event builder.

The ``zscore`` detector is the original method, exactly: a centred window of ``W`` samples
with zeros outside the signal, as ``numpy.convolve(x, numpy.ones(W) / W, mode="same")``
gives; the rolling variance is the same rolling mean applied to ``(x - mean) ** 2``;
``z = |x - mean| / sqrt(max(var, floor))``. It costs O(N) per channel, not O(N * W): one
pass of running sums in compiled code (``_kernels.c``).

Missing samples (NaN) are never flagged and never enter a window: a window's mean and
variance are taken over its valid samples and scaled by its in-signal fraction, which is
the zero-padded definition above whenever nothing is missing.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from . import _kernels
from .scratch import Workspace


def _signal_rows(x, lo: int, hi: int | None, variance_floor: float) -> tuple[np.ndarray, int]:
    """The signal as contiguous float64 and the end of the rows to score, both checked
    (what the compiled scans need of every caller)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be one signal (1-D), not shape {x.shape}")
    n = len(x)
    hi = n if hi is None else hi
    if not 0 <= lo <= hi <= n:
        raise ValueError(f"rows [{lo}, {hi}) are not inside a signal of {n} samples")
    if not variance_floor > 0:
        raise ValueError(f"variance_floor={variance_floor!r} must be > 0")
    return x, hi


def seed_scan(x: np.ndarray, window: int, threshold: float, *, lo: int = 0, hi: int | None = None,
              variance_floor: float = 1e-9, keep_series: bool = False, ws: Workspace | None = None):
    """Samples of ``x[lo:hi]`` whose centred rolling z-score exceeds ``threshold``.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Samples, any unit; NaN marks a missing sample. Rows outside ``[lo, hi)`` are
        context: they enter the windows but are not scored.
    window : int
        Window length, samples. The window at ``i`` covers
        ``[i - window // 2, i + (window - 1) // 2]``, the alignment of
        ``numpy.convolve(..., mode="same")``, with zeros outside ``x``.
    threshold : float
        A sample is flagged where ``|x - mean| / sqrt(var) > threshold``.
    lo, hi : int
        The rows to score (default: all).
    variance_floor : float
        Lower bound of the variance, squared units of ``x``.
    keep_series : bool
        Also return the rolling mean and variance over ``[lo, hi)``.
    ws : Workspace, optional
        Scratch buffers; the returned arrays are views into it, valid until its next use.

    Returns
    -------
    idx : ndarray of int
        Flagged rows, counted from ``lo``, ascending.
    z : ndarray
        Their z-scores.
    mean, var : ndarray or None
        Rolling mean (units of ``x``) and floored rolling variance over ``[lo, hi)``, if
        ``keep_series``.
    """
    x, hi = _signal_rows(x, lo, hi, variance_floor)
    n = len(x)
    if not 1 <= window <= max(n, 1):
        raise ValueError(f"window={window!r} must be from 1 to the signal's {n} samples")
    if not threshold >= 0:
        raise ValueError(f"threshold={threshold!r} must be >= 0")
    ws = ws or Workspace()
    rows = hi - lo
    idx, z = ws.get("idx", rows, np.int64), ws.get("z", rows)
    mean = ws.get("mean", rows) if keep_series else ws.get("mean", 0)
    var = ws.get("var", rows) if keep_series else ws.get("var", 0)
    # Ring buffers of the last `window` means, fill factors and squared deviations (see
    # zscore_scan in _kernels.c for their size).
    scratch = ws.get("scratch", 5 * ((1 << int(window + 8).bit_length()) + 8))
    count = _kernels.zscore_scan(x, int(window), lo, hi, float(threshold) ** 2,
                                 float(variance_floor), scratch, idx, z, mean, var)
    series = (mean, var) if keep_series else (None, None)
    return idx[:count], z[:count], *series


def rolling_mean_std(x: np.ndarray, window: int, *, variance_floor: float = 1e-9):
    """Centred rolling mean and standard deviation with zeros outside ``x`` (new arrays)."""
    _, _, mean, var = seed_scan(x, window, np.inf, variance_floor=variance_floor, keep_series=True)
    return mean.copy(), np.sqrt(var)


def zscore(x: np.ndarray, window: int, *, variance_floor: float = 1e-9):
    """``|x - rolling mean| / rolling std`` and the two rolling series; NaN where x is NaN."""
    mean, std = rolling_mean_std(x, window, variance_floor=variance_floor)
    return np.abs(np.asarray(x, dtype=np.float64) - mean) / std, mean, std


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


#: Below this many flagged samples a Python loop groups them faster than numpy calls.
_LOOP_BELOW = 64


def _flagged_groups(idx: np.ndarray, z: np.ndarray, gap: int) -> tuple[list, list, list]:
    """Groups of flagged samples no more than ``gap`` unflagged samples apart.

    ``idx`` ascending, ``z`` their scores (never NaN). Returns three lists, one entry per
    group: its first and last position in ``idx``, and its peak score.
    """
    if len(idx) < _LOOP_BELOW:
        rows, scores = idx.tolist(), z.tolist()
        firsts, lasts, peaks = [0], [], [scores[0]]
        for j in range(1, len(rows)):
            if rows[j] - rows[j - 1] - 1 > gap:
                lasts.append(j - 1)
                firsts.append(j)
                peaks.append(scores[j])
            elif scores[j] > peaks[-1]:
                peaks[-1] = scores[j]
        lasts.append(len(rows) - 1)
        return firsts, lasts, peaks
    first = np.concatenate(([0], np.flatnonzero(np.diff(idx) - 1 > gap) + 1))
    last = np.append(first[1:], len(idx)) - 1
    return first.tolist(), last.tolist(), np.maximum.reduceat(z, first).tolist()


@dataclass
class EventBuilder:
    """Collapses flagged samples of one channel into events, chunk by chunk.

    Feed it consecutive stretches of the channel; runs that cross a stretch border are
    joined, runs separated by at most ``merge_gap`` unflagged samples are merged, events
    shorter than ``min_samples`` or whose peak z does not exceed ``min_peak_z`` are dropped
    (hysteresis: flag at a low threshold, keep events that reach the high one), and only
    the ``keep`` strongest events (by peak z) are kept, while :attr:`count` counts them all.
    """

    channel: str
    min_samples: int = 1
    merge_gap: int = 0
    keep: int = 1000
    min_peak_z: float = -np.inf
    count: int = 0
    _open: Event | None = None
    _heap: list = field(default_factory=list)
    _seq: int = 0

    def feed(self, mask: np.ndarray, z: np.ndarray, x: np.ndarray, timestamps: np.ndarray,
             offset: int) -> None:
        """Add a stretch starting at sample ``offset``, given its full mask and z."""
        idx = np.flatnonzero(mask)
        self.feed_flagged(idx, z[idx], x, timestamps, offset)

    def feed_flagged(self, idx: np.ndarray, z: np.ndarray, x: np.ndarray,
                     timestamps: np.ndarray, offset: int) -> None:
        """Add a stretch starting at sample ``offset``, given only its flagged samples:
        their indices ``idx`` (sorted, relative to the stretch) and z-scores ``z``."""
        if len(idx) == 0:
            return
        n = len(x)
        for a, b, peak in zip(*_flagged_groups(idx, z, self.merge_gap)):
            s, e = int(idx[a]), int(idx[b])
            # Groups near a border may join events of the neighbouring stretch: keep them.
            if peak > self.min_peak_z or s <= self.merge_gap or e >= n - 1 - self.merge_gap:
                p = int(idx[a + int(np.argmax(z[a:b + 1]))])
                self._add(Event(self.channel, offset + s, offset + e, int(timestamps[s]),
                                int(timestamps[e]), peak, float(x[p]), offset + p))

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
        if ev is None or ev.samples < self.min_samples or not ev.peak_z > self.min_peak_z:
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


# -- the robust detector -----------------------------------------------------------------

def robust_zscore(x: np.ndarray, *, window: int, guard: int, short: int, energy: bool,
                  variance_floor: float = 1e-9, min_reference: int = 30, lo: int = 0,
                  hi: int | None = None, ws: Workspace | None = None):
    """Anomaly score of every sample against a trailing, guarded reference window.

    Each sample ``i`` is compared with the reference ``[i - guard - window, i - guard)``:
    samples before it, kept ``guard`` samples away so that an anomaly does not enter its
    own baseline until it has lasted that long. Two statistics, the larger wins:

    * per sample: ``|x[i] - mean_ref| / scale_ref``;
    * short mean: the mean over the centred ``short`` samples around ``i`` against the
      reference mean, in units of the scale of such a mean. It finds level shifts far below
      the per-sample threshold, since averaging ``short`` samples divides noise by
      ``sqrt(short)``.

    ``energy=False`` (slow channels): the scale is the noise level estimated from first
    differences, ``sqrt(mean(diff(x)**2) / 2)``, which drifts, trends and ramps in the
    reference do not inflate; the short-mean scale is ``scale / sqrt(short)``.
    ``energy=True`` (vibration): a periodic signal is not noise, so the per-sample scale is
    the reference standard deviation, and the short statistic is the variance over the
    short window (vibration energy) against its own reference mean and standard deviation.
    A third statistic finds spikes on top of the vibration: the residual of predicting each
    sample from its neighbours, ``x[i] - (x[i-1] + x[i+1]) / 2``, against its reference RMS.

    Missing samples (NaN) are left out of every sum and get a score of 0. Samples with
    fewer than ``min_reference`` valid reference samples (the start of a file) score 0.
    Cost: one pass of running sums in C (``_kernels.c``), O(N).

    Parameters
    ----------
    x : ndarray, shape (n,)
        Samples, any unit.
    window, guard, short : int
        Reference length, guard gap and short-mean length, samples.
    energy : bool
        Use the vibration statistics (see above).
    variance_floor : float
        Lower bound of every variance, squared units of ``x`` (``x**2`` for energy).
    min_reference : int
        Fewest valid reference samples needed to score a sample.
    lo, hi : int
        The rows to score (default: all); the others are context.
    ws : Workspace, optional
        Scratch buffers; the returned arrays are views into it, valid until its next use.

    Returns
    -------
    z : ndarray, shape (hi - lo,)
        The score.
    center, scale : ndarray, shape (hi - lo,)
        Reference mean and per-sample scale (units of ``x``), for plotting the band
        ``center +/- threshold * scale``.
    """
    x, hi = _signal_rows(x, lo, hi, variance_floor)
    n = len(x)
    ws = ws or Workspace()
    rows = hi - lo
    z, center, scale = (ws.get(name, rows) for name in ("z", "center", "scale"))
    _kernels.robust_scan(x, int(window), int(guard), int(short), bool(energy),
                         float(variance_floor), int(min_reference), lo, hi,
                         ws.get("robust_scratch", 8 * (n + 1)), z, center, scale)
    return z, center, scale
