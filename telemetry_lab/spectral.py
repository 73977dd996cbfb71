"""Welch power spectral density, accumulated over chunks.

:class:`WelchAccumulator` fed a signal piece by piece gives the PSD that
``scipy.signal.welch`` gives for the whole signal (mean averaging, constant detrend,
density scaling): it computes the same segments, keeps their sum, and carries the partial
segment at each chunk's end to the next chunk. Segments that contain a missing (NaN)
sample are left out of the average and counted.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def dominant_frequency(freqs: np.ndarray, psd: np.ndarray) -> tuple[float, float]:
    """Frequency of the strongest non-DC bin (Hz) and its share of the non-DC power."""
    if len(psd) < 2:
        return float("nan"), float("nan")
    k = 1 + int(np.argmax(psd[1:]))
    total = float(psd[1:].sum())
    return float(freqs[k]), (float(psd[k]) / total if total > 0 else 0.0)


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
        self._carry = np.empty(0)
        self._sum: np.ndarray | None = None
        self.segments = 0
        self.skipped_segments = 0
        self.freqs: np.ndarray | None = None

    def _segments_psd(self, x: np.ndarray, nperseg: int, noverlap: int):
        freqs, _, sxx = signal.spectrogram(
            x, fs=self.fs, window=self.window, nperseg=nperseg, noverlap=noverlap,
            detrend="constant", scaling="density", mode="psd",
        )
        return freqs, sxx

    def update(self, x: np.ndarray) -> None:
        buf = np.concatenate([self._carry, x]) if len(self._carry) else np.asarray(x, float)
        n_seg = 0 if len(buf) < self.nperseg else (len(buf) - self.nperseg) // self.step + 1
        if n_seg:
            usable = buf[: (n_seg - 1) * self.step + self.nperseg]
            self._add(*self._segments_psd(usable, self.nperseg, self.noverlap))
        self._carry = buf[n_seg * self.step:].copy()

    def _add(self, freqs: np.ndarray, sxx: np.ndarray) -> None:
        bad = np.isnan(sxx).any(axis=0)
        self.skipped_segments += int(bad.sum())
        good = sxx[:, ~bad]
        self.segments += good.shape[1]
        self.freqs = freqs
        part = good.sum(axis=1)
        self._sum = part if self._sum is None else self._sum + part

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Frequencies (Hz) and PSD (units**2/Hz). Empty arrays if no usable segment."""
        if self.segments == 0 and self.skipped_segments == 0 and len(self._carry) >= 2:
            # Shorter than one segment: one segment as long as the signal.
            n = len(self._carry)
            self.nperseg = n
            self._add(*self._segments_psd(self._carry, n, 0))
        if self.segments == 0:
            return np.empty(0), np.empty(0)
        return self.freqs, self._sum / self.segments
