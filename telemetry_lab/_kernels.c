/*
 * Compiled inner loops: one pass over a channel where numpy needs many.
 *
 * Each function replaces a chain of whole-array numpy operations whose cost was memory
 * traffic, not arithmetic. They take buffers (numpy arrays, C-contiguous) and release the
 * GIL while they run, so the analysis threads run them side by side. The Python-facing
 * wrappers, with the definitions and units, are telemetry_lab.detect.seed_scan and
 * telemetry_lab.stats.RunningStats.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Whether x[a:b] holds a NaN or an infinity (x * 0 is NaN for both), and in *far the
 * largest |x - offset| there: one pass, four independent accumulators of each kind to keep
 * the CPU busy (one running sum is a chain of additions, each waiting for the last). */
static int scan_values_plain(const double *x, Py_ssize_t a, Py_ssize_t b, double offset,
                             double *far)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0, f0 = 0, f1 = 0, f2 = 0, f3 = 0;
    Py_ssize_t i = a;
    for (; i + 4 <= b; i += 4) {
        s0 += x[i] * 0.0;
        s1 += x[i + 1] * 0.0;
        s2 += x[i + 2] * 0.0;
        s3 += x[i + 3] * 0.0;
        double d0 = fabs(x[i] - offset);
        f0 = d0 > f0 ? d0 : f0;
        double d1 = fabs(x[i + 1] - offset);
        f1 = d1 > f1 ? d1 : f1;
        double d2 = fabs(x[i + 2] - offset);
        f2 = d2 > f2 ? d2 : f2;
        double d3 = fabs(x[i + 3] - offset);
        f3 = d3 > f3 ? d3 : f3;
    }
    for (; i < b; i++) {
        s0 += x[i] * 0.0;
        double d0 = fabs(x[i] - offset);
        f0 = d0 > f0 ? d0 : f0;
    }
    /* A NaN fails the comparisons and is not far; it is reported as non-finite instead. */
    *far = fmax(fmax(f0, f1), fmax(f2, f3));
    return isnan(s0 + s1 + s2 + s3);
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(TELEMETRY_LAB_PORTABLE)
/* Loops four samples at a time with AVX2, where the machine has it (asked at run time).
 * Building with -DTELEMETRY_LAB_PORTABLE leaves them out: the build every other machine
 * gets (the tests run their kernel checks against it too). */
#define WIDE_STEPS 1
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));

