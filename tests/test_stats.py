import numpy as np

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
