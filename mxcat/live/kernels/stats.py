"""Per-frame statistics with the definitions of DIALS' per-image analysis, plus pixel statistics.

Spot counts and resolution estimates follow ``dials.algorithms.spot_finding.per_image_analysis``
(``stats_for_reflection_table``): ``n_spots_total`` all spots; ``n_spots_no_ice`` those outside
the ice Ih bands; ``n_spots_4A`` spots (all, as DIALS counts them) with d > 4 Å;
``total_intensity`` the summed raw intensity of the no-ice spots; resolution estimates only when
more than 10 no-ice spots exist (else −1, as DIALS): ``estimated_d_min`` (DIALS'
``estimate_resolution_limit``; its unused lower-envelope fit is omitted) and
``d_min_distl_method_1/2`` with ``noisiness_method_1/2`` (Zhang et al. (2006), J. Appl. Cryst. 39,
112-119), defined and compiled in :mod:`.resolution`. Pixel statistics are ours: ``background`` is the median of valid
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
from .resolution import distl_method_1, distl_method_2, estimate_d_min
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