__attribute__((target("avx2"))) static inline v4d load4(const double *p)
{
    v4d v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* scan_values, four samples at a time (maxpd keeps its second operand against a NaN). */
__attribute__((target("avx2"))) static int wide_scan_values(const double *x, Py_ssize_t a,
                                                           Py_ssize_t b, double offset,
                                                           double *far)
{
    const v4d zero = {0.0, 0.0, 0.0, 0.0}, level = zero + offset, sign = -zero;
    v4d nan0 = zero, nan1 = zero, far0 = zero, far1 = zero;
    Py_ssize_t i = a;
    for (; i + 8 <= b; i += 8) {
        v4d u = load4(x + i), v = load4(x + i + 4);
        nan0 += u * zero;
        nan1 += v * zero;
        far0 = __builtin_ia32_maxpd256((v4d)((v4l)(u - level) & ~(v4l)sign), far0);
        far1 = __builtin_ia32_maxpd256((v4d)((v4l)(v - level) & ~(v4l)sign), far1);
    }
    v4d f = __builtin_ia32_maxpd256(far0, far1), n = nan0 + nan1;
    double tail_far, farthest = fmax(fmax(f[0], f[1]), fmax(f[2], f[3]));
    int tail_nan = scan_values_plain(x, i, b, offset, &tail_far);
    *far = fmax(farthest, tail_far);
    return tail_nan || isnan((n[0] + n[1]) + (n[2] + n[3]));
}
#endif

static int scan_values(const double *x, Py_ssize_t a, Py_ssize_t b, double offset, double *far)
{
#ifdef WIDE_STEPS
    if (__builtin_cpu_supports("avx2"))
        return wide_scan_values(x, a, b, offset, far);
#endif
    return scan_values_plain(x, a, b, offset, far);
}

/* A typical sample of x[a:b]: the median of up to 31 finite samples spread over it.
 * Running sums are taken about it so that they stay small; a glitch must not be it. */
static double typical_value(const double *x, Py_ssize_t a, Py_ssize_t b, double *spread)
{
    double pick[31];
    int m = 0;
    Py_ssize_t step = (b - a) / 31 > 0 ? (b - a) / 31 : 1;
    for (Py_ssize_t j = a; j < b && m < 31; j += step)
        if (isfinite(x[j]))
            pick[m++] = x[j];
    for (Py_ssize_t j = a; m == 0 && j < b; j++)   /* sparse: the first finite one */
        if (isfinite(x[j]))
            pick[m++] = x[j];
    for (int i = 1; i < m; i++)   /* insertion sort of at most 31 values */
        for (int k = i; k > 0 && pick[k - 1] > pick[k]; k--) {
            double t = pick[k]; pick[k] = pick[k - 1]; pick[k - 1] = t;
        }
    if (spread)   /* interquartile range of the picks: about 1.35 sigma for noise */
        *spread = m ? pick[(3 * m) / 4] - pick[m / 4] : 0.0;
    return m ? pick[m / 2] : 0.0;
}

static inline Py_ssize_t imin(Py_ssize_t a, Py_ssize_t b) { return a < b ? a : b; }
static inline Py_ssize_t imax(Py_ssize_t a, Py_ssize_t b) { return a > b ? a : b; }

typedef struct {
    const double *x;
    Py_ssize_t n, window, left, right, lo, hi;
    double inv_w, threshold_sq, variance_floor;
    Py_ssize_t mask;              /* ring size - 1, the ring size a power of two > window + 8 */
    double *mean_ring, *fill_ring, *dev2_ring;
    double *x4_ring, *dev4_ring;    /* four-term sums, for wide_steps */
    int64_t *idx_out;
    double *z_out, *mean_out, *var_out;   /* mean_out/var_out NULL unless wanted */
    Py_ssize_t count;
    double s2_low, s2_high;       /* the variance sum's range over the unchecked steps */
} Scan;

/* Score sample i, whose variance window sum is s2 and whose window's sums are scaled by
 * fill (1 unless samples are missing). A NaN variance (an infinity in the window) flags
 * nothing. */
static inline void score(Scan *s, Py_ssize_t i, double s2, double fill)
{
    double var = s2 * fill * s->inv_w;
    if (var < s->variance_floor)
        var = s->variance_floor;
    if (s->mean_out) {
        s->mean_out[i - s->lo] = s->mean_ring[i & s->mask];
        s->var_out[i - s->lo] = var;
    }
    double d2 = s->dev2_ring[i & s->mask];
    if (d2 > s->threshold_sq * var) {
        s->idx_out[s->count] = i - s->lo;
        s->z_out[s->count] = sqrt(d2 / var);
        s->count++;
    }
}

/*
 * Running sums lose the digits of small values when a huge one (a glitch of 1e15, an
 * overflowing square) passes through: once it has left, the sum is off by that value's
 * rounding error for ever after. So each sum remembers the largest magnitude it held
 * since it was last counted from scratch, and is counted again from its window when it
 * falls below 2^-20 of that (at most 20 of its 53 bits lost). Ordinary data, whose sums
 * wander within a narrow range, never take this path. A sum that is not finite (an
 * infinity in the window) is counted again only once the last infinity has left.
 */
#define RECOUNT_BELOW (1.0 / 1048576.0)

typedef struct {
    double peak;         /* largest |sum| since the last count */
    Py_ssize_t hold;     /* no recount before this step */
} Recount;

/* Whether the sum at step k must be counted again from its window. */
static inline int needs_recount(Recount *r, double sum, Py_ssize_t k)
{
    double a = fabs(sum);
    r->peak = a > r->peak ? a : r->peak;
    return !(a >= r->peak * RECOUNT_BELOW) && k >= r->hold;
}

static inline void counted(Recount *r, double sum, Py_ssize_t hold)
{
    r->peak = fabs(sum);
    r->hold = hold;
}

/* The sum of valid x - offset over the mean's window of step k, and its valid count;
 * *hold is the step at which the last non-finite sample in it has left. */
static double count_means(const Scan *s, Py_ssize_t k, double offset, Py_ssize_t *nv,
                          Py_ssize_t *hold)
{
    double sum = 0.0;
    Py_ssize_t count = 0;
    *hold = k;
    for (Py_ssize_t j = imax(k - s->left, 0); j <= imin(k + s->right, s->n - 1); j++)
        if (!isnan(s->x[j])) {
            sum += s->x[j] - offset;
            count++;
            if (!isfinite(s->x[j] - offset))
                *hold = j + s->left + 1;
        }
    *nv = count;
    return sum;
}

/* The sum of the squared deviations of positions [k - window + 1, k]; *hold as above. */
static double count_variances(const Scan *s, Py_ssize_t k, Py_ssize_t *hold)
{
    double sum = 0.0;
    *hold = k;
    for (Py_ssize_t p = k - s->window + 1; p <= k; p++) {
        double v = s->dev2_ring[p & s->mask];
        sum += v;
        if (!isfinite(v))
            *hold = p + s->window;
    }
    return sum;
}

/*
 * The short step of the seed detector: every window inside x, every sample finite, no
 * recount needed (see zscore_scan). Steps [k, end); *s1 and *s2 are the running sums
 * before step k and after the last one. The Scan's fields are copied to locals: the
 * stores into the rings would otherwise make the compiler reload them at every step.
 */
static void plain_steps(Scan *s, Py_ssize_t k, Py_ssize_t end, double offset, double *ps1,
                        double *ps2)
{
    const double *x = s->x;
    const Py_ssize_t left = s->left, right = s->right, window = s->window, mask = s->mask;
    const Py_ssize_t lo = s->lo;
    const double inv_w = s->inv_w, floor_ = s->variance_floor, threshold_sq = s->threshold_sq;
    double *mean_ring = s->mean_ring, *dev2_ring = s->dev2_ring;
    double *mean_out = s->mean_out, *var_out = s->var_out, *z_out = s->z_out;
    int64_t *idx_out = s->idx_out;
    Py_ssize_t count = s->count;
    double s1 = *ps1, s2 = *ps2, s2_low = s->s2_low, s2_high = s->s2_high;
    for (; k < end; k++) {
        s1 += x[k + right] - x[k - 1 - left];
        double mu = s1 * inv_w + offset;
        double d2 = (x[k] - mu) * (x[k] - mu);
        mean_ring[k & mask] = mu;
        s2 += d2 - dev2_ring[(k - window) & mask];
        dev2_ring[k & mask] = d2;
        s2_low = s2 < s2_low ? s2 : s2_low;
        s2_high = s2 > s2_high ? s2 : s2_high;
        Py_ssize_t i = k - right;
        double var = s2 * inv_w;
        var = var < floor_ ? floor_ : var;
        if (mean_out) {
            mean_out[i - lo] = mean_ring[i & mask];
            var_out[i - lo] = var;
        }
        double dev2 = dev2_ring[i & mask];
        if (dev2 > threshold_sq * var) {
            idx_out[count] = i - lo;
            z_out[count] = sqrt(dev2 / var);
            count++;
        }
    }
    s->count = count;
    s->s2_low = s2_low;
    s->s2_high = s2_high;
    *ps1 = s1;
    *ps2 = s2;
}

#ifdef WIDE_STEPS
/*
 * The short step four samples at a time. The
 * running sums become recurrences of stride four, s[k] = s[k - 4] + (sum of the four
 * newest terms) - (sum of the four that left): one vector addition per four samples, the
 * same sums added in another order (they differ from plain_steps' in the last bits). The
 * four-term sums are kept in two more rings, so each leaves with one load. Every ring
 * carries a copy of its first 8 slots after its end, so that four consecutive slots are
 * read with one load wherever they start.
 */
/* Four slots from `slot` (a multiple of four), and their copy after the ring's end. */
__attribute__((target("avx2"))) static inline void store_slots(double *ring, Py_ssize_t mask,
                                                               Py_ssize_t slot, v4d v)
{
    memcpy(ring + slot, &v, sizeof v);
    if (slot < 8)
        memcpy(ring + mask + 1 + slot, &v, sizeof v);
}

/* The window length from which the four-wide step pays; the rings are read no closer than
 * a few steps behind their stores. */
#define WIDE_MIN_WINDOW 32

__attribute__((target("avx2"))) static void wide_steps(Scan *s, Py_ssize_t k, Py_ssize_t end,
                                                      double offset, double *ps1, double *ps2)
{
    /* Plain steps up to a multiple of four, keeping the last four sums of each kind. */
    double h1[4], h2[4];
    Py_ssize_t start = k;
    for (; (k & 3) || k < start + 4; k++) {
        if (k >= end)
            return;
        plain_steps(s, k, k + 1, offset, ps1, ps2);
        h1[k & 3] = *ps1;
        h2[k & 3] = *ps2;
    }
    const double *x = s->x;
    const Py_ssize_t right = s->right, window = s->window, mask = s->mask, lo = s->lo;
    double *mean_ring = s->mean_ring, *dev2_ring = s->dev2_ring;
    double *x4_ring = s->x4_ring, *dev4_ring = s->dev4_ring;
    double *mean_out = s->mean_out, *var_out = s->var_out, *z_out = s->z_out;
    int64_t *idx_out = s->idx_out;
    Py_ssize_t count = s->count;
    memcpy(mean_ring + mask + 1, mean_ring, 8 * sizeof(double));
    memcpy(dev2_ring + mask + 1, dev2_ring, 8 * sizeof(double));
    /* The four-term sums of the window's length of positions before k, for their leaving. */
    for (Py_ssize_t p = k - window; p < k; p++) {
        const double *e = x + p + right, *d = dev2_ring;
        double x4 = (e[0] + e[-1]) + (e[-2] + e[-3]);
        double dev4 = (d[p & mask] + d[(p - 1) & mask]) + (d[(p - 2) & mask] + d[(p - 3) & mask]);
        x4_ring[p & mask] = x4;
        dev4_ring[p & mask] = dev4;
        if ((p & mask) < 8) {
            x4_ring[mask + 1 + (p & mask)] = x4;
            dev4_ring[mask + 1 + (p & mask)] = dev4;
        }
    }
    const v4d zero = {0.0, 0.0, 0.0, 0.0};
    const v4d inv_w = zero + s->inv_w, level = zero + offset;
    const v4d floor_ = zero + s->variance_floor, threshold_sq = zero + s->threshold_sq;
    v4d s1 = {h1[0], h1[1], h1[2], h1[3]}, s2 = {h2[0], h2[1], h2[2], h2[3]};
    v4d s2_low = zero + s->s2_low, s2_high = zero + s->s2_high;
    /* Squared deviations of the last four positions, and their pairwise sums. */
    v4d prev_d2 = load4(dev2_ring + ((k - 4) & mask));
    v4d prev_pairs = prev_d2 + load4(dev2_ring + ((k - 5) & mask));
    for (; k + 4 <= end; k += 4) {
        const double *e = x + k + right;
        v4d x4 = (load4(e) + load4(e - 1)) + (load4(e - 2) + load4(e - 3));
        Py_ssize_t slot = k & mask, old = (k - window) & mask;
        s1 += x4 - load4(x4_ring + old);
        v4d mu = s1 * inv_w + level;
        v4d dev = load4(x + k) - mu;
        v4d d2 = dev * dev;
        /* Squared deviations of positions k-3..k+3 summed four at a time, in registers. */
        v4d pairs = d2 + __builtin_shuffle(prev_d2, d2, (v4l){3, 4, 5, 6});
        v4d dev4 = pairs + __builtin_shuffle(prev_pairs, pairs, (v4l){2, 3, 4, 5});
        prev_d2 = d2;
        prev_pairs = pairs;
        s2 += dev4 - load4(dev4_ring + old);
        s2_low = __builtin_ia32_minpd256(s2, s2_low);
        s2_high = __builtin_ia32_maxpd256(s2, s2_high);
        store_slots(x4_ring, mask, slot, x4);
        store_slots(dev4_ring, mask, slot, dev4);
        store_slots(mean_ring, mask, slot, mu);
        store_slots(dev2_ring, mask, slot, d2);
        v4d var = __builtin_ia32_maxpd256(s2 * inv_w, floor_);
        Py_ssize_t i = k - right;
        v4d dev2 = load4(dev2_ring + (i & mask));
        if (mean_out) {
            memcpy(mean_out + i - lo, mean_ring + (i & mask), sizeof(v4d));
            memcpy(var_out + i - lo, &var, sizeof(v4d));
        }
        int flagged = __builtin_ia32_movmskpd256(dev2 - threshold_sq * var);
        if (__builtin_expect(flagged != 15, 0)) {
            for (int j = 0; j < 4; j++)
                if (dev2[j] > threshold_sq[j] * var[j]) {
                    idx_out[count] = i + j - lo;
                    z_out[count] = sqrt(dev2[j] / var[j]);
                    count++;
                }
        }
    }
    s->count = count;
    s->s2_low = fmin(fmin(s2_low[0], s2_low[1]), fmin(s2_low[2], s2_low[3]));
    s->s2_high = fmax(fmax(s2_high[0], s2_high[1]), fmax(s2_high[2], s2_high[3]));
    *ps1 = s1[3];
    *ps2 = s2[3];
    plain_steps(s, k, end, offset, ps1, ps2);
}
#endif

/*
 * Seed detector over x[lo:hi] (see detect.seed_scan). One pass: step k adds sample
 * k + right to the running sum of the mean's window and (x[k] - mean[k])**2 to the
 * variance's, whose window is then complete for sample k - right. The last `window`
 * means and squared deviations live in ring buffers, so the loop stays in the nearest
 * cache. Windows cut by an end of x, and frames with missing samples, take the general
 * step; the rest take the short one.
 */
static Py_ssize_t zscore_pass(Scan *s, int checked_throughout)
{
    const double *x = s->x;
    const Py_ssize_t n = s->n, left = s->left, right = s->right, window = s->window;
    const Py_ssize_t lo = s->lo, hi = s->hi, mask = s->mask;
    double *mean_ring = s->mean_ring, *fill_ring = s->fill_ring, *dev2_ring = s->dev2_ring;

    for (Py_ssize_t j = 0; j <= mask; j++)
        dev2_ring[j] = 0.0;   /* deviations before the first window count as 0 */
    double spread;
    double offset = typical_value(x, lo < hi ? lo : 0, lo < hi ? hi : n, &spread);
    const double inv_w = s->inv_w;

    Py_ssize_t k0 = imax(lo - left, 0);
    double far;   /* the farthest sample from the offset that any window reaches */
    int missing = scan_values(x, imax(k0 - left, 0), imin(hi + 2 * right + 1, n), offset, &far);
    Py_ssize_t nv, hold;
    double s1 = count_means(s, k0, offset, &nv, &hold), s2 = 0.0;
    Recount r1 = {fabs(s1), hold}, r2 = {0.0, 0};

    Py_ssize_t k_end = hi + right;
    Py_ssize_t fast_lo = imax(imax(k0 + 1, left + 1), lo + right);
    Py_ssize_t fast_hi = imin(n - right, k_end);
    if (missing || fast_lo >= fast_hi)
        fast_lo = fast_hi = k_end;
    /* The fast steps may skip the recount checks when no sample lies more than 2^8
     * spreads from the offset (which bounds the rounding of the mean's sum) and the
     * variance's sum never falls below 2^-20 of the largest value it held (so no check
     * would have counted it again). The second is known only afterwards: the unchecked
     * steps track that sum's range, and a frame where it was too wide (a stuck sensor
     * after loud noise) is scanned again with every step checked. Windows reaching past
     * the start of x are the exception (zero padding puts the level itself into the
     * deviations): the steps are checked until the last such deviation has left the
     * variance's window, at step `settled`; by then the checks have counted again any sum
     * that lost more than 20 bits to them. */
    int checked = checked_throughout || missing || !(spread > 0.0) || !(far <= 256.0 * spread);
    Py_ssize_t settled = k0 - left < 0 ? left + window : 0;

    for (Py_ssize_t k = k0; k < k_end;) {
        if (k == fast_lo) {
            /* Every window inside x, every sample finite, one sample scored per step. */
            Py_ssize_t checked_to = checked ? fast_hi : imin(imax(settled, k), fast_hi);
            for (; k < checked_to; k++) {
                s1 += x[k + right] - x[k - 1 - left];
                if (needs_recount(&r1, s1, k)) {
                    s1 = count_means(s, k, offset, &nv, &hold);
                    counted(&r1, s1, hold);
                }
                double mu = s1 * inv_w + offset;
                double d2 = (x[k] - mu) * (x[k] - mu);
                mean_ring[k & mask] = mu;
                s2 += d2 - dev2_ring[(k - window) & mask];
                dev2_ring[k & mask] = d2;
                if (needs_recount(&r2, s2, k)) {
                    s2 = count_variances(s, k, &hold);
                    counted(&r2, s2, hold);
                }
                score(s, k - right, s2, 1.0);
            }
            if (k < fast_hi) {
                s->s2_low = s2;
                s->s2_high = fmax(s2, r2.peak);
#ifdef WIDE_STEPS
                if (window >= WIDE_MIN_WINDOW && __builtin_cpu_supports("avx2"))
                    wide_steps(s, k, fast_hi, offset, &s1, &s2);
                else
#endif
                    plain_steps(s, k, fast_hi, offset, &s1, &s2);
                /* A sum that overflowed stays infinite or NaN, which the range ignores. */
                if (!isfinite(s2) || !(s->s2_low >= s->s2_high * RECOUNT_BELOW))
                    return -1;
                k = fast_hi;
            }
            continue;
        }
        /* The general step: windows cut by an end of x, missing or infinite samples.
         * Missing (NaN) samples are left out of the windows; an infinity makes the
         * windows holding it undefined (NaN: nothing flagged). */
        double d2 = 0.0;
        if (k < n) {
            if (k > k0) {
                Py_ssize_t j = k + right;
                if (j < n && !isnan(x[j])) { s1 += x[j] - offset; nv++; }
                j = k - 1 - left;
                if (j >= 0 && !isnan(x[j])) { s1 -= x[j] - offset; nv--; }
                if (needs_recount(&r1, s1, k)) {
                    s1 = count_means(s, k, offset, &nv, &hold);
                    counted(&r1, s1, hold);
                }
            }
            Py_ssize_t inside = imin(k + right, n - 1) - imax(k - left, 0) + 1;
            double mu, fill = 1.0;
            if (nv == inside) {
                mu = (s1 + offset * inside) * inv_w;
            } else {
                /* Missing samples: the window's valid samples, scaled to its length. */
                fill = nv > 0 ? (double)inside / nv : 0.0;
                mu = (s1 + offset * nv) * fill * inv_w;
            }
            d2 = isnan(x[k]) ? 0.0 : (x[k] - mu) * (x[k] - mu);
            mean_ring[k & mask] = mu;
            fill_ring[k & mask] = fill;
        }
        s2 += d2 - dev2_ring[(k - window) & mask];
        dev2_ring[k & mask] = d2;
        if (needs_recount(&r2, s2, k)) {
            s2 = count_variances(s, k, &hold);
            counted(&r2, s2, hold);
        }
        Py_ssize_t i = k - right;
        if (i >= lo)   /* a missing sample's deviation is 0: never flagged */
            score(s, i, s2, missing ? fill_ring[i & mask] : 1.0);
        k++;
    }
    return s->count;
}

static Py_ssize_t zscore_scan(Scan *s)
{
    if (zscore_pass(s, 0) >= 0)
        return s->count;
    s->count = 0;
    return zscore_pass(s, 1);
}

static int get_buffer(PyObject *obj, Py_buffer *view, const char *name, char kind,
                      Py_ssize_t itemsize, int writable)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT |
                                      (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *fmt = view->format ? view->format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@')
        fmt++;
    int ok = view->itemsize == itemsize &&
             (kind == 'f' ? *fmt == 'd' : (*fmt == 'q' || *fmt == 'l'));
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must hold %s, not format '%s'", name,
                     kind == 'f' ? "float64" : "int64", view->format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_zscore_scan(PyObject *self, PyObject *args)
{
    PyObject *ox, *oscratch, *oidx, *oz, *omean, *ovar;
    Py_ssize_t window, lo, hi;
    double threshold_sq, variance_floor;
    if (!PyArg_ParseTuple(args, "OnnnddOOOOO", &ox, &window, &lo, &hi, &threshold_sq,
                          &variance_floor, &oscratch, &oidx, &oz, &omean, &ovar))
        return NULL;
    Py_buffer bx = {0}, bscratch = {0}, bidx = {0}, bz = {0}, bmean = {0}, bvar = {0};
    PyObject *result = NULL;
    if (get_buffer(ox, &bx, "x", 'f', 8, 0) < 0) goto done;
    if (get_buffer(oscratch, &bscratch, "scratch", 'f', 8, 1) < 0) goto done;
    if (get_buffer(oidx, &bidx, "idx_out", 'i', 8, 1) < 0) goto done;
    if (get_buffer(oz, &bz, "z_out", 'f', 8, 1) < 0) goto done;
    if (get_buffer(omean, &bmean, "mean_out", 'f', 8, 1) < 0) goto done;
    if (get_buffer(ovar, &bvar, "var_out", 'f', 8, 1) < 0) goto done;

    Py_ssize_t n = bx.len / 8, rows = hi - lo;
    int keep = bmean.len > 0;
    if (window < 1 || window > n || lo < 0 || hi > n || lo > hi) {
        PyErr_Format(PyExc_ValueError, "window %zd and rows [%zd, %zd) do not fit a signal "
                     "of %zd samples", window, lo, hi, n);
        goto done;
    }
    Py_ssize_t ring = 1;   /* a power of two > window + 8, and 8 slots after each ring */
    while (ring <= window + 8)
        ring <<= 1;
    if (bscratch.len / 8 < 5 * (ring + 8) || bidx.len / 8 < rows || bz.len / 8 < rows ||
        (keep && (bmean.len / 8 < rows || bvar.len / 8 < rows))) {
        PyErr_SetString(PyExc_ValueError, "scratch or output buffers are too small");
        goto done;
    }
    double *scratch = (double *)bscratch.buf;
    Scan s = {
        .x = (const double *)bx.buf, .n = n, .window = window, .left = window / 2,
        .right = (window - 1) / 2, .lo = lo, .hi = hi, .inv_w = 1.0 / window,
        .threshold_sq = threshold_sq, .variance_floor = variance_floor, .mask = ring - 1,
        .mean_ring = scratch, .fill_ring = scratch + ring + 8, .dev2_ring = scratch + 2 * (ring + 8),
        .x4_ring = scratch + 3 * (ring + 8), .dev4_ring = scratch + 4 * (ring + 8),
        .idx_out = (int64_t *)bidx.buf, .z_out = (double *)bz.buf,
        .mean_out = keep ? (double *)bmean.buf : NULL, .var_out = keep ? (double *)bvar.buf : NULL,
        .count = 0,
    };
    Py_ssize_t count;
    Py_BEGIN_ALLOW_THREADS
    count = zscore_scan(&s);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(count);
done:
    PyBuffer_Release(&bx);
    PyBuffer_Release(&bscratch);
    PyBuffer_Release(&bidx);
    PyBuffer_Release(&bz);
    PyBuffer_Release(&bmean);
    PyBuffer_Release(&bvar);
    return result;
}

/* ---- the robust detector (see detect.robust_zscore for the definition) ------------ */

/* Running sums of one window, with the drift check of RECOUNT_BELOW per sum. */
#define MAX_SUMS 5
typedef struct {
    int used;
    double sum[MAX_SUMS], peak[MAX_SUMS];
    Py_ssize_t count, count2;   /* valid samples; valid pairs (first differences) */
    Py_ssize_t hold;            /* no recount before this step */
} Window;

static inline int window_drifted(Window *w, Py_ssize_t k)
{
    int drifted = 0;
    for (int q = 0; q < MAX_SUMS; q++) {
        if (q >= w->used)
            break;
        double a = fabs(w->sum[q]);
        w->peak[q] = a > w->peak[q] ? a : w->peak[q];
        drifted |= !(a >= w->peak[q] * RECOUNT_BELOW);
    }
    return drifted && k >= w->hold;
}

static inline void window_counted(Window *w)
{
    for (int q = 0; q < w->used; q++)
        w->peak[q] = fabs(w->sum[q]);
}

/* Per-position terms, arrays indexed from t0: the sample about the offset and whether it
 * is valid; for vibration channels its square, the short-window energy, its square and
 * the squared neighbour residual; for the others the squared first difference ending
 * there and whether both its samples are valid. The short window's count and mean too. */
typedef struct {
    Py_ssize_t t0;
    double *y, *valid, *t1, *t2, *t3, *t4, *n_short, *short_mean;
} Terms;

static void short_count(const double *y, const double *valid, Py_ssize_t j, Py_ssize_t t0,
                        Py_ssize_t end, Py_ssize_t shrt, Window *w)
{
    /* [j - shrt / 2, j + (shrt - 1) / 2] within the positions the terms cover, which
     * include every valid sample such a window can reach. */
    w->sum[0] = w->sum[1] = 0.0;
    w->count = 0;
    w->hold = j;
    for (Py_ssize_t p = imax(j - shrt / 2, t0); p <= imin(j + (shrt - 1) / 2, end - 1); p++)
        if (valid[p - t0] != 0.0) {
            double v = y[p - t0];
            w->sum[0] += v;
            w->sum[1] += v * v;
            w->count++;
            if (!isfinite(v * v))
                w->hold = p + shrt / 2 + 1;
        }
}

/* Fill the terms for positions [t0, end), the short-window statistics for [t0, hi). */
static void fill_terms(const double *x, Py_ssize_t n, double offset, int energy,
                       Py_ssize_t shrt, Py_ssize_t hi, Terms *t, Py_ssize_t end)
{
    const Py_ssize_t t0 = t->t0;
    for (Py_ssize_t j = t0; j < end; j++) {
        int ok = !isnan(x[j]);
        t->valid[j - t0] = ok;
        t->y[j - t0] = ok ? x[j] - offset : 0.0;
    }
    Window w = {.used = 2};
    short_count(t->y, t->valid, t0, t0, end, shrt, &w);
    window_counted(&w);
    for (Py_ssize_t j = t0; j < hi; j++) {
        if (j > t0) {
            Py_ssize_t in = j + (shrt - 1) / 2, out = j - shrt / 2 - 1;
            if (in < end && t->valid[in - t0] != 0.0) {
                double v = t->y[in - t0];
                w.sum[0] += v; w.sum[1] += v * v; w.count++;
            }
            if (out >= t0 && t->valid[out - t0] != 0.0) {
                double v = t->y[out - t0];
                w.sum[0] -= v; w.sum[1] -= v * v; w.count--;
            }
            if (window_drifted(&w, j)) {
                short_count(t->y, t->valid, j, t0, end, shrt, &w);
                window_counted(&w);
            }
        }
        double inv = 1.0 / (w.count > 0 ? (double)w.count : 1.0);
        double m = w.sum[0] * inv;
        t->n_short[j - t0] = (double)w.count;
        t->short_mean[j - t0] = m;
        if (energy) {
            double y = t->y[j - t0];
            double e = w.count > 0 ? w.sum[1] * inv - m * m : 0.0;
            double r = 0.0;
            if (j >= 1 && j + 1 < n && !isnan(x[j - 1]) && !isnan(x[j]) && !isnan(x[j + 1]))
                r = (x[j] - offset) - 0.5 * ((x[j - 1] - offset) + (x[j + 1] - offset));
            t->t1[j - t0] = y * y;
            t->t2[j - t0] = e;
            t->t3[j - t0] = e * e;
            t->t4[j - t0] = r * r;
        } else {
            double d = 0.0, both = 0.0;
            if (j >= 1 && !isnan(x[j]) && !isnan(x[j - 1])) {
                d = (x[j] - offset) - (x[j - 1] - offset);
                both = 1.0;
            }
            t->t1[j - t0] = d * d;
            t->t2[j - t0] = both;
        }
    }
}

typedef struct {
    Py_ssize_t window, guard, shrt, min_reference;
    int energy;
    double variance_floor;
} Robust;

/* The reference of i, [i - guard - window, i - guard), counted from scratch; for the
 * differences the pairs inside it, [i - guard - window + 1, i - guard). */
static void reference_count(const Robust *r, const Terms *t, Py_ssize_t i, Window *w)
{
    for (int q = 0; q < MAX_SUMS; q++)
        w->sum[q] = 0.0;
    w->count = w->count2 = 0;
    w->hold = i;
    Py_ssize_t a = imax(i - r->guard - r->window, 0), b = imax(i - r->guard, 0);
    for (Py_ssize_t j = a; j < b; j++) {
        Py_ssize_t u = j - t->t0;
        w->sum[0] += t->y[u];
        w->count += t->valid[u] != 0.0;
        double terms = t->y[u] * t->y[u];
        if (r->energy) {
            w->sum[1] += t->t1[u];
            w->sum[2] += t->t2[u];
            w->sum[3] += t->t3[u];
            w->sum[4] += t->t4[u];
            terms += t->t3[u] + t->t4[u];
        } else if (j > a || j == 0) {
            w->sum[1] += t->t1[u];
            w->count2 += t->t2[u] != 0.0;
            terms += t->t1[u];
        }
        if (!isfinite(terms))   /* the step at which j leaves the reference */
            w->hold = j + r->guard + r->window + 1;
    }
}

static inline void reference_step(const Robust *r, const Terms *t, Py_ssize_t i, Window *w)
{
    Py_ssize_t in = i - r->guard - 1, out = i - r->guard - r->window - 1;
    if (in >= 0) {
        Py_ssize_t u = in - t->t0;
        w->sum[0] += t->y[u];
        w->count += t->valid[u] != 0.0;
        if (r->energy) {
            w->sum[1] += t->t1[u];
            w->sum[2] += t->t2[u];
            w->sum[3] += t->t3[u];
            w->sum[4] += t->t4[u];
        } else if (r->window > 1) {
            w->sum[1] += t->t1[u];
            w->count2 += t->t2[u] != 0.0;
        }
    }
    if (out >= 0) {
        Py_ssize_t u = out - t->t0;
        w->sum[0] -= t->y[u];
        w->count -= t->valid[u] != 0.0;
        if (r->energy) {
            w->sum[1] -= t->t1[u];
            w->sum[2] -= t->t2[u];
            w->sum[3] -= t->t3[u];
            w->sum[4] -= t->t4[u];
        }
    }
    if (!r->energy && r->window > 1 && out + 1 >= 0) {   /* the pair ending at out + 1 */
        Py_ssize_t u = out + 1 - t->t0;
        w->sum[1] -= t->t1[u];
        w->count2 -= t->t2[u] != 0.0;
    }
}

/*
 * Robust scores of x[lo:hi] (see detect.robust_zscore). The per-position terms and the
 * centred short window first, then the trailing reference, one step per scored sample.
 */
static void robust_scan(const double *x, Py_ssize_t n, const Robust *r, Py_ssize_t lo,
                        Py_ssize_t hi, double *scratch, double *z_out, double *center_out,
                        double *scale_out)
{
    double offset = typical_value(x, 0, n, NULL);
    const Py_ssize_t S = r->shrt;
    const double floor = r->variance_floor;
    /* Positions the references of [lo, hi) reach, and the short windows of those. */
    Py_ssize_t t0 = imax(lo - r->guard - r->window - 1 - S / 2, 0);
    Py_ssize_t end = imin(hi + (S - 1) / 2 + 1, n);
    Py_ssize_t len = end - t0;
    Terms t = {.t0 = t0};
    double **arrays[] = {&t.y, &t.valid, &t.t1, &t.t2, &t.t3, &t.t4, &t.n_short, &t.short_mean};
    for (int q = 0; q < 8; q++)
        *arrays[q] = scratch + q * len;
    fill_terms(x, n, offset, r->energy, S, hi, &t, end);

    Window w = {.used = r->energy ? 5 : 2};
    reference_count(r, &t, lo, &w);
    window_counted(&w);
    const Py_ssize_t need = imax(r->min_reference, 2);
    const double sqrt_short = sqrt((double)S);
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (i > lo) {
            reference_step(r, &t, i, &w);
            if (window_drifted(&w, i)) {
                reference_count(r, &t, i, &w);
                window_counted(&w);
            }
        }
        Py_ssize_t u = i - t0;
        int enough = w.count >= need;
        /* One division per window, multiplications after it. */
        double inv_n = 1.0 / (enough ? (double)w.count : 1.0);
        double mean_ref = w.sum[0] * inv_n;
        double dev = t.y[u] - mean_ref;
        double ns = t.n_short[u];
        double var, z_sample, z_short;
        if (!r->energy) {
            var = w.sum[1] / (2.0 * (w.count2 > 0 ? (double)w.count2 : 1.0));
            if (var < floor) var = floor;
            double scale = sqrt(var), inv_scale = 1.0 / scale;
            z_sample = fabs(dev) * inv_scale;
            z_short = fabs(t.short_mean[u] - mean_ref) * (ns == S ? sqrt_short : sqrt(ns)) * inv_scale;
            scale_out[i - lo] = scale;
        } else {
            var = w.sum[1] * inv_n - mean_ref * mean_ref;
            if (var < floor) var = floor;
            double scale = sqrt(var);
            z_sample = fabs(dev) / scale;
            double ref_e = w.sum[2] * inv_n;
            double var_e = w.sum[3] * inv_n - ref_e * ref_e;
            if (var_e < floor) var_e = floor;
            z_short = fabs(t.t2[u] - ref_e) / sqrt(var_e);
            double var_r = w.sum[4] * inv_n;
            if (var_r < floor) var_r = floor;
            double z_resid = sqrt(t.t4[u] / var_r);
            z_sample = fmax(z_sample, z_resid);   /* an undefined score does not win */
            scale_out[i - lo] = scale;
        }
        if (ns < S)
            z_short = 0.0;   /* a short window cut by the signal's ends: not scored */
        double z = fmax(z_sample, z_short);
        z_out[i - lo] = (t.valid[u] != 0.0 && enough) ? z : 0.0;
        center_out[i - lo] = enough ? mean_ref + offset : NAN;
        if (!enough)
            scale_out[i - lo] = NAN;   /* no reference yet: nothing to draw */
    }
}

static PyObject *py_robust_scan(PyObject *self, PyObject *args)
{
    PyObject *ox, *oscratch, *oz, *ocenter, *oscale;
    Py_ssize_t window, guard, shrt, min_reference, lo, hi;
    int energy;
    double variance_floor;
    if (!PyArg_ParseTuple(args, "OnnnpdnnnOOOO", &ox, &window, &guard, &shrt, &energy,
                          &variance_floor, &min_reference, &lo, &hi, &oscratch, &oz, &ocenter,
                          &oscale))
        return NULL;
    Py_buffer bx = {0}, bscratch = {0}, bz = {0}, bcenter = {0}, bscale = {0};
    PyObject *result = NULL;
    if (get_buffer(ox, &bx, "x", 'f', 8, 0) < 0) goto done;
    if (get_buffer(oscratch, &bscratch, "scratch", 'f', 8, 1) < 0) goto done;
    if (get_buffer(oz, &bz, "z_out", 'f', 8, 1) < 0) goto done;
    if (get_buffer(ocenter, &bcenter, "center_out", 'f', 8, 1) < 0) goto done;
    if (get_buffer(oscale, &bscale, "scale_out", 'f', 8, 1) < 0) goto done;
    Py_ssize_t n = bx.len / 8, rows = hi - lo;
    if (window < 1 || guard < 0 || shrt < 1 || lo < 0 || hi > n || lo > hi) {
        PyErr_Format(PyExc_ValueError, "window %zd, guard %zd, short %zd and rows [%zd, %zd) "
                     "do not fit a signal of %zd samples", window, guard, shrt, lo, hi, n);
        goto done;
    }
    if (bscratch.len / 8 < 8 * (n + 1) || bz.len / 8 < rows || bcenter.len / 8 < rows ||
        bscale.len / 8 < rows) {
        PyErr_SetString(PyExc_ValueError, "scratch or output buffers are too small");
        goto done;
    }
    Robust r = {.window = window, .guard = guard, .shrt = shrt, .min_reference = min_reference,
                .energy = energy, .variance_floor = variance_floor};
    Py_BEGIN_ALLOW_THREADS
    robust_scan((const double *)bx.buf, n, &r, lo, hi, (double *)bscratch.buf, (double *)bz.buf,
                (double *)bcenter.buf, (double *)bscale.buf);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&bx);
    PyBuffer_Release(&bscratch);
    PyBuffer_Release(&bz);
    PyBuffer_Release(&bcenter);
    PyBuffer_Release(&bscale);
    return result;
}

