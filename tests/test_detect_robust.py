"""The compiled robust detector against its whole-array numpy definition."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from telemetry_lab.detect import robust_zscore
from telemetry_lab.scratch import Workspace

import robust_reference


def compare(x, lo, hi, **kw):
    z_ref, center_ref, scale_ref = (a.astype(np.float64)
                                    for a in robust_reference.robust_zscore(x, **kw))
    z, center, scale = robust_zscore(x, lo=lo, hi=hi, ws=Workspace(), **kw)
    sl = slice(lo, hi)
    np.testing.assert_allclose(center, center_ref[sl], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scale, scale_ref[sl], rtol=1e-7, atol=1e-12)
    # A variance taken as E[v^2] - E[v]^2 in float64 keeps about eps * E[v^2] / var of its
    # digits: where it nearly vanishes (z in the thousands) z differs in the sixth digit.
    np.testing.assert_allclose(z, z_ref[sl], rtol=1e-4, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 2500), energy=st.booleans(),
       missing=st.sampled_from([0, 1, 30]), window=st.integers(1, 400),
       guard=st.integers(0, 60), short=st.integers(1, 80), min_reference=st.integers(2, 50),
       offset=st.floats(-1e4, 1e4), data=st.data())
def test_robust_scan_of_any_rows_equals_the_numpy_definition(seed, n, energy, missing, window,
                                                            guard, short, min_reference,
                                                            offset, data):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = offset + np.sin(t / 7.0) * (3 if energy else 0.2) + rng.normal(0, 1, n)
    x[rng.integers(0, n, max(1, n // 100))] += rng.uniform(5, 20)
    if missing:
        x[rng.integers(0, n, missing)] = np.nan
    lo = data.draw(st.integers(0, n))
    hi = data.draw(st.integers(lo, n))
    compare(x, lo, hi, window=window, guard=guard, short=short, energy=energy,
            min_reference=min_reference)


@pytest.mark.parametrize("energy", [False, True])
@pytest.mark.parametrize("glitch", [1e15, 1e100, 1e300, -1e12, np.inf])
def test_a_huge_glitch_only_affects_the_windows_that_hold_it(glitch, energy):
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, 20_000)
    x[2_000] = glitch
    kw = dict(window=1000, guard=50, short=50, energy=energy, min_reference=200)
    z, _, _ = robust_zscore(x, **kw)
    clean = x.copy()
    clean[2_000] = 0.0
    z_clean, _, _ = robust_zscore(clean, **kw)
    # Past every window that holds the glitch, the scores are those of the clean signal.
    after = 2_000 + 1000 + 50 + 50 + 2
    np.testing.assert_allclose(z[after:], z_clean[after:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("energy", [False, True])
def test_an_infinite_sample_is_flagged_not_hidden_by_an_undefined_score(energy):
    x = np.random.default_rng(5).normal(size=400)
    x[300] = np.inf
    z, center, _ = robust_zscore(x, window=100, guard=2, short=4, energy=energy, min_reference=20)
    assert z[300] > 6.5
    assert np.isnan(center[:20]).all()  # no reference yet: no band to draw
