"""Nearest-neighbour spot separations and a multiple-lattice (split-spot) score.

Nearest neighbours are found with a uniform cell list (cell side ≈ the mean spot spacing) and a
ring-by-ring search that stops once no unvisited cell can hold a closer spot, so the cost is about
O(n) for the few thousand spots of a frame. The multiple-lattice score is our own, documented
definition (there is no standard one): split or doubled spots from a second lattice appear as
pairs closer than ``close_px`` (default 5 px), far more often than for spots placed at random.
With n spots on an area A (valid pixels), random placement gives P(nn < r) = 1 − exp(−π r² n / A)
(Clark & Evans 1954, Ecology 35, 445); the score is (f_obs − f_rand) / (1 − f_rand) clipped to
[0, 1], f_obs being the fraction of spots whose nearest neighbour is closer than ``close_px``:
~0 for a single lattice or noise, towards 1 when most spots come in close pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass
class Separations:
    """Nearest-neighbour distances of one frame and their histogram."""

    nn_distance: np.ndarray
    """Per spot, distance (pixels) to its nearest neighbour (inf if alone)."""
    edges: np.ndarray
    counts: np.ndarray
    multi_lattice_score: float


@numba.njit(cache=True)
def nearest_neighbour_distances(x, y, cell):
    """Distance from each point to its nearest other point (inf when there is none)."""
    n = x.shape[0]
    out = np.full(n, np.inf)
    if n < 2:
        return out
    x0 = x.min()
    y0 = y.min()
    ncx = int((x.max() - x0) / cell) + 1
    ncy = int((y.max() - y0) / cell) + 1
    cx = np.empty(n, np.int64)
    cy = np.empty(n, np.int64)
    start = np.zeros(ncx * ncy + 1, np.int64)
    for k in range(n):
        cx[k] = int((x[k] - x0) / cell)
        cy[k] = int((y[k] - y0) / cell)
        start[cy[k] * ncx + cx[k] + 1] += 1
    for c in range(ncx * ncy):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for k in range(n):
        c = cy[k] * ncx + cx[k]
        order[fill[c]] = k
        fill[c] += 1
    max_ring = max(ncx, ncy)
    for k in range(n):
        best = np.inf
        ring = 0
        while ring <= max_ring:
            for gy in range(cy[k] - ring, cy[k] + ring + 1):
                if gy < 0 or gy >= ncy:
                    continue
                edge_row = gy == cy[k] - ring or gy == cy[k] + ring
                step = 1 if edge_row else 2 * ring
                gx = cx[k] - ring
                while gx <= cx[k] + ring:
                    if gx >= 0 and gx < ncx:
                        c = gy * ncx + gx
                        for p in range(start[c], start[c + 1]):
                            q = order[p]
                            if q != k:
                                dx = x[q] - x[k]
                                dy = y[q] - y[k]
                                d2 = dx * dx + dy * dy
                                if d2 < best:
                                    best = d2
                    if step == 0:
                        break
                    gx += step
            # any point in ring + 1 or beyond is at least ring * cell away
            if best <= (ring * cell) ** 2:
                break
            ring += 1
        out[k] = np.sqrt(best)
    return out


def spot_separations(*, x: np.ndarray, y: np.ndarray, area_px: float, max_px: float = 50.0, bin_px: float = 1.0,
                     close_px: float = 5.0) -> Separations:
    """Nearest-neighbour histogram (``bin_px`` bins up to ``max_px``) and multiple-lattice score.

    ``area_px``: usable detector area in pixels (e.g. ``SeriesConstants.n_ok``)."""
    x = np.ascontiguousarray(x, np.float64)
    y = np.ascontiguousarray(y, np.float64)
    n = len(x)
    edges = np.arange(0.0, max_px + bin_px * 0.5, bin_px)
    if n < 2:
        return Separations(nn_distance=np.full(n, np.inf), edges=edges, counts=np.zeros(len(edges) - 1, np.int64),
                           multi_lattice_score=0.0)
    span = max(float(x.max() - x.min()) * float(y.max() - y.min()), 1.0)
    cell = max(np.sqrt(span / n), 1.0)
    nn = nearest_neighbour_distances(x, y, cell)
    counts, _ = np.histogram(nn[np.isfinite(nn)], bins=edges)
    f_obs = float(np.mean(nn < close_px))
    f_rand = 1.0 - np.exp(-np.pi * close_px**2 * n / max(area_px, 1.0))
    score = 0.0 if f_rand >= 1.0 else float(np.clip((f_obs - f_rand) / (1.0 - f_rand), 0.0, 1.0))
    return Separations(nn_distance=nn, edges=edges, counts=counts.astype(np.int64), multi_lattice_score=score)