/* ---- Welch segments (see spectral.WelchAccumulator) ------------------------------ */

/*
 * Segment s of the signal carry ++ x starts at s * step. Each is detrended (its mean
 * subtracted) and tapered into row s of out, as scipy.signal.welch does before the FFT;
 * reading the two pieces in place spares concatenating them. A segment whose mean is not
 * finite (a NaN in it) gets a row of zeros and a NaN mean: the caller leaves it out.
 */
/* One segment, the samples a[0:na] then b[0:nb]: row = (segment - its mean) * win. Returns
 * the mean; a NaN mean (a missing sample, or an infinity) leaves row to the caller. */
static double taper_segment(const double *a, Py_ssize_t na, const double *b, Py_ssize_t nb,
                            const double *win, double *row)
{
    double t[4] = {0, 0, 0, 0};
    Py_ssize_t j;
    for (j = 0; j + 4 <= na; j += 4) {
        t[0] += a[j]; t[1] += a[j + 1]; t[2] += a[j + 2]; t[3] += a[j + 3];
    }
    for (; j < na; j++) t[0] += a[j];
    for (j = 0; j + 4 <= nb; j += 4) {
        t[0] += b[j]; t[1] += b[j + 1]; t[2] += b[j + 2]; t[3] += b[j + 3];
    }
    for (; j < nb; j++) t[0] += b[j];
    double mean = ((t[0] + t[1]) + (t[2] + t[3])) / (double)(na + nb);
    if (isfinite(mean)) {
        for (j = 0; j < na; j++) row[j] = (a[j] - mean) * win[j];
        for (j = 0; j < nb; j++) row[na + j] = (b[j] - mean) * win[na + j];
    }
    return mean;
}

