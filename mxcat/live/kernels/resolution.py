"""Resolution estimates from a frame's spot list, compiled: DIALS' and DISTL's definitions.

``estimate_d_min`` follows DIALS' ``estimate_resolution_limit``
(``dials.algorithms.spot_finding.per_image_analysis``): ln(I/σI) against d*² with σI² = I,
equal-population bins (about 20 spots, 5-20 bins), in each bin the 10th/90th percentile spots
after iterative Wilson outlier rejection (Read (1999), Acta Cryst. D55, 1759-1764; E ≥
sqrt(−ln 0.01)), a least-squares line through the upper envelope (paired, as DIALS does, with the
d*² of the lower-percentile spot), and d_min = d of the highest-d*² non-ice, non-outlier spot
below that line; −1 when undetermined. ``distl_method_1``/``distl_method_2`` follow Zhang et al.
(2006), J. Appl. Cryst. 39, 112-119, section 2.4.4, as DIALS implements them: method 1 on every
step-th spot sorted by d (at most 40 points) of the d*³-against-rank curve, method 2 on spot
counts in equal d*³ shells (d_min where two successive shells fall below 0.15 of the mean of the
first two; the outermost shell edge is the smallest spot d itself, where DIALS' arithmetic may
round it just past that spot); each returns (d_min, noisiness), (−1, −1) with too few spots.

These run once per frame on a few hundred spots; compiled, they cost microseconds instead of the
~0.5 ms of the NumPy statement, which ``tests/live/stats_reference.py`` keeps as the reference the
tests compare with. Sorting is stable everywhere (ties keep the input order, as NumPy's stable
sort); means are plain sums, so results can differ from NumPy's pairwise sums in the last bits.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["distl_method_1", "distl_method_2", "estimate_d_min"]

_E_CUT = math.sqrt(-math.log(1e-2))


@numba.njit(cache=True)
def _wilson_outliers(inten, ice, idx, out):
    """Iterative Wilson outliers among the spots ``idx``: marks them in ``out``."""
    n = idx.shape[0]
    inl = np.ones(n, np.bool_)
    while True:
        s = 0.0
        k = 0
        for q in range(n):
            if inl[q] and not ice[idx[q]]:
                s += inten[idx[q]]
                k += 1
        if k == 0:
            return
        sigma_n = s / k
        if sigma_n <= 0:
            return
        root = math.sqrt(sigma_n)
        any_new = False
        new = np.zeros(n, np.bool_)
        for q in range(n):
            if inl[q] and math.sqrt(max(inten[idx[q]], 0.0)) / root >= _E_CUT:
                new[q] = True
                any_new = True
        if not any_new:
            return
        for q in range(n):
            if new[q]:
                out[idx[q]] = True
                inl[q] = False


@numba.njit(cache=True)
def _line(x, y, n):
    """Least-squares y = m·x + c through the first ``n`` points (m = 0, c = mean y when x is constant)."""
    xm = 0.0
    ym = 0.0
    for k in range(n):
        xm += x[k]
        ym += y[k]
    xm /= n
    ym /= n
    sxx = 0.0
    sxy = 0.0
    for k in range(n):
        sxx += (x[k] - xm) * (x[k] - xm)
        sxy += (x[k] - xm) * (y[k] - ym)
    if sxx == 0.0:
        return 0.0, ym
    m = sxy / sxx
    return m, ym - m * xm


@numba.njit(cache=True, error_model="numpy")
def _estimate_d_min(dstar2, intensity, ice_in):
    n = 0
    for q in range(dstar2.shape[0]):
        if intensity[q] > 0:
            n += 1
    if n == 0:
        return -1.0
    ds2 = np.empty(n)
    inten = np.empty(n)
    ice = np.empty(n, np.bool_)
    k = 0
    for q in range(dstar2.shape[0]):
        if intensity[q] > 0:
            ds2[k] = dstar2[q]
            inten[k] = intensity[q]
            ice[k] = ice_in[q]
            k += 1
    log_isig = np.log(np.sqrt(inten))
    n_slots = min(max(n // 20, 5), 20)
    order = np.argsort(ds2, kind="mergesort")
    per = n / n_slots
    outliers = np.zeros(n, np.bool_)
    xs = np.empty(n_slots)
    ys = np.empty(n_slots)
    n_pts = 0
    lo_edge = -np.inf
    idx = np.empty(n, np.int64)
    for s in range(n_slots):
        hi_edge = ds2[order[min(int(np.rint((s + 1) * per)) - 1, n - 1)]]
        m = 0
        has_clear = False
        for q in range(n):
            if (s == 0 or ds2[q] > lo_edge) and ds2[q] <= hi_edge:
                idx[m] = q
                m += 1
                has_clear |= not ice[q]
        lo_edge = hi_edge
        if not has_clear:
            continue
        _wilson_outliers(inten, ice, idx[:m], outliers)
        use = np.empty(m, np.int64)
        u = 0
        for t in range(m):
            q = idx[t]
            if not outliers[q] and not ice[q]:
                use[u] = q
                u += 1
        if u == 0:
            continue
        use = use[:u]
        perm = use[np.argsort(log_isig[use], kind="mergesort")]
        xs[n_pts] = ds2[perm[int(math.floor(0.1 * u))]]
        ys[n_pts] = log_isig[perm[int(math.floor(0.9 * u))]]
        n_pts += 1
    if n_pts < 2:
        return -1.0
    m_u, c_u = _line(xs, ys, n_pts)
    best = -np.inf
    found = False
    for q in range(n):
        if log_isig[q] < m_u * ds2[q] + c_u and not outliers[q] and not ice[q]:
            best = max(best, ds2[q])
            found = True
    if not found:
        return -1.0
    return 1.0 / np.sqrt(best)


def estimate_d_min(*, dstar2: np.ndarray, intensity: np.ndarray, ice: np.ndarray) -> float:
    """DIALS' ``estimate_resolution_limit`` (module docstring); −1 when undetermined."""
    return float(_estimate_d_min(np.ascontiguousarray(dstar2, np.float64), np.ascontiguousarray(intensity, np.float64),
                                 np.ascontiguousarray(ice, np.bool_)))


