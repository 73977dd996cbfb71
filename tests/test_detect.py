import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from telemetry_lab.detect import EventBuilder, flagged_runs, rolling_mean_std, seed_scan, zscore
from telemetry_lab.scratch import Workspace


def convolve_reference(x, window, threshold, floor=1e-9):
    """The original method, written directly with numpy.convolve (O(N*W))."""
    k = np.ones(window) / window
    mean = np.convolve(x, k, mode="same")
    var = np.convolve((x - mean) ** 2, k, mode="same")
    z = np.abs(x - mean) / np.sqrt(np.maximum(var, floor))
    flagged = z > threshold
    starts, stops = flagged_runs(flagged)
    return [(int(s), int(e - 1), float(z[s:e].max())) for s, e in zip(starts, stops)], z


def events_of(x, window, threshold, chunk=None):
    """Our detector, optionally fed in stretches, returned as (start, end, peak_z)."""
    z, _, _ = zscore(x, window)
    b = EventBuilder("c")
    ts = np.arange(len(x)) * 1000
    step = chunk or len(x)
    for i in range(0, len(x), step):
        sl = slice(i, i + step)
        b.feed(z[sl] > threshold, z[sl], x[sl], ts[sl], i)
    return [(e.start, e.end, e.peak_z) for e in b.finish()]


def reference_with_missing(x, window, floor=1e-9):
    """The seed definition with missing samples, whole-signal numpy.convolve: each
    window's sums over its valid samples, scaled by (samples inside) / (valid samples)."""
    k = np.ones(window)
    valid = ~np.isnan(x)
    conv = lambda v: np.convolve(v, k, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        fill = np.where(conv(valid) > 0, conv(np.ones(len(x))) / conv(valid), 0.0)
        mean = conv(np.where(valid, x, 0.0)) * fill / window
        dev2 = np.where(valid, (x - mean) ** 2, 0.0)
        var = np.maximum(conv(dev2) * fill / window, floor)
        return mean, var, np.abs(x - mean) / np.sqrt(var)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 3000), missing=st.sampled_from([0, 1, 25]),
       offset=st.floats(-1e4, 1e4), data=st.data())