#ifdef WIDE_STEPS
/* The sum of x[0:n] in four lanes, sixteen samples a step (four sums per lane in flight). */
__attribute__((target("avx2"))) static inline v4d wide_sum(const double *x, Py_ssize_t n)
{
    const v4d zero = {0.0, 0.0, 0.0, 0.0};
    v4d s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    Py_ssize_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 += load4(x + j);
        s1 += load4(x + j + 4);
        s2 += load4(x + j + 8);
        s3 += load4(x + j + 12);
    }
    for (; j + 4 <= n; j += 4)
        s0 += load4(x + j);
    for (; j < n; j++)
        s0[0] += x[j];
    return (s0 + s1) + (s2 + s3);
}

__attribute__((target("avx2"))) static inline void wide_taper(const double *x, Py_ssize_t n,
                                                              double mean, const double *win,
                                                              double *row)
{
    const v4d level = (v4d){0.0, 0.0, 0.0, 0.0} + mean;
    Py_ssize_t j = 0;
    for (; j + 4 <= n; j += 4) {
        v4d v = (load4(x + j) - level) * load4(win + j);
        memcpy(row + j, &v, sizeof v);
    }
    for (; j < n; j++)
        row[j] = (x[j] - mean) * win[j];
}

/* taper_segment four lanes at a time. Everything after the first 256-bit instruction
 * stays in this function: legacy-SSE code run while the upper halves of the registers
 * are in use (no vzeroupper between) costs more than the loops themselves. */
