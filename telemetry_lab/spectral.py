"""Welch power spectral density, accumulated over chunks.

:class:`WelchAccumulator` fed a signal piece by piece gives the PSD that
``scipy.signal.welch`` gives for the whole signal (mean averaging, constant detrend,
density scaling, one-sided): it computes the same segments, keeps their sum, and carries
the partial segment at each chunk's end to the next chunk. Segments that contain a
missing (NaN) sample are left out of the average and counted.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import signal

from . import _kernels
from .scratch import Workspace


def dominant_frequency(freqs: np.ndarray, psd: np.ndarray) -> tuple[float, float]:
    """Frequency of the strongest non-DC bin (Hz) and its share of the non-DC power."""
    if len(psd) < 2 or not np.isfinite(psd).all():
        return float("nan"), float("nan")
    k = 1 + int(np.argmax(psd[1:]))
    total = float(psd[1:].sum())
    return float(freqs[k]), (float(psd[k]) / total if total > 0 else 0.0)


@functools.lru_cache(maxsize=16)
def _taper(window: str, nperseg: int) -> np.ndarray:
    """The taper (read-only; cached: every channel of every file asks for the same few)."""
    win = signal.get_window(window, nperseg)
    win.flags.writeable = False
    return win


class WelchAccumulator:
    """Streaming Welch PSD of one channel.

    Parameters
    ----------
    fs : float
        Sample rate, Hz.
    nperseg : int
        Segment length, samples. A signal shorter than this gets one segment of its own
        length, as ``scipy.signal.welch`` does.
    overlap : float
        Fraction of a segment shared with the next.
    window : str
        Taper name understood by ``scipy.signal.get_window``.
    """

    def __init__(self, fs: float, *, nperseg: int, overlap: float = 0.5, window: str = "hann"):
        self.fs = float(fs)
        self.nperseg = int(nperseg)
        self.noverlap = int(nperseg * overlap)
        self.step = self.nperseg - self.noverlap
        self.window = window
        self.segments = 0
        self.skipped_segments = 0
        self._carry = np.empty(0)
        self._sum: np.ndarray | None = None
        self._ws = Workspace()
        self._setup(self.nperseg)

    def _setup(self, nperseg: int) -> None:
        self._win = _taper(self.window, nperseg)
        self._scale = 1.0 / (self.fs * float((self._win * self._win).sum()))
        self.freqs = np.fft.rfftfreq(nperseg, 1.0 / self.fs)

    def update(self, x: np.ndarray, *, ws: Workspace | None = None) -> None:
        """Add the next samples (1-D).

        ``ws``: scratch buffers to use instead of the accumulator's own, shared by the
        channels one thread analyses (they then stay in its cache).
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"WelchAccumulator takes one channel (1-D), not shape {x.shape}")
        n = len(self._carry) + len(x)
        n_seg = 0 if n < self.nperseg else (n - self.nperseg) // self.step + 1
        if n_seg:
            self._add(self._carry, x, n_seg, ws or self._ws)
        # What no whole segment used yet: the tail of carry ++ x, shorter than a segment.
        used = n_seg * self.step
        if used >= len(self._carry):
            self._carry = x[used - len(self._carry):].copy()
        else:
            self._carry = np.concatenate([self._carry[used:], x])

    def _add(self, carry: np.ndarray, x: np.ndarray, n_seg: int, ws: Workspace) -> None:
        """Add the power of the first ``n_seg`` segments of ``carry ++ x``."""
        bins = self.nperseg // 2 + 1
        tapered = ws.get("welch_tapered", n_seg * self.nperseg).reshape(n_seg, self.nperseg)
        means = ws.get("welch_means", n_seg)
        _kernels.taper_segments(carry, x, self.step, self._win, tapered, means)
        # numpy's pocketfft (scipy.fft's own, the same transform) writes into a buffer
        # given to it: no fresh megabyte of spectrum per chunk and channel.
        spec = np.fft.rfft(tapered, axis=-1,
                           out=ws.get("welch_spectrum", n_seg * bins, np.complex128).reshape(n_seg, bins))
        bad = np.isnan(means)  # a NaN anywhere in a segment makes its mean NaN
        if bad.any():
            spec[bad] = 0.0
        # |X|^2 summed over segments as one dot product per column of the interleaved
        # real/imaginary parts; the pairs are added in result().
        flat = spec.view(np.float64)
        part = np.einsum("sk,sk->k", flat, flat)
        if self._sum is None:
            self._sum = part
        else:
            self._sum += part
        skipped = int(bad.sum())
        self.segments += n_seg - skipped
        self.skipped_segments += skipped

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Frequencies (Hz) and PSD (units**2/Hz), NaN when no segment was usable."""
        if self._sum is None and len(self._carry) >= 2:
            # Shorter than one segment: one segment as long as the signal.
            self.nperseg = self.step = len(self._carry)
            self._setup(self.nperseg)
            self._add(self._carry, np.empty(0), 1, self._ws)
        if self._sum is None or not self.segments:
            return self.freqs, np.full(self.freqs.shape, np.nan)
        power = self._sum[0::2] + self._sum[1::2]
        psd = power * (self._scale / self.segments)
        if self.nperseg % 2:
            psd[1:] *= 2
        else:
            psd[1:-1] *= 2
        return self.freqs, psd
