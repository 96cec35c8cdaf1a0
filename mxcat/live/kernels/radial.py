"""Azimuthally averaged radial profile in fixed d*² bins, accumulated over frames.

The definition is the plain one of pyFAI's ``integrate1d`` without pixel splitting (Ashiotis et
al. 2015, J. Appl. Cryst. 48, 510): each valid pixel goes whole into the bin of its centre's d*²
(precomputed per series in :class:`~.geometry.SeriesConstants`, uniform bins between fixed
limits), optionally multiplied by the per-series factor 1 / (polarisation × solid angle); the
profile is sum / n_pixels per bin. Without geometry, bins are in pixels of radius from the frame
centre. Sums and counts (not means) are kept, so profiles of many frames add exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .geometry import SeriesConstants, sentinel_for


@dataclass
class RadialProfile:
    """Radial profile of one or more frames."""

    axis: str
    """``dstar2`` (bins in Å⁻²) or ``radius_px``."""
    edges: np.ndarray
    sums: np.ndarray
    n_pixels: np.ndarray
    n_frames: int = 1

    @property
    def centres(self) -> np.ndarray:
        """Bin centres in d*² (Å⁻²) or in pixels."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def d(self) -> np.ndarray:
        """Bin centres as d-spacings (Å); NaN for geometry-free profiles."""
        if self.axis != "dstar2":
            return np.full(len(self.sums), np.nan)
        with np.errstate(divide="ignore"):
            return 1.0 / np.sqrt(self.centres)

    @property
    def mean(self) -> np.ndarray:
        """Mean intensity per valid pixel and frame (NaN in empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_pixels > 0, self.sums / self.n_pixels, np.nan)

    def add(self, other: RadialProfile) -> RadialProfile:
        """Accumulate another profile with the same bins (returns self)."""
        if other.axis != self.axis or len(other.edges) != len(self.edges):
            raise ValueError("radial profiles have different bins")
        self.sums += other.sums
        self.n_pixels += other.n_pixels
        self.n_frames += other.n_frames
        return self


@numba.njit(cache=True)
def radial_sums(img, bins, weight, sentinel, n_bins):
    """Per-bin sum and count of valid pixels (``bins`` −1 excludes a pixel); each value is
    multiplied by its correction factor from ``weight``, or taken as it is when ``weight`` is None
    (that branch is removed at compile time)."""
    sums = np.zeros(n_bins, np.float64)
    counts = np.zeros(n_bins, np.int64)
    ny, nx = img.shape
    for j in range(ny):
        for i in range(nx):
            b = bins[j, i]
            v = img[j, i]
            if b >= 0 and v != sentinel and v >= 0 and (v - v) == 0:
                if weight is None:
                    sums[b] += v
                else:
                    sums[b] += v * weight[j, i]
                counts[b] += 1
    return sums, counts


def radial_profile(frame: np.ndarray, *, constants: SeriesConstants, sentinel: int | float | None = None) -> RadialProfile:
    """Radial profile of one frame with the series' bins and corrections."""
    if frame.shape != constants.shape:
        raise ValueError(f"frame shape {frame.shape} does not match series shape {constants.shape}")
    sent = sentinel_for(frame.dtype) if sentinel is None else frame.dtype.type(sentinel)
    sums, counts = radial_sums(frame, constants.radial_bin, constants.radial_weight, sent, constants.n_bins)
    return RadialProfile(axis=constants.radial_axis, edges=constants.radial_edges, sums=sums, n_pixels=counts)