__attribute__((target("avx2"))) static double wide_taper_segment(const double *a, Py_ssize_t na,
                                                                const double *b, Py_ssize_t nb,
                                                                const double *win, double *row)
{
    v4d t = wide_sum(a, na) + wide_sum(b, nb);
    double mean = ((t[0] + t[1]) + (t[2] + t[3])) / (double)(na + nb);
    if (isfinite(mean)) {
        wide_taper(a, na, mean, win, row);
        wide_taper(b, nb, mean, win + na, row + na);
    }
    return mean;
}
#endif

static void taper_segments(const double *carry, Py_ssize_t nc, const double *x,
                           Py_ssize_t nperseg, Py_ssize_t step, Py_ssize_t n_seg,
                           const double *win, double *out, double *means)
{
    int wide = 0;
#ifdef WIDE_STEPS
    wide = __builtin_cpu_supports("avx2");
#endif
    for (Py_ssize_t s = 0; s < n_seg; s++) {
        Py_ssize_t start = s * step;
        /* The segment is a = carry[start:nc] (maybe empty) then b = x[...]. */
        Py_ssize_t na = start < nc ? imin(nc - start, nperseg) : 0;
        const double *a = carry + (start < nc ? start : 0);
        const double *b = x + (start < nc ? 0 : start - nc);
        double *row = out + s * nperseg;
        double mean;
#ifdef WIDE_STEPS
        if (wide)
            mean = wide_taper_segment(a, na, b, nperseg - na, win, row);
        else
#endif
            mean = taper_segment(a, na, b, nperseg - na, win, row);
        if (!isfinite(mean)) {
            mean = NAN;
            for (Py_ssize_t j = 0; j < nperseg; j++) row[j] = 0.0;
        }
        means[s] = mean;
    }
}