def test_seed_scan_of_any_rows_equals_the_whole_signal_definition(seed, n, missing, offset, data):
    """Any stretch [lo, hi) of any signal, with or without missing samples, windows cut by
    both ends or by neither: flagged rows, z, mean and variance as the definition gives."""
    rng = np.random.default_rng(seed)
    x = offset + rng.normal(0, 1, n)
    x[rng.integers(0, n, max(1, n // 50))] += rng.uniform(3, 9)
    if missing:
        x[rng.integers(0, n, missing)] = np.nan
    window = data.draw(st.integers(1, min(n, 700)))  # numpy.convolve's "same" needs n >= W
    lo = data.draw(st.integers(0, n - 1))
    hi = data.draw(st.integers(lo, n))
    mean, var, z = reference_with_missing(x, window)
    idx, zs, m, v = seed_scan(x, window, 2.5, lo=lo, hi=hi, keep_series=True, ws=Workspace())
    expected = np.flatnonzero(z[lo:hi] > 2.5)
    assert idx.tolist() == expected.tolist()
    np.testing.assert_allclose(zs, z[lo:hi][expected], rtol=1e-7)
    scale = 1 + abs(offset)
    np.testing.assert_allclose(m, mean[lo:hi], rtol=0, atol=1e-9 * scale * window)
    np.testing.assert_allclose(v, var[lo:hi], rtol=1e-6, atol=1e-9 * scale ** 2)


@pytest.mark.parametrize("window", [31, 32, 33, 255, 1000, 1015, 1016, 1017])
@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_seed_scan_deep_inside_a_long_signal_equals_the_definition(window, shift):
    """Rows whose windows all lie inside the signal, with nothing missing: the short step
    (four samples at a time where the machine allows), entered and left at every offset
    from a multiple of four, its rings wrapping many times."""
    rng = np.random.default_rng(window + shift)
    n = 12_000 + shift
    x = 7.5 + rng.normal(0, 1, n) + np.sin(np.arange(n) / 400)
    x[rng.integers(0, n, 60)] += rng.uniform(4, 9, 60)
    lo, hi = window + 3 + shift, n - window // 2 - shift
    mean, var, z = reference_with_missing(x, window)
    idx, zs, m, v = seed_scan(x, window, 3.0, lo=lo, hi=hi, keep_series=True, ws=Workspace())
    expected = np.flatnonzero(z[lo:hi] > 3.0)
    assert idx.tolist() == expected.tolist()
    assert len(expected) > 20
    np.testing.assert_allclose(zs, z[lo:hi][expected], rtol=1e-9)
    np.testing.assert_allclose(m, mean[lo:hi], rtol=0, atol=1e-9)
    np.testing.assert_allclose(v, var[lo:hi], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rows", [(0, 5000), (200, 4800)])  # with and without the ends
@pytest.mark.parametrize("at", [1000, 2500])  # 2500: the middle row, where sums are centred
@pytest.mark.parametrize("glitch", [300, 1e4, 1e10, 1e15, 1e20, 1e100, 1e160, 1e300, np.inf, -1e15])
def test_a_huge_glitch_only_affects_the_windows_that_hold_it(glitch, at, rows):
    """Running sums that took in a huge value and gave it back have lost the digits of
    everything else: they must be counted again, or every later window is skewed."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 5000)
    x[3000] = 8  # a real event, far from the glitch
    x[at] = glitch
    with np.errstate(all="ignore"):
        _, expected = convolve_reference(x, 101, 4.0)
    lo, hi = rows
    idx, _, _, _ = seed_scan(x, 101, 4.0, lo=lo, hi=hi)
    assert (idx + lo).tolist() == (lo + np.flatnonzero(expected[lo:hi] > 4.0)).tolist()
    assert 3000 - lo in idx


@pytest.mark.parametrize("level", [1e7, 1e9, 1e12])
def test_a_large_constant_level_does_not_skew_the_variance(level):
    """The zero padding at the ends puts the level itself into the first windows' sums."""
    rng = np.random.default_rng(3)
    x = level + rng.normal(0, 1, 20_000)
    x[15_000] += 6
    _, expected = convolve_reference(x, 1000, 4.0)
    idx, _, _, _ = seed_scan(x, 1000, 4.0)
    assert idx.tolist() == np.flatnonzero(expected > 4.0).tolist()
    assert 15_000 in idx


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("window", [1000, 16])  # four samples a step, and one
def test_a_stuck_sensor_after_loud_noise_is_scored_on_its_own_variance(seed, window):
    """Noise of 1e4 then a flat line: the variance's running sum keeps the rounding error of
    the noise (about 1e-5) unless counted again, and the flat line's tiny step (1e-3) is
    then scored against that error instead of its own variance."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e4, 20_000)
    x[12_000:] = 5.0
    x[16_000:] = 5.001
    _, var, z = reference_with_missing(x, window)
    idx, _, _, kernel_var = seed_scan(x, window, 4.0, keep_series=True)
    assert idx.tolist() == np.flatnonzero(z > 4.0).tolist()
    np.testing.assert_allclose(kernel_var[13_000:], var[13_000:], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("window", [32, 1000, 16])
@pytest.mark.parametrize("lo", [0, 100])
def test_squares_beyond_float64_flag_nothing(window, lo):
    """Deviations of 1e157 square past float64: the variance is undefined, not the floor."""
    x = 1e160 * (1 + 1e-3 * np.random.default_rng(0).normal(size=4000))
    idx, z, _, _ = seed_scan(x, window, 4.0, lo=lo)
    assert len(idx) == 0


def test_seed_scan_rejects_rows_outside_the_signal():
    with pytest.raises(ValueError, match="rows"):
        seed_scan(np.zeros(10), 3, 4.0, lo=5, hi=11)


@pytest.mark.parametrize("window", [1000, 999, 64, 2, 3])
def test_rolling_mean_and_std_equal_convolve(window):
    rng = np.random.default_rng(window)
    x = 50 + rng.normal(0, 2, 20_000) + np.sin(np.arange(20_000) / 300)
    k = np.ones(window) / window
    mean = np.convolve(x, k, mode="same")
    std = np.sqrt(np.maximum(np.convolve((x - mean) ** 2, k, mode="same"), 1e-9))
    m, s = rolling_mean_std(x, window)
    np.testing.assert_allclose(m, mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(s, std, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), window=st.sampled_from([10, 100, 257, 1000]),
       n_spikes=st.integers(0, 30), offset=st.floats(-1e3, 1e3))
def test_events_equal_direct_convolve_on_random_data_with_spikes(seed, window, n_spikes, offset):
    rng = np.random.default_rng(seed)
    n = 12_000
    x = offset + rng.normal(0, 1, n)
    pos = rng.integers(0, n, n_spikes)
    x[pos] += rng.choice([-1, 1], n_spikes) * rng.uniform(5, 30, n_spikes)
    ref, _ = convolve_reference(x, window, 4.0)
    ours = events_of(x, window, 4.0)
    assert [(s, e) for s, e, _ in ours] == [(s, e) for s, e, _ in ref]
    np.testing.assert_allclose([p for *_, p in ours], [p for *_, p in ref], rtol=1e-8)
    # Strong spikes are found wherever the window is long enough to tell them apart (in a
    # window of W samples no z-score can exceed about sqrt(W)) and is not half zero
    # padding (the method's blind spot within W/2 of the ends).
    inside = (pos >= window) & (pos < n - window)
    big = pos[inside & (np.abs(x[pos] - offset) > 25)] if window >= 100 else []
    for p in big:
        assert any(s <= p <= e for s, e, _ in ours)


def test_stretch_borders_do_not_split_events():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 10_000)
    x[4990:5015] += 40  # a 25-sample event across the 5000 border
    whole = events_of(x, 500, 4.0)
    chunked = events_of(x, 500, 4.0, chunk=1000)
    odd = events_of(x, 500, 4.0, chunk=997)
    assert whole == chunked == odd
    assert any(s <= 4990 and e >= 5014 for s, e, _ in whole)


def test_nan_samples_are_never_flagged_and_do_not_poison_neighbours():
    rng = np.random.default_rng(2)
    x = 60 + rng.normal(0, 0.1, 5000)
    x[1000:1100] = np.nan
    x[3000] += 5
    z, mean, std = zscore(x, 200)
    assert np.isnan(z[1000:1100]).all()
    assert np.isfinite(z[:1000]).all() and np.isfinite(z[1100:]).all()
    flagged = np.flatnonzero(z > 4)
    assert 3000 in flagged
    assert not np.any((flagged > 900) & (flagged < 1200))


def test_nan_free_path_matches_nan_path_definition():
    rng = np.random.default_rng(3)
    x = rng.normal(5, 1, 3000)
    m1, s1 = rolling_mean_std(x, 101)
    x2 = x.copy()
    x2[-1] = np.nan  # forces the NaN-aware path; far from the middle, so compare there
    m2, s2 = rolling_mean_std(x2, 101)
    np.testing.assert_allclose(m1[:2800], m2[:2800], atol=1e-10)
    np.testing.assert_allclose(s1[:2800], s2[:2800], atol=1e-10)


def test_event_builder_merge_gap_and_min_duration():
    mask = np.zeros(100, bool)
    mask[10:12] = True   # 2 samples
    mask[14:20] = True   # gap of 2 from the first
    mask[50] = True      # a lone sample
    z = np.where(mask, 5.0, 0.0)
    z[16] = 9.0
    ts = np.arange(100) * 10
    b = EventBuilder("c", min_samples=3, merge_gap=2)
    b.feed(mask, z, np.arange(100.0), ts, 0)
    events = b.finish()
    assert [(e.start, e.end) for e in events] == [(10, 19)]
    assert events[0].peak_z == 9.0 and events[0].peak_value == 16.0
    assert events[0].start_ns == 100 and events[0].end_ns == 190
    assert b.count == 1


def test_event_builder_keeps_strongest_but_counts_all():
    mask = np.zeros(1000, bool)
    mask[::10] = True
    z = np.where(mask, np.arange(1000) / 10.0, 0.0)
    b = EventBuilder("c", keep=5)
    b.feed(mask, z, z, np.arange(1000), 0)
    kept = b.finish()
    assert b.count == 100
    assert [e.start for e in kept] == [950, 960, 970, 980, 990]


def groups_reference(idx, z, gap):
    """Groups by the definition: split wherever more than ``gap`` rows lie unflagged."""
    groups, current = [], [0]
    for j in range(1, len(idx)):
        if idx[j] - idx[j - 1] > gap + 1:
            groups.append(current)
            current = []
        current.append(j)
    groups.append(current)
    return ([g[0] for g in groups], [g[-1] for g in groups], [max(z[j] for j in g) for g in groups])


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), density=st.floats(0.05, 1.0),
       gap=st.one_of(st.integers(0, 6), st.just(2**53)), seed=st.integers(0, 1000))
def test_flagged_groups_by_loop_and_by_numpy_equal_the_definition(n, density, gap, seed):
    """Short inputs take a Python loop, long ones numpy (_LOOP_BELOW): both must agree."""
    from telemetry_lab.detect import _flagged_groups

    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(rng.random(n) < density)
    if len(idx) == 0:
        return
    z = rng.integers(1, 5, len(idx)).astype(float)  # ties too
    assert _flagged_groups(idx, z, gap) == groups_reference(idx.tolist(), z.tolist(), gap)
