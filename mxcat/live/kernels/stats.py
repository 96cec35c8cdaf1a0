"""Per-frame statistics with the definitions of DIALS' per-image analysis, plus pixel statistics.

Spot counts and resolution estimates follow ``dials.algorithms.spot_finding.per_image_analysis``
(``stats_for_reflection_table``): ``n_spots_total`` all spots; ``n_spots_no_ice`` those outside
the ice Ih bands; ``n_spots_4A`` spots (all, as DIALS counts them) with d > 4 Å;
``total_intensity`` the summed raw intensity of the no-ice spots; resolution estimates only when
more than 10 no-ice spots exist (else −1, as DIALS). ``estimated_d_min`` follows DIALS'
``estimate_resolution_limit``: ln(I/σI) against d*² (σI² = I, Poisson), equal-population bins
(~20 spots, 5-20 bins), per bin the 10th/90th percentile spots after iterative Wilson outlier
rejection (E ≥ sqrt(−ln 0.01)), a straight line through the upper envelope (paired, as DIALS does,
with the d*² of the lower-percentile spot), and d_min = d of the highest-d*² non-ice, non-outlier
spot below that line; DIALS' unused lower-envelope fit is omitted. ``d_min_distl_method_1/2`` and
``noisiness_method_1/2`` follow Zhang et al. (2006), J. Appl. Cryst. 39, 112-119 (section 2.4.4)
as DIALS implements them: method 1 on every step-th spot sorted by d (≤ 40 points) in the d*³ vs
rank curve, method 2 on spot counts in equal d*³ shells (stop where two successive shells fall
below 0.15 of the first two). Pixel statistics are ours: ``background`` is the median of valid
pixels on a fixed stride-4 sub-grid; ``saturated_fraction`` the fraction of valid pixels
>= saturation value; ``ice_ring_score`` the largest over rings of (mean in band − mean in the
neighbouring bands) / standard deviation of the neighbouring pixels, ~0 without ice, ~ the
ring's contrast in noise units with it; ``hit`` is n_spots_no_ice >= ``hit_min_spots`` (default
30; without geometry n_spots_total is used, as no ice bands are known).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .geometry import SeriesConstants, sentinel_for
from .spots import SpotList


@dataclass
class FrameStats:
    """Statistics of one frame (resolution values are −1 when not computed, None without geometry)."""

    n_spots_total: int
    n_spots_no_ice: int
    n_spots_4A: int | None
    total_intensity: float
    estimated_d_min: float | None
    d_min_distl_method_1: float | None
    noisiness_method_1: float | None
    d_min_distl_method_2: float | None
    noisiness_method_2: float | None
    hit: bool
    background: float
    saturated_fraction: float
    ice_ring_score: float | None
    ice_ring_scores: np.ndarray | None
    n_valid_pixels: int


@numba.njit(cache=True)
def pixel_pass(img, ok, ice, near, n_rings, sentinel, saturation, stride):
    """One pass over the frame: valid and saturated counts, per-ring band/neighbour sums, and a
    strided sample of valid values. ``ice``/``near`` may be 1x1 dummies when ``n_rings`` is 0."""
    ny, nx = img.shape
    band = np.zeros((n_rings + 1, 3), np.float64)
    nbr = np.zeros((n_rings + 1, 3), np.float64)
    sample = np.empty(((ny + stride - 1) // stride) * ((nx + stride - 1) // stride), np.float64)
    n_sample = 0
    n_valid = 0
    n_sat = 0
    for j in range(ny):
        for i in range(nx):
            v = img[j, i]
            if ok[j, i] and v != sentinel and v >= 0 and (v - v) == 0:
                n_valid += 1
                f = float(v)
                if f >= saturation:
                    n_sat += 1
                if j % stride == 0 and i % stride == 0:
                    sample[n_sample] = f
                    n_sample += 1
                if n_rings > 0:
                    k = ice[j, i]
                    if k > 0:
                        band[k, 0] += 1.0
                        band[k, 1] += f
                        band[k, 2] += f * f
                    else:
                        k = near[j, i]
                        if k > 0:
                            nbr[k, 0] += 1.0
                            nbr[k, 1] += f
                            nbr[k, 2] += f * f
    return n_valid, n_sat, band, nbr, sample[:n_sample]


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares straight line y = m·x + c (closed form; ``np.polyfit`` costs ~0.5 ms a call)."""
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0, float(np.mean(y)) if len(y) else 0.0
    xm = float(np.mean(x))
    ym = float(np.mean(y))
    dx = x - xm
    m = float(dx @ (y - ym)) / float(dx @ dx)
    return m, ym - m * xm