static PyObject *py_taper_segments(PyObject *self, PyObject *args)
{
    PyObject *ocarry, *ox, *owin, *oout, *omeans;
    Py_ssize_t step;
    if (!PyArg_ParseTuple(args, "OOnOOO", &ocarry, &ox, &step, &owin, &oout, &omeans))
        return NULL;
    Py_buffer bc = {0}, bx = {0}, bw = {0}, bo = {0}, bm = {0};
    PyObject *result = NULL;
    if (get_buffer(ocarry, &bc, "carry", 'f', 8, 0) < 0) goto done;
    if (get_buffer(ox, &bx, "x", 'f', 8, 0) < 0) goto done;
    if (get_buffer(owin, &bw, "win", 'f', 8, 0) < 0) goto done;
    if (get_buffer(oout, &bo, "out", 'f', 8, 1) < 0) goto done;
    if (get_buffer(omeans, &bm, "means", 'f', 8, 1) < 0) goto done;
    Py_ssize_t nc = bc.len / 8, nx = bx.len / 8, nperseg = bw.len / 8, n = nc + nx;
    if (nperseg < 1 || step < 1 || step > nperseg) {
        PyErr_Format(PyExc_ValueError, "step %zd does not fit segments of %zd samples",
                     step, nperseg);
        goto done;
    }
    Py_ssize_t n_seg = n < nperseg ? 0 : (n - nperseg) / step + 1;
    if (bo.len / 8 < n_seg * nperseg || bm.len / 8 < n_seg) {
        PyErr_SetString(PyExc_ValueError, "out or means is too small");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    taper_segments((const double *)bc.buf, nc, (const double *)bx.buf, nperseg, step, n_seg,
                   (const double *)bw.buf, (double *)bo.buf, (double *)bm.buf);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(n_seg);
done:
    PyBuffer_Release(&bc);
    PyBuffer_Release(&bx);
    PyBuffer_Release(&bw);
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bm);
    return result;
}

