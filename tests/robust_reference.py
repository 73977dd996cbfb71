"""The robust detector written with whole-array numpy running sums: its definition, kept
as the reference that the compiled scan (telemetry_lab/_kernels.c) is tested against."""

import numpy as np

#: Extended precision: running sums differenced over a window lose digits where a
#: variance is a small difference of large sums; the reference should not be the less
#: exact of the two.
FLOAT = np.longdouble


def _csum(v: np.ndarray) -> np.ndarray:
    """Running sum with a leading zero: ``sum(v[a:b]) == c[b] - c[a]``."""
    c = np.empty(len(v) + 1, dtype=FLOAT)
    c[0] = 0.0
    np.cumsum(v, out=c[1:])
    return c


def _window_diff(c: np.ndarray, n: int, k_hi: int, k_lo: int) -> np.ndarray:
    """``out[i] = c[clip(i + k_hi, 0, n)] - c[clip(i + k_lo, 0, n)]`` for ``i`` in ``[0, n)``.

    With ``c`` a running sum (:func:`_csum`) this is the sum over ``[i + k_lo, i + k_hi)``
    clipped to the signal. The interior is one slice subtraction; only the clipped edges
    need index arrays.
    """
    out = np.empty(n, dtype=FLOAT)
    a = min(max(0, -k_hi, -k_lo), n)
    b = max(min(n, n - k_hi, n - k_lo), a)
    np.subtract(c[a + k_hi:b + k_hi], c[a + k_lo:b + k_lo], out=out[a:b])
    for edge in (np.arange(0, a), np.arange(b, n)):
        if len(edge):
            out[edge] = c[np.clip(edge + k_hi, 0, n)] - c[np.clip(edge + k_lo, 0, n)]
    return out


def _trailing(c: np.ndarray, n: int, lo_off: int, hi_off: int) -> np.ndarray:
    """Sum over ``[i - lo_off, i - hi_off)`` clipped to ``[0, n)``, for every ``i`` in ``[0, n)``."""
    return _window_diff(c, n, -hi_off, -lo_off)


def _centred(c: np.ndarray, n: int, width: int) -> np.ndarray:
    """Sum over the centred window of ``width`` samples, clipped to ``[0, n)``."""
    return _window_diff(c, n, (width - 1) // 2 + 1, -(width // 2))


def robust_zscore(x: np.ndarray, *, window: int, guard: int, short: int, energy: bool,
                  variance_floor: float = 1e-9, min_reference: int = 30) -> np.ndarray:
    """The definition documented at telemetry_lab.detect.robust_zscore, whole signal."""
    x = np.asarray(x, dtype=FLOAT)
    n = len(x)
    valid = ~np.isnan(x)
    complete = bool(valid.all())
    offset = float(x[valid][0]) if valid.any() else 0.0
    # Running sums of x - offset stay small, so they stay exact.
    xv = x - offset if complete else np.where(valid, x - offset, 0.0)
    c_n = np.arange(n + 1, dtype=FLOAT) if complete else _csum(valid.astype(FLOAT))
    c_x = _csum(xv)
    lo, hi = guard + window, guard
    n_ref = _trailing(c_n, n, lo, hi)
    enough = n_ref >= max(min_reference, 2)
    safe_n = np.where(enough, n_ref, 1.0)
    mean_ref = _trailing(c_x, n, lo, hi) / safe_n
    dev = xv - mean_ref

    n_short = _centred(c_n, n, short)
    safe_short = np.where(n_short > 0, n_short, 1.0)
    if not energy:
        # Noise from first differences; a difference counts when both samples are valid.
        d = np.zeros(n, dtype=FLOAT)
        np.subtract(xv[1:], xv[:-1], out=d[1:])
        np.multiply(d, d, out=d)
        if complete:
            n_d = np.maximum(n_ref - 1, 0)
        else:
            both = np.zeros(n, dtype=FLOAT)
            both[1:] = valid[1:] & valid[:-1]
            d[both == 0] = 0.0
            n_d = _trailing(_csum(both), n, lo - 1, hi)  # differences inside the reference
        var = _trailing(_csum(d), n, lo - 1, hi) / (2 * np.where(n_d > 0, n_d, 1.0))
        np.maximum(var, variance_floor, out=var)
        scale = np.sqrt(var)
        z_sample = np.abs(dev) / scale
        short_mean = _centred(c_x, n, short) / safe_short
        z_short = np.abs(short_mean - mean_ref) * np.sqrt(n_short) / scale
    else:
        c_x2 = _csum(xv * xv)
        var = _trailing(c_x2, n, lo, hi) / safe_n - mean_ref ** 2
        np.maximum(var, variance_floor, out=var)
        scale = np.sqrt(var)
        z_sample = np.abs(dev) / scale
        # Vibration energy: the variance over the short window (the AC power there),
        # which does not depend on the offset the sums were taken about.
        m_short = _centred(c_x, n, short) / safe_short
        e_short = _centred(c_x2, n, short) / safe_short - m_short * m_short
        e_short[n_short == 0] = 0.0
        c_e = _csum(np.where(n_short > 0, e_short, 0.0))
        c_e2 = _csum(np.where(n_short > 0, e_short * e_short, 0.0))
        ref_e = _trailing(c_e, n, lo, hi) / safe_n
        var_e = _trailing(c_e2, n, lo, hi) / safe_n - ref_e ** 2
        np.maximum(var_e, variance_floor, out=var_e)
        z_short = np.abs(e_short - ref_e) / np.sqrt(var_e)
        # Spikes ride on the spindle signal, which a per-sample z against the reference
        # spread cannot see past. The residual of predicting each sample from its two
        # neighbours removes the (smooth, periodic) signal and leaves noise and spikes.
        r = np.zeros(n, dtype=FLOAT)
        r[1:-1] = xv[1:-1] - 0.5 * (xv[:-2] + xv[2:])
        if not complete:
            r[1:-1][~(valid[1:-1] & valid[:-2] & valid[2:])] = 0.0
        var_r = _trailing(_csum(r * r), n, lo, hi) / safe_n
        np.maximum(var_r, variance_floor, out=var_r)
        z_sample = np.fmax(z_sample, np.abs(r) / np.sqrt(var_r))
    # A short window cut by the signal's ends is a noisier statistic: not scored.
    z_short[n_short < short] = 0.0
    z = np.fmax(z_sample, z_short)  # an undefined score does not win
    z[~valid | ~enough] = 0.0
    return z, np.where(enough, mean_ref + offset, np.nan), np.where(enough, scale, np.nan)
