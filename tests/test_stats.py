import numpy as np
import pytest

from telemetry_lab.stats import RunningStats


def test_chunked_statistics_equal_numpy_with_nans_left_out():
    rng = np.random.default_rng(0)
    x = 1e3 + rng.normal(0, 2, 100_003)
    x[rng.integers(0, len(x), 500)] = np.nan
    rs = RunningStats()
    for i in range(0, len(x), 7001):
        rs.update(x[i:i + 7001])
    d = rs.to_dict()
    assert d["missing"] == int(np.isnan(x).sum())
    assert d["count"] == int((~np.isnan(x)).sum())
    assert d["min"] == np.nanmin(x) and d["max"] == np.nanmax(x)
    np.testing.assert_allclose(d["mean"], np.nanmean(x), rtol=1e-14)
    np.testing.assert_allclose(d["std"], np.nanstd(x), rtol=1e-10)


def test_all_missing_channel_reports_none():
    rs = RunningStats()
    rs.update(np.full(10, np.nan))
    assert rs.to_dict() == {"count": 0, "missing": 10, "min": None, "max": None,
                            "mean": None, "std": None}


def test_huge_but_finite_constant_values_are_summarised_exactly():
    st = RunningStats()
    st.update(np.full(3, 1e200))
    st.update(np.full(2, 1e200))
    assert st.to_dict() == {"count": 5, "missing": 0, "min": 1e200, "max": 1e200,
                            "mean": 1e200, "std": 0.0}


def test_every_short_length_and_position_of_the_extremes_and_gaps():
    """Lengths 1 to 11 (the four-lane loops and their tails), the minimum, maximum and a
    missing sample at every position."""
    rng = np.random.default_rng(1)
    for n in range(1, 12):
        for at in range(n):
            x = rng.normal(0, 1, n)
            x[at] = -50.0
            x[(at + 1) % n] = 70.0 if n > 1 else x[0]
            for gap in (None, (at + 2) % n):
                y = x.copy()
                if gap is not None and n > 2:
                    y[gap] = np.nan
                rs = RunningStats()
                rs.update(y)
                assert rs.missing == int(np.isnan(y).sum())
                assert (rs.minimum, rs.maximum) == (np.nanmin(y), np.nanmax(y))
                np.testing.assert_allclose([rs.mean, rs.std], [np.nanmean(y), np.nanstd(y)],
                                           rtol=1e-12, atol=1e-12)


def test_more_than_one_channel_or_complex_samples_are_refused():
    for bad in (np.zeros((3, 4)), np.zeros(4, dtype=complex)):
        with pytest.raises(ValueError, match="one real channel"):
            RunningStats().update(bad)
