"""Per-series constants for the live kernels: valid pixels, d*^2 per pixel, radial bins, ice bands.

Geometry follows the dxtbx/NXmx convention DIALS uses for a flat detector normal to the beam:
pixel (slow=j, fast=i) covers [i, i+1) x [j, j+1) in pixel coordinates, so its centre is at
(i + 0.5, j + 0.5); the beam centre (x = fast, y = slow) is given in the same coordinates. With
r the distance from the beam centre in metres and D the sample-detector distance,
cos 2θ = D / sqrt(D² + r²) and d*² = 4 sin²θ / λ² = 2 (1 − cos 2θ) / λ² (Å⁻²). Ice rings are the
strongest reflections of hexagonal ice Ih (d = 3.897 … 1.721 Å, the list DIALS' ice-ring filter
and DISTL flag); a pixel or spot lies in a ring's band when |d*² − 1/d²| <= ``ice_half_width``
(default 0.002 Å⁻², i.e. a full band of 0.004 Å⁻², the ``ice_rings_width`` of DIALS'
per-image analysis), and in its "neighbour" band when half_width < |Δ| <= 3·half_width (used
as local background for the ice-ring score). Invalid pixels are those flagged in the detector
mask (non-zero, DECTRIS convention) plus, per frame, the sentinel 2^n − 1 of the frame's integer
type (2^(n−1) − 1 for signed types), negative values, NaN and infinities; the sentinel test is done inline by
every kernel, so no per-frame mask is ever built. Everything here is computed once per series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
from numba import types
from numba.extending import overload

ICE_RINGS_D: tuple[float, ...] = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.948, 1.918, 1.883, 1.721)
"""d-spacings (Å) of the strongest hexagonal ice Ih powder rings."""


def sentinel_for(dtype: np.dtype | type) -> int | float:
    """The value marking gaps and dead pixels for ``dtype``: 2^n − 1 (unsigned), 2^(n−1) − 1
    (signed), −1 for floating point (negative values, NaN and infinities are always invalid)."""
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        return dt.type(np.iinfo(dt).max)
    return dt.type(-1)


def dstar2_of(*, x: np.ndarray, y: np.ndarray, beam_centre_x: float, beam_centre_y: float,
              pixel_size_x: float, pixel_size_y: float, distance: float, wavelength: float) -> np.ndarray:
    """d*² (Å⁻²) at pixel coordinates ``x`` (fast) and ``y`` (slow), pixel centres at i + 0.5."""
    dx = (np.asarray(x, np.float64) - beam_centre_x) * pixel_size_x
    dy = (np.asarray(y, np.float64) - beam_centre_y) * pixel_size_y
    cos2t = distance / np.sqrt(distance * distance + dx * dx + dy * dy)
    return 2.0 * (1.0 - cos2t) / (wavelength * wavelength)


def zero_of(v):  # pragma: no cover - replaced in compiled code
    """A zero of the type of ``v`` (never NaN: ``v - v`` is NaN for NaN or inf)."""
    return type(v)(0)


@overload(zero_of, jit_options={"cache": True})
def _zero_of_ol(v):
    if isinstance(v, types.Float):
        ty = np.float32 if v.bitwidth == 32 else np.float64
        return lambda v: ty(0.0)
    if isinstance(v, types.Integer):
        return lambda v: v ^ v
    return None


@numba.njit(cache=True)
def _fill_geometry(ny, nx, bcx, bcy, px, py, dist, wl, polf, solid, dstar2, weight, use_weight):
    inv_wl2 = 1.0 / (wl * wl)
    d2 = dist * dist
    for j in range(ny):
        dy = (j + 0.5 - bcy) * py
        for i in range(nx):
            dx = (i + 0.5 - bcx) * px
            rr = dx * dx + dy * dy
            cos2t = dist / np.sqrt(d2 + rr)
            dstar2[j, i] = 2.0 * (1.0 - cos2t) * inv_wl2
            w = 1.0
            if polf >= 0.0:
                sin2 = 1.0 - cos2t * cos2t
                cos2phi = (dx * dx - dy * dy) / rr if rr > 0.0 else 0.0
                w *= 0.5 * (1.0 + cos2t * cos2t - polf * cos2phi * sin2)
            if solid:
                w *= cos2t * cos2t * cos2t
            if use_weight:  # else a 1x1 placeholder
                weight[j, i] = 1.0 / w


@numba.njit(cache=True)
def _fill_bins(coord, ok, lo, hi, n_bins, ring_c, half_width, bins, ice, near):
    ny, nx = coord.shape
    scale = n_bins / (hi - lo)
    n_rings = ring_c.shape[0]
    for j in range(ny):
        for i in range(nx):
            if not ok[j, i]:
                bins[j, i] = -1
                continue
            c = coord[j, i]
            if c < lo or c > hi:
                bins[j, i] = -1
            else:
                bins[j, i] = min(int((c - lo) * scale), n_bins - 1)
            if n_rings > 0:
                best = 0
                bd = 1e30
                for k in range(n_rings):
                    dd = abs(c - ring_c[k])
                    if dd < bd:
                        bd = dd
                        best = k
                if bd <= half_width:
                    ice[j, i] = best + 1
                elif bd <= 3.0 * half_width:
                    near[j, i] = best + 1


@dataclass(eq=False)
class SeriesConstants:
    """Everything the kernels need that is constant over one series (build once, share read-only).

    ``ok`` is 1 where the detector mask allows the pixel; ``dstar2`` is float32 d*² (Å⁻²) or None
    without geometry; ``radial_bin`` is the profile bin of each pixel (−1: excluded);
    ``radial_edges`` are the bin edges in d*² (``radial_axis == "dstar2"``) or in pixels from
    the frame centre (``"radius_px"``, geometry-free); ``radial_weight`` multiplies intensities
    in the profile (1 / (polarisation × solid angle)) or is None; ``ice_band``/``ice_near`` hold
    ring index + 1 per pixel (0 elsewhere) or are None without geometry.
    """

    shape: tuple[int, int]
    has_geometry: bool
    beam_centre_x: float
    beam_centre_y: float
    ok: np.ndarray = field(repr=False)
    radial_bin: np.ndarray = field(repr=False)
    radial_edges: np.ndarray = field(repr=False)
    radial_axis: str = "dstar2"
    pixel_size_x: float | None = None
    pixel_size_y: float | None = None
    distance: float | None = None
    wavelength: float | None = None
    dstar2: np.ndarray | None = field(default=None, repr=False)
    radial_weight: np.ndarray | None = field(default=None, repr=False)
    ice_band: np.ndarray | None = field(default=None, repr=False)
    ice_near: np.ndarray | None = field(default=None, repr=False)
    ice_dstar2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ice_half_width: float = 0.002
    n_ok: int = 0

    @property
    def n_bins(self) -> int:
        return len(self.radial_edges) - 1

    @classmethod
    def build(cls, *, shape: tuple[int, int], beam_centre_x: float, beam_centre_y: float,
              pixel_size_x: float, pixel_size_y: float, distance: float, wavelength: float,
              mask: np.ndarray | None = None, n_bins: int = 250, dstar2_limits: tuple[float, float] | None = None,
              ice_rings_d: tuple[float, ...] = ICE_RINGS_D, ice_half_width: float = 0.002,
              polarisation_factor: float | None = None, solid_angle: bool = False) -> SeriesConstants:
        """Constants for a series with known geometry (metres, Å, pixels; see module docstring).

        ``mask``: non-zero marks a bad pixel. ``dstar2_limits``: profile range in Å⁻² (default:
        0 to the largest d*² of a usable pixel). ``polarisation_factor`` (e.g. 0.99, horizontal)
        and ``solid_angle`` (cos³ 2θ) enable the corresponding radial-profile corrections.
        """
        ny, nx = (int(shape[0]), int(shape[1]))
        ok = _ok_from_mask(mask, (ny, nx))
        dstar2 = np.empty((ny, nx), np.float32)
        use_weight = polarisation_factor is not None or solid_angle
        weight = np.empty((ny, nx) if use_weight else (1, 1), np.float32)  # no frame-sized array when unused
        polf = -1.0 if polarisation_factor is None else float(polarisation_factor)
        _fill_geometry(ny, nx, float(beam_centre_x), float(beam_centre_y), float(pixel_size_x), float(pixel_size_y),
                       float(distance), float(wavelength), polf, bool(solid_angle), dstar2, weight, use_weight)
        if dstar2_limits is None:
            hi = float(dstar2[ok.astype(bool)].max()) if ok.any() else 1.0
            lo = 0.0
        else:
            lo, hi = (float(dstar2_limits[0]), float(dstar2_limits[1]))
        ring_c = np.array([1.0 / (d * d) for d in ice_rings_d], np.float64)
        bins = np.empty((ny, nx), np.int16 if n_bins < 32767 else np.int32)
        ice = np.zeros((ny, nx), np.int8)
        near = np.zeros((ny, nx), np.int8)
        _fill_bins(dstar2, ok, lo, hi, int(n_bins), ring_c, float(ice_half_width), bins, ice, near)
        return cls(shape=(ny, nx), has_geometry=True, beam_centre_x=float(beam_centre_x), beam_centre_y=float(beam_centre_y),
                   ok=ok, radial_bin=bins, radial_edges=np.linspace(lo, hi, int(n_bins) + 1), radial_axis="dstar2",
                   pixel_size_x=float(pixel_size_x), pixel_size_y=float(pixel_size_y), distance=float(distance),
                   wavelength=float(wavelength), dstar2=dstar2, radial_weight=weight if use_weight else None,
                   ice_band=ice, ice_near=near, ice_dstar2=ring_c, ice_half_width=float(ice_half_width),
                   n_ok=int(np.count_nonzero(ok)))

    @classmethod
    def build_without_geometry(cls, *, shape: tuple[int, int], mask: np.ndarray | None = None,
                               n_bins: int = 250) -> SeriesConstants:
        """Constants for files without geometry: beam centre = frame centre, radial profile in
        pixels of radius, no d-spacings (resolution statistics and ice rings are omitted)."""
        ny, nx = (int(shape[0]), int(shape[1]))
        ok = _ok_from_mask(mask, (ny, nx))
        bcx, bcy = nx / 2.0, ny / 2.0
        yy, xx = np.ogrid[0:ny, 0:nx]
        radius = np.hypot((xx + 0.5 - bcx).astype(np.float32), (yy + 0.5 - bcy).astype(np.float32)).astype(np.float32)
        hi = float(radius.max()) + 1e-3
        bins = np.empty((ny, nx), np.int32)
        dummy = np.zeros((1, 1), np.int8)
        _fill_bins(radius, ok, 0.0, hi, int(n_bins), np.zeros(0), 0.0, bins, dummy, dummy)
        return cls(shape=(ny, nx), has_geometry=False, beam_centre_x=bcx, beam_centre_y=bcy, ok=ok, radial_bin=bins,
                   radial_edges=np.linspace(0.0, hi, int(n_bins) + 1), radial_axis="radius_px", n_ok=int(np.count_nonzero(ok)))

    @classmethod
    def from_series(cls, info, **kwargs) -> SeriesConstants:
        """Build from a :class:`~mxcat.live.frames.SeriesInfo` (geometry-free when it lacks geometry)."""
        if info.shape is None:
            raise ValueError(f"series {info.series_id}: shape unknown, cannot build kernel constants")
        if info.has_geometry:
            return cls.build(shape=info.shape, beam_centre_x=info.beam_centre_x, beam_centre_y=info.beam_centre_y,
                             pixel_size_x=info.pixel_size_x, pixel_size_y=info.pixel_size_y, distance=info.distance,
                             wavelength=info.wavelength, mask=info.pixel_mask, **kwargs)
        return cls.build_without_geometry(shape=info.shape, mask=info.pixel_mask, **kwargs)

    def spot_dstar2(self, *, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d*² (Å⁻²) at spot centroids (NaN without geometry)."""
        if not self.has_geometry:
            return np.full(np.shape(x), np.nan)
        return dstar2_of(x=x, y=y, beam_centre_x=self.beam_centre_x, beam_centre_y=self.beam_centre_y,
                         pixel_size_x=self.pixel_size_x, pixel_size_y=self.pixel_size_y, distance=self.distance,
                         wavelength=self.wavelength)

    def in_ice_band(self, dstar2: np.ndarray) -> np.ndarray:
        """True where d*² lies within ``ice_half_width`` of an ice Ih ring (False without geometry)."""
        ds = np.asarray(dstar2, np.float64)
        if not self.has_geometry or len(self.ice_dstar2) == 0:
            return np.zeros(ds.shape, bool)
        return (np.abs(ds[..., None] - self.ice_dstar2) <= self.ice_half_width).any(axis=-1)


def _ok_from_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, np.uint8)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} does not match frame shape {shape}")
    return np.ascontiguousarray(m == 0, dtype=np.uint8)  # C order whatever the mask's: kernels read flat rows
