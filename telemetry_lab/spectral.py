"""Welch power spectral density, accumulated over chunks.

:class:`WelchAccumulator` fed a signal piece by piece gives the PSD that
``scipy.signal.welch`` gives for the whole signal (mean averaging, constant detrend,
density scaling, one-sided): it computes the same segments, keeps their sum, and carries
the partial segment at each chunk's end to the next chunk. It takes several channels at
once (shape ``(channels, n)``) so that one batched FFT serves them all. Segments that
contain a missing (NaN) sample are left out of that channel's average and counted.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sp_fft
from scipy import signal


def dominant_frequency(freqs: np.ndarray, psd: np.ndarray) -> tuple[float, float]:
    """Frequency of the strongest non-DC bin (Hz) and its share of the non-DC power."""
    if len(psd) < 2 or not np.isfinite(psd).all():
        return float("nan"), float("nan")
    k = 1 + int(np.argmax(psd[1:]))
    total = float(psd[1:].sum())
    return float(freqs[k]), (float(psd[k]) / total if total > 0 else 0.0)


@functools.lru_cache(maxsize=16)
def _taper(window: str, nperseg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The taper, and the bins where its spectrum is not zero with their values.

    Detrending is subtracting each segment's mean m before the taper w; the FFT is linear,
    so FFT((x - m) w) = FFT(x w) - m FFT(w), and FFT(w) of the usual tapers is non-zero in
    a handful of bins only: correcting those replaces a pass over the data. Cached: every
    channel of every file asks for the same few (read-only arrays).
    """
    win = signal.get_window(window, nperseg)
    win_spec = np.fft.rfft(win)
    bins = np.flatnonzero(np.abs(win_spec) > 1e-12 * np.abs(win_spec).max())
    win_spec = win_spec[bins]
    for arr in (win, bins, win_spec):
        arr.flags.writeable = False
    return win, bins, win_spec