/* Sums, minimum and maximum of x[0:n] into the four-lane accumulators; a NaN fails every
 * comparison, so the minimum and maximum skip it, while the sum turns NaN. */
static void sum_range(const double *x, Py_ssize_t n, double total[4], double lo[4], double hi[4])
{
    Py_ssize_t i;
    for (i = 0; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) {
            double v = x[i + j];
            total[j] += v;
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
        }
    for (; i < n; i++) {
        total[0] += x[i];
        lo[0] = x[i] < lo[0] ? x[i] : lo[0];
        hi[0] = x[i] > hi[0] ? x[i] : hi[0];
    }
}

/* The sum of (x - mean)**2 over x[0:n], all of it finite. */
static double squares_about(const double *x, Py_ssize_t n, double mean)
{
    double m[4] = {0, 0, 0, 0};
    Py_ssize_t i;
    for (i = 0; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++)
            m[j] += (x[i + j] - mean) * (x[i + j] - mean);
    for (; i < n; i++)
        m[0] += (x[i] - mean) * (x[i] - mean);
    return (m[0] + m[1]) + (m[2] + m[3]);
}

#ifdef WIDE_STEPS
/* sum_range and squares_about, four lanes in one register (minpd/maxpd keep their second
 * operand against a NaN, as the comparisons above do). */