@numba.njit(cache=True, error_model="numpy")
def _distl_1(dstar2):
    n = dstar2.shape[0]
    d = 1.0 / np.sqrt(dstar2)
    step = 2
    while n / step > 40:
        step += 1
    order = np.argsort(-d, kind="mergesort")
    m = n // step
    if m < 6:
        return -1.0, -1.0
    ds3 = np.empty(m)
    d_sub = np.empty(m)
    for i in range(m):
        ds3[i] = dstar2[order[i * step]] ** 1.5
        d_sub[i] = d[order[i * step]]
    slopes = np.empty(m - 1)
    for i in range(m - 1):
        slopes[i] = (ds3[i + 1] - ds3[0]) / (i + 1)
    skip = 3
    p_m = skip
    for i in range(skip + 1, m - 1):
        if slopes[i] > slopes[p_m]:
            p_m = i
    p_m += 1
    v0 = ds3[p_m] - ds3[0]
    v1 = -float(p_m)
    norm = math.sqrt(v0 * v0 + v1 * v1)
    v0 /= norm
    v1 /= norm
    gaps = np.zeros(p_m)
    for i in range(1, p_m):
        gaps[i] = abs(v0 * (0.0 - i) + v1 * (ds3[0] - ds3[i]))
    s = 0.0
    if p_m > 1:
        mean = gaps.sum() / p_m
        acc = 0.0
        for i in range(p_m):
            acc += (gaps[i] - mean) ** 2
        s = math.sqrt(acc / (p_m - 1))
    p_k = 0
    for i in range(1, p_m):
        if gaps[i] > gaps[p_k]:
            p_k = i
    p_g = p_k
    for i in range(p_k + 1, p_m):
        if gaps[i] > gaps[p_k] - 0.5 * s:
            p_g = i
    noisy = 0
    for i in range(m - 1):
        for j in range(i + 1, m - 1):
            if slopes[i] >= slopes[j]:
                noisy += 1
    return d_sub[p_g], noisy / ((m - 1) * (m - 2) / 2)


def distl_method_1(*, dstar2: np.ndarray) -> tuple[float, float]:
    """Zhang et al. (2006) method 1: (d_min, noisiness); (−1, −1) with too few spots."""
    m, noise = _distl_1(np.ascontiguousarray(dstar2, np.float64))
    return float(m), float(noise)


@numba.njit(cache=True, error_model="numpy")
def _distl_2(dstar2):
    d = np.unique(1.0 / np.sqrt(dstar2))[::-1]
    nd = d.shape[0]
    if nd < 4:
        return -1.0, -1.0
    ds3 = (1.0 / d) ** 3
    low = int(math.ceil(min(max(25.0, 0.05 * nd), 0.25 * nd)))
    step = ds3[min(low, nd - 1)] - ds3[0]
    if step <= 0:
        return -1.0, -1.0
    n_slots = int(math.ceil((ds3[-1] - ds3[0]) / step))
    n_slots = max(min(n_slots, 40), 20)
    step = (ds3[-1] - ds3[0]) / n_slots
    d_edges = np.empty(n_slots + 1)
    d_edges[0] = d[0]
    for k in range(1, n_slots + 1):
        d_edges[k] = 1.0 / (ds3[0] + step * k) ** (1.0 / 3.0)
    d_edges[n_slots] = d[-1]  # ds3[0] + step·n_slots is ds3[-1]: the smallest d, not a rounding of it
    d_all = 1.0 / np.sqrt(dstar2)
    counts = np.zeros(n_slots, np.int64)
    for k in range(n_slots):
        for q in range(d_all.shape[0]):
            if d_all[q] < d_edges[k] and d_all[q] >= d_edges[k + 1]:
                counts[k] += 1
    t0 = (counts[0] + counts[1]) / 2.0
    i = 0
    for i in range(n_slots - 1):
        if counts[i] < 0.15 * t0 and counts[i + 1] < 0.15 * t0:
            break
    noisy = 0
    for k in range(n_slots):
        for j in range(k + 1, n_slots):
            if counts[k] <= counts[j]:
                noisy += 1
    return d_edges[i + 1], noisy / (0.5 * n_slots * (n_slots - 1))


def distl_method_2(*, dstar2: np.ndarray) -> tuple[float, float]:
    """Zhang et al. (2006) method 2: (d_min, noisiness); (−1, −1) with too few spots."""
    m, noise = _distl_2(np.ascontiguousarray(dstar2, np.float64))
    return float(m), float(noise)