def _wilson_outliers(intensity: np.ndarray, ice: np.ndarray, p_cutoff: float = 1e-2) -> np.ndarray:
    """Iterative Wilson outlier flags (Read 1999, Acta Cryst. D55, 1759), as in DIALS."""
    out = np.zeros(len(intensity), bool)
    e_cut = math.sqrt(-math.log(p_cutoff))
    inl = np.ones(len(intensity), bool)
    while True:
        sel = inl & ~ice
        if not sel.any():
            return out
        sigma_n = float(np.mean(intensity[sel]))
        if sigma_n <= 0:
            return out
        new = inl & (np.sqrt(np.maximum(intensity, 0)) / math.sqrt(sigma_n) >= e_cut)
        if not new.any():
            return out
        out |= new
        inl &= ~new


def estimate_d_min(*, dstar2: np.ndarray, intensity: np.ndarray, ice: np.ndarray) -> float:
    """DIALS' ``estimate_resolution_limit`` (see module docstring); −1 when undetermined."""
    sel = intensity > 0
    ds2, inten, ice = dstar2[sel], intensity[sel], ice[sel]
    n = len(ds2)
    if n == 0:
        return -1.0
    log_isig = np.log(np.sqrt(inten))  # I / sqrt(I)
    n_slots = min(max(n // 20, 5), 20)
    order = np.argsort(ds2, kind="stable")
    per = n / n_slots
    outliers = np.zeros(n, bool)
    xs_u, ys_u = [], []
    lo_edge = -np.inf
    for k in range(n_slots):
        hi_edge = ds2[order[min(int(round((k + 1) * per)) - 1, n - 1)]]
        in_bin = (ds2 > lo_edge) & (ds2 <= hi_edge) if k else (ds2 <= hi_edge)
        lo_edge = hi_edge
        if not (in_bin & ~ice).any():
            continue
        idx = np.flatnonzero(in_bin)
        o = _wilson_outliers(inten[idx], ice[idx])
        outliers[idx] = o
        use = idx[~o & ~ice[idx]]
        if len(use) == 0:
            continue
        perm = use[np.argsort(log_isig[use], kind="stable")]
        i_lower = perm[int(math.floor(0.1 * len(perm)))]
        i_upper = perm[int(math.floor(0.9 * len(perm)))]
        xs_u.append(ds2[i_lower])
        ys_u.append(log_isig[i_upper])
    if len(xs_u) < 2:
        return -1.0
    m_u, c_u = _fit(np.array(xs_u), np.array(ys_u))
    inside = (log_isig < m_u * ds2 + c_u) & ~outliers & ~ice
    if not inside.any():
        return -1.0
    return float(1.0 / math.sqrt(ds2[inside].max()))


def distl_method_1(*, dstar2: np.ndarray) -> tuple[float, float]:
    """Zhang et al. (2006) method 1: (d_min, noisiness); (−1, −1) with too few spots."""
    d = 1.0 / np.sqrt(dstar2)
    n = len(d)
    step = 2
    while n / step > 40:
        step += 1
    order = np.argsort(-d, kind="stable")
    pick = order[[i * step for i in range(n // step)]]
    ds3 = dstar2[pick] ** 1.5
    d_sub = d[pick]
    m = len(ds3)
    if m < 6:
        return -1.0, -1.0
    slopes = (ds3[1:] - ds3[0]) / np.arange(1, m)
    skip = 3
    p_m = int(np.argmax(slopes[skip:])) + 1 + skip
    x1 = np.array([0.0, ds3[0]])
    x2 = np.array([float(p_m), ds3[p_m]])
    v = np.array([x2[1] - x1[1], -(x2[0] - x1[0])])
    v /= np.linalg.norm(v)
    idx = np.arange(1, p_m, dtype=np.float64)
    gaps = np.concatenate([[0.0], np.abs(v[0] * (x1[0] - idx) + v[1] * (x1[1] - ds3[1:p_m]))])
    s = float(np.std(gaps, ddof=1)) if len(gaps) > 1 else 0.0
    p_k = int(np.argmax(gaps))
    p_g = p_k
    for i in range(p_k + 1, len(gaps)):
        if gaps[i] > gaps[p_k] - 0.5 * s:
            p_g = i
    sl = slopes[: m - 1]
    noisy = int(np.count_nonzero(np.triu(sl[:, None] >= sl[None, :], k=1)))  # pairs i < j with sl[i] >= sl[j]
    noisiness = noisy / ((m - 1) * (m - 2) / 2)
    return float(d_sub[p_g]), float(noisiness)


def distl_method_2(*, dstar2: np.ndarray) -> tuple[float, float]:
    """Zhang et al. (2006) method 2: (d_min, noisiness); (−1, −1) with too few spots."""
    d = np.unique(1.0 / np.sqrt(dstar2))[::-1]
    if len(d) < 4:
        return -1.0, -1.0
    ds3 = (1.0 / d) ** 3
    low = int(math.ceil(min(max(25, 0.05 * len(d)), 0.25 * len(d))))
    step = ds3[min(low, len(d) - 1)] - ds3[0]
    if step <= 0:
        return -1.0, -1.0
    n_slots = int(math.ceil((ds3[-1] - ds3[0]) / step))
    n_slots = max(min(n_slots, 40), 20)
    step = (ds3[-1] - ds3[0]) / n_slots
    edges_ds3 = ds3[0] + step * np.arange(n_slots + 1)
    d_edges = np.empty(n_slots + 1)
    d_edges[0] = d[0]
    d_edges[1:] = 1.0 / edges_ds3[1:] ** (1.0 / 3.0)
    d_all = 1.0 / np.sqrt(dstar2)
    counts = np.count_nonzero((d_all[None, :] < d_edges[:-1, None]) & (d_all[None, :] >= d_edges[1:, None]), axis=1)
    t0 = (counts[0] + counts[1]) / 2.0
    i = 0
    for i in range(n_slots - 1):
        if counts[i] < 0.15 * t0 and counts[i + 1] < 0.15 * t0:
            break
    d_min = float(d_edges[i + 1])
    noisy = int(np.count_nonzero(np.triu(counts[:, None] <= counts[None, :], k=1)))  # pairs k < j, counts[k] <= counts[j]
    return d_min, noisy / (0.5 * n_slots * (n_slots - 1))


def frame_statistics(frame: np.ndarray, *, spots: SpotList, constants: SeriesConstants,
                     saturation_value: float | None = None, hit_min_spots: int = 30,
                     sentinel: int | float | None = None) -> FrameStats:
    """All per-frame statistics of ``frame`` given its spots (see module docstring)."""
    sent = sentinel_for(frame.dtype) if sentinel is None else frame.dtype.type(sentinel)
    sat = np.inf if saturation_value is None else float(saturation_value)
    geo = constants.has_geometry
    n_rings = len(constants.ice_dstar2) if geo else 0
    dummy = np.zeros((1, 1), np.int8)
    ice_px = constants.ice_band if geo else dummy
    near_px = constants.ice_near if geo else dummy
    n_valid, n_sat, band, nbr, sample = pixel_pass(frame, constants.ok, ice_px, near_px, n_rings, sent, sat, 4)
    return finish_statistics(spots=spots, constants=constants, n_valid=int(n_valid), n_sat=int(n_sat), band=band,
                             nbr=nbr, sample=sample, hit_min_spots=hit_min_spots)


def finish_statistics(*, spots: SpotList, constants: SeriesConstants, n_valid: int, n_sat: int, band: np.ndarray,
                      nbr: np.ndarray, sample: np.ndarray | None, hit_min_spots: int,
                      background: float | None = None) -> FrameStats:
    """Statistics from the pixel-pass accumulators (shared by :func:`frame_statistics` and the
    fused passes); ``background`` replaces the median of ``sample`` when given."""
    geo = constants.has_geometry
    n_rings = len(constants.ice_dstar2) if geo else 0
    if background is None:
        background = _median(sample) if sample is not None and len(sample) else float("nan")
    ice_scores = None
    ice_score = None
    if geo and n_rings:
        ice_scores = np.zeros(n_rings)
        for k in range(1, n_rings + 1):
            nb, nn = band[k, 0], nbr[k, 0]
            if nb >= 10 and nn >= 10:
                mb = band[k, 1] / nb
                mn = nbr[k, 1] / nn
                sd = math.sqrt(max(nbr[k, 2] / nn - mn * mn, 0.0))
                ice_scores[k - 1] = (mb - mn) / max(sd, 1.0)
        ice_score = float(ice_scores.max())
    n_total = spots.n
    if geo:
        in_ice = constants.in_ice_band(spots.dstar2)
        n_no_ice = int(np.count_nonzero(~in_ice))
        n_4a = int(np.count_nonzero(spots.dstar2 < 1.0 / 16.0))
        total_intensity = float(spots.intensity[~in_ice].sum())
        est = m1 = m2 = n1 = n2 = -1.0
        if n_no_ice > 10:
            ds2 = spots.dstar2
            good = ds2 > 0
            est = estimate_d_min(dstar2=ds2[good], intensity=spots.intensity[good], ice=in_ice[good])
            m1, n1 = distl_method_1(dstar2=ds2[good])
            m2, n2 = distl_method_2(dstar2=ds2[good])
        hit = n_no_ice >= hit_min_spots
    else:
        n_no_ice = n_total
        n_4a = None
        total_intensity = float(spots.intensity.sum())
        est = m1 = m2 = n1 = n2 = None
        hit = n_total >= hit_min_spots
    return FrameStats(n_spots_total=n_total, n_spots_no_ice=n_no_ice, n_spots_4A=n_4a, total_intensity=total_intensity,
                      estimated_d_min=est, d_min_distl_method_1=m1, noisiness_method_1=n1, d_min_distl_method_2=m2,
                      noisiness_method_2=n2, hit=bool(hit), background=background,
                      saturated_fraction=n_sat / n_valid if n_valid else 0.0, ice_ring_score=ice_score,
                      ice_ring_scores=ice_scores, n_valid_pixels=int(n_valid))


def _median(sample: np.ndarray) -> float:
    """``np.median`` of the background sample (nan when empty); partition instead of a full sort."""
    n = len(sample)
    if n == 0:
        return float("nan")
    if sample.dtype == np.float64 and sample.ndim == 1:
        m = _count_median(sample)
        if m == m:
            return m
    return float(np.median(sample))


@numba.njit(cache=True)
def _count_median(sample):
    """Median of small non-negative whole numbers by counting (the value ``np.median`` gives);
    nan when a value is not a whole number in [0, 2^16) (the caller then uses ``np.median``)."""
    n = sample.shape[0]
    top = 0.0
    for i in range(n):
        v = sample[i]
        if not (v >= 0.0 and v < 65536.0 and v == np.floor(v) and math.copysign(1.0, v) > 0.0):
            return np.nan
        top = max(top, v)
    lanes = np.zeros((4, int(top) + 1), np.int64)  # 4 lanes: runs of equal values do not serialise
    for i in range(n):
        lanes[i & 3, int(sample[i])] += 1
    counts = lanes[0] + lanes[1] + lanes[2] + lanes[3]
    k = (n - 1) // 2  # lower middle (0-based); upper middle is k + 1 when n is even
    c = 0
    lo = -1
    for j in range(counts.shape[0]):
        c += counts[j]
        if lo < 0 and c > k:
            lo = j
        if c > k + (1 - n % 2):
            if n % 2 == 1:
                return float(lo)
            return (float(lo) + float(j)) / 2.0
    return np.nan