__attribute__((target("avx2"))) static void wide_sum_range(const double *x, Py_ssize_t n,
                                                           double total[4], double lo[4],
                                                           double hi[4])
{
    /* Four sums in flight: one would wait on its own last addition at every step. */
    const v4d zero = {0.0, 0.0, 0.0, 0.0};
    v4d t0 = load4(total), t1 = zero, t2 = zero, t3 = zero;
    v4d l0 = load4(lo), l1 = l0, h0 = load4(hi), h1 = h0;
    Py_ssize_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        v4d u = load4(x + i), v = load4(x + i + 4), w = load4(x + i + 8), y = load4(x + i + 12);
        t0 += u;
        t1 += v;
        t2 += w;
        t3 += y;
        l0 = __builtin_ia32_minpd256(u, l0);
        l1 = __builtin_ia32_minpd256(v, l1);
        h0 = __builtin_ia32_maxpd256(u, h0);
        h1 = __builtin_ia32_maxpd256(v, h1);
        l0 = __builtin_ia32_minpd256(w, l0);
        l1 = __builtin_ia32_minpd256(y, l1);
        h0 = __builtin_ia32_maxpd256(w, h0);
        h1 = __builtin_ia32_maxpd256(y, h1);
    }
    v4d t = (t0 + t1) + (t2 + t3);
    v4d l = __builtin_ia32_minpd256(l1, l0), h = __builtin_ia32_maxpd256(h1, h0);
    /* The tail in these registers too: sum_range's legacy-SSE code would follow 256-bit
     * code without a vzeroupper (see wide_taper_segment). */
    for (; i + 4 <= n; i += 4) {
        v4d u = load4(x + i);
        t += u;
        l = __builtin_ia32_minpd256(u, l);
        h = __builtin_ia32_maxpd256(u, h);
    }
    for (; i < n; i++) {
        t[0] += x[i];
        l[0] = x[i] < l[0] ? x[i] : l[0];
        h[0] = x[i] > h[0] ? x[i] : h[0];
    }
    memcpy(total, &t, sizeof t);
    memcpy(lo, &l, sizeof l);
    memcpy(hi, &h, sizeof h);
}

__attribute__((target("avx2"))) static double wide_squares_about(const double *x, Py_ssize_t n,
                                                                double mean)
{
    const v4d zero = {0.0, 0.0, 0.0, 0.0}, level = zero + mean;
    v4d m0 = zero, m1 = zero, m2 = zero, m3 = zero;
    Py_ssize_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        v4d a = load4(x + i) - level, b = load4(x + i + 4) - level;
        v4d c = load4(x + i + 8) - level, d = load4(x + i + 12) - level;
        m0 += a * a;
        m1 += b * b;
        m2 += c * c;
        m3 += d * d;
    }
    v4d m = (m0 + m1) + (m2 + m3);
    for (; i + 4 <= n; i += 4) {
        v4d a = load4(x + i) - level;
        m += a * a;
    }
    for (; i < n; i++)
        m[0] += (x[i] - mean) * (x[i] - mean);
    return (m[0] + m[1]) + (m[2] + m[3]);
}
#endif

/* Valid count, missing (NaN) count, min, max, mean and sum of squared deviations. */
static PyObject *py_moments(PyObject *self, PyObject *arg)
{
    Py_buffer bx = {0};
    if (get_buffer(arg, &bx, "x", 'f', 8, 0) < 0)
        return NULL;
    const double *x = (const double *)bx.buf;
    Py_ssize_t n = bx.len / 8, count = n, i;
    double total, lo, hi, m2;
    Py_BEGIN_ALLOW_THREADS
    double t[4] = {0, 0, 0, 0};
    double l[4] = {INFINITY, INFINITY, INFINITY, INFINITY};
    double h[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int wide = 0;
#ifdef WIDE_STEPS
    wide = __builtin_cpu_supports("avx2");
    if (wide)
        wide_sum_range(x, n, t, l, h);
#endif
    if (!wide)
        sum_range(x, n, t, l, h);
    total = (t[0] + t[1]) + (t[2] + t[3]);
    lo = fmin(fmin(l[0], l[1]), fmin(l[2], l[3]));
    hi = fmax(fmax(h[0], h[1]), fmax(h[2], h[3]));
    if (isnan(total)) {   /* missing samples: count and sum the valid ones */
        count = 0;
        total = 0.0;
        for (i = 0; i < n; i++)
            if (!isnan(x[i])) { count++; total += x[i]; }
    }
    double mean = count ? total / count : 0.0;
    if (count == n) {
#ifdef WIDE_STEPS
        if (wide)
            m2 = wide_squares_about(x, n, mean);
        else
#endif
            m2 = squares_about(x, n, mean);
    } else {
        m2 = 0.0;
        for (i = 0; i < n; i++)
            if (!isnan(x[i])) m2 += (x[i] - mean) * (x[i] - mean);
    }
    total = mean;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bx);
    return Py_BuildValue("nndddd", count, n - count, lo, hi, total, m2);
}

static PyMethodDef methods[] = {
    {"zscore_scan", py_zscore_scan, METH_VARARGS,
     "zscore_scan(x, window, lo, hi, threshold_sq, variance_floor, scratch, idx_out, z_out, "
     "mean_out, var_out) -> count\n\nSee telemetry_lab.detect.seed_scan."},
    {"robust_scan", py_robust_scan, METH_VARARGS,
     "robust_scan(x, window, guard, short, energy, variance_floor, min_reference, lo, hi, "
     "scratch, z_out, center_out, scale_out)\n\nSee telemetry_lab.detect.robust_zscore."},
    {"taper_segments", py_taper_segments, METH_VARARGS,
     "taper_segments(carry, x, step, win, out, means) -> segments\n\nDetrended, tapered "
     "Welch segments of carry ++ x; see telemetry_lab.spectral.WelchAccumulator."},
    {"moments", py_moments, METH_O,
     "moments(x) -> (count, missing, min, max, mean, m2) of the non-NaN samples of x."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled inner loops of telemetry_lab (detection, statistics, Welch segments).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    PyObject *m = PyModule_Create(&module);
    const char *simd = "none";
#ifdef WIDE_STEPS
    if (__builtin_cpu_supports("avx2"))
        simd = "avx2";
#endif
    /* Which loops this machine runs: for bug reports and benchmark figures. */
    if (m && PyModule_AddStringConstant(m, "simd", simd) < 0)
        Py_CLEAR(m);
    return m;
}