class WelchAccumulator:
    """Streaming Welch PSD of one channel or a stack of channels.

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
    workers : int
        Threads for the FFT; results do not depend on it.
    """

    def __init__(self, fs: float, *, nperseg: int, overlap: float = 0.5, window: str = "hann",
                 workers: int = 1):
        self.fs = float(fs)
        self.nperseg = int(nperseg)
        self.noverlap = int(nperseg * overlap)
        self.step = self.nperseg - self.noverlap
        self.window = window
        self.workers = workers
        self._carry: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | None = None
        self._skipped: np.ndarray | None = None
        self._tapered: np.ndarray | None = None
        self._setup(self.nperseg)

    def _setup(self, nperseg: int) -> None:
        self._win, self._win_bins, self._win_spec = _taper(self.window, nperseg)
        self._scale = 1.0 / (self.fs * float((self._win * self._win).sum()))
        self.freqs = sp_fft.rfftfreq(nperseg, 1.0 / self.fs)

    def _segments_power(self, segs: np.ndarray, means: np.ndarray) -> np.ndarray:
        """Unscaled two-sided |FFT|^2 of each detrended, tapered segment; (..., nseg, nfreq).

        Density scaling and the one-sided doubling are linear, so they are applied once
        to the sum in :meth:`result` instead of to every segment.
        """
        spec = self._spectra(segs, means)
        power = np.multiply(spec.real, spec.real)
        power += spec.imag * spec.imag
        return power

    def _spectra(self, segs: np.ndarray, means: np.ndarray) -> np.ndarray:
        tapered = self._buffer(segs.shape)
        np.multiply(segs, self._win, out=tapered)
        spec = sp_fft.rfft(tapered, axis=-1, workers=self.workers, overwrite_x=True)
        spec[..., self._win_bins] -= means[..., None] * self._win_spec
        return spec

    def _buffer(self, shape: tuple) -> np.ndarray:
        # The tapered segments of every chunk are the same size: one buffer, not a fresh
        # allocation (and its page faults) per chunk.
        size = int(np.prod(shape))
        if self._tapered is None or self._tapered.size < size:
            self._tapered = np.empty(size)
        return self._tapered[:size].reshape(shape)

    def _add(self, power: np.ndarray | None, bad: np.ndarray, part: np.ndarray | None = None) -> None:
        """Add segments' power (or their sum ``part``); ``bad`` marks segments to leave out."""
        nseg = bad.shape[-1]
        if part is None:
            part = (np.where(bad[..., None], 0.0, power) if bad.any() else power).sum(axis=-2)
        if self._sum is None:
            self._sum = part
            self._count = nseg - bad.sum(axis=-1)
            self._skipped = bad.sum(axis=-1)
        else:
            self._sum += part
            self._count += nseg - bad.sum(axis=-1)
            self._skipped += bad.sum(axis=-1)

    def _segment_means(self, buf: np.ndarray, n_seg: int) -> np.ndarray:
        """Mean of each segment, from sums of blocks of ``step`` samples when segments are
        whole blocks (the usual overlaps), else from one running sum."""
        span = (n_seg - 1) * self.step + self.nperseg
        if self.nperseg % self.step == 0:
            per = self.nperseg // self.step
            blocks = buf[..., :span].reshape(buf.shape[:-1] + (-1, self.step)).sum(axis=-1)
            sums = blocks[..., :n_seg].copy()
            for q in range(1, per):
                sums += blocks[..., q:q + n_seg]
        else:
            c = np.zeros(buf.shape[:-1] + (span + 1,))
            np.cumsum(buf[..., :span], axis=-1, out=c[..., 1:])
            starts = np.arange(n_seg) * self.step
            sums = c[..., starts + self.nperseg] - c[..., starts]
        return sums / self.nperseg

    def update(self, x: np.ndarray) -> None:
        """Add the next samples: shape ``(n,)`` or ``(channels, n)``."""
        x = np.asarray(x, dtype=np.float64)
        buf = x if self._carry is None or self._carry.shape[-1] == 0 else np.concatenate(
            [self._carry, x], axis=-1)
        n = buf.shape[-1]
        n_seg = 0 if n < self.nperseg else (n - self.nperseg) // self.step + 1
        if n_seg:
            view = np.lib.stride_tricks.sliding_window_view(buf, self.nperseg, axis=-1)
            segs = view[..., : (n_seg - 1) * self.step + 1: self.step, :]
            means = self._segment_means(buf, n_seg)
            bad = np.isnan(means)  # a NaN anywhere in a segment makes its mean NaN
            if bad.any():
                means = np.where(bad, 0.0, means)
                self._add(self._segments_power(segs, means), bad)
            else:
                # Sum |FFT|^2 over segments as dot products: no (segments x bins) temporaries.
                spec = self._spectra(segs, means)
                part = np.einsum("...sk,...sk->...k", spec.real, spec.real)
                part += np.einsum("...sk,...sk->...k", spec.imag, spec.imag)
                self._add(None, bad, part)
        self._carry = buf[..., n_seg * self.step:].copy()

    @property
    def segments(self):
        return self._count if self._count is not None else 0

    @property
    def skipped_segments(self):
        return self._skipped if self._skipped is not None else 0

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Frequencies (Hz) and PSD (units**2/Hz), NaN for a channel with no usable segment."""
        if self._sum is None and self._carry is not None and self._carry.shape[-1] >= 2:
            # Shorter than one segment: one segment as long as the signal.
            self.nperseg = self._carry.shape[-1]
            self._setup(self.nperseg)
            segs = self._carry[..., None, :]
            means = segs.mean(axis=-1)
            bad = np.isnan(means)
            self._add(self._segments_power(segs, np.where(bad, 0.0, means)), bad)
        if self._sum is None:
            return self.freqs, np.full(self.freqs.shape, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            psd = self._sum * self._scale / np.expand_dims(self._count, -1)
        if self.nperseg % 2:
            psd[..., 1:] *= 2
        else:
            psd[..., 1:-1] *= 2
        return self.freqs, psd
