import numpy as np
import pytest
from scipy import signal

from telemetry_lab.spectral import WelchAccumulator, dominant_frequency


def feed(x, fs, chunk, **kw):
    acc = WelchAccumulator(fs, **kw)
    for i in range(0, len(x), chunk):
        acc.update(x[i:i + chunk])
    return acc


@pytest.mark.parametrize("chunk", [1000, 8192, 9999, 100_000])
@pytest.mark.parametrize("overlap", [0.5, 0.0, 0.75])
def test_chunked_welch_equals_scipy_whole_signal(chunk, overlap):
    rng = np.random.default_rng(0)
    fs = 1000.0
    t = np.arange(60_013) / fs
    x = 2 * np.sin(2 * np.pi * 37.5 * t) + rng.normal(0, 1, len(t)) + 3.0
    nperseg = 4096
    f_ref, p_ref = signal.welch(x, fs=fs, nperseg=nperseg, noverlap=int(nperseg * overlap))
    acc = feed(x, fs, chunk, nperseg=nperseg, overlap=overlap)
    f, p = acc.result()
    np.testing.assert_array_equal(f, f_ref)
    np.testing.assert_allclose(p, p_ref, rtol=1e-10)
    hz, share = dominant_frequency(f, p)
    assert abs(hz - 37.5) <= fs / nperseg
    assert 0 < share <= 1


def test_signal_shorter_than_a_segment_gets_one_segment_like_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=3000)
    with pytest.warns(UserWarning):
        f_ref, p_ref = signal.welch(x, fs=1000, nperseg=8192)
    acc = feed(x, 1000, 700, nperseg=8192)
    f, p = acc.result()
    np.testing.assert_allclose(p, p_ref, rtol=1e-10)
    assert acc.nperseg == 3000 and acc.segments == 1


@pytest.mark.parametrize("missing", [np.nan, np.inf, -np.inf])
def test_segments_with_missing_samples_are_skipped_not_propagated(missing):
    rng = np.random.default_rng(2)
    x = rng.normal(size=40_000)
    x[10_000] = missing
    acc = feed(x, 1000, 5000, nperseg=4096)
    f, p = acc.result()
    assert np.isfinite(p).all()
    assert acc.skipped_segments == 2  # 50% overlap: the sample sits in two segments
    assert acc.segments == (40_000 - 4096) // 2048 + 1 - 2


def test_dominant_frequency_ignores_dc():
    f = np.array([0.0, 1.0, 2.0, 3.0])
    p = np.array([100.0, 1.0, 5.0, 2.0])
    assert dominant_frequency(f, p) == (2.0, 5.0 / 8.0)
