"""File replay sources: NXmx/Eiger HDF5 (masters and bare DECTRIS data files) and CBF series.

Each source is an iterable that yields one :class:`~mxcat.live.frames.SeriesInfo`, then one
:class:`~mxcat.live.frames.Frame` per image, then a :class:`~mxcat.live.frames.SeriesEnd`, like the
stream sources. HDF5 images are read one frame (one chunk, bitshuffle-LZ4 via hdf5plugin) at a time.
Geometry comes, in increasing priority, from the file (NXmx master fields and ``detectorSpecific``;
the Pilatus miniCBF header), a CrystFEL ``.geom`` (:func:`geometry_from_crystfel`) and explicit
``overrides`` (SeriesInfo field names). A series without geometry still yields frames; this is
logged once per source. Data files a master points to (external links, VDS sources) are checked
before reading: a missing one raises :class:`MissingDataFile` naming it.
"""

from __future__ import annotations

import glob as _glob
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mxcat.live.frames import Frame, SeriesEnd, SeriesInfo
from mxcat.live.sources.cbf import CbfError, read_cbf

__all__ = ["CbfSource", "Hdf5Source", "MissingDataFile", "SourceFileError", "geometry_from_crystfel"]

log = logging.getLogger(__name__)

Item = SeriesInfo | Frame | SeriesEnd
_INFO_FIELDS = {f.name for f in fields(SeriesInfo)}
_LENGTH = {
    "m": 1.0,
    "meter": 1.0,
    "metre": 1.0,
    "meters": 1.0,
    "mm": 1e-3,
    "millimeter": 1e-3,
    "um": 1e-6,
    "micron": 1e-6,
    "microns": 1e-6,
    "cm": 1e-2,
}
_PHOTON_EV_ANGSTROM = 12398.4198


class SourceFileError(ValueError):
    """A replay file cannot be used: names the file and the reason."""

    def __init__(self, reason: str, *, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class MissingDataFile(SourceFileError):
    """A master file refers to a data file that does not exist (``missing`` is its path)."""

    def __init__(self, reason: str, *, path: str | Path | None = None, missing: str | Path = "") -> None:
        self.missing = str(missing)
        super().__init__(reason, path=path)


def _apply(info: SeriesInfo, values: Mapping[str, Any], what: str) -> SeriesInfo:
    unknown = sorted(set(values) - _INFO_FIELDS)
    if unknown:
        raise SourceFileError(f"unknown {what} {unknown}; known: {sorted(_INFO_FIELDS)}")
    return replace(info, **{k: v for k, v in values.items() if v is not None})


def geometry_from_crystfel(geom: Any, shape: tuple[int, int] | None = None) -> dict[str, Any]:
    """SeriesInfo values from a CrystFEL geometry (a path or :class:`~mxcat.adapters.crystfel_geom.Geometry`).

    The beam centre is the (fs, ss) position where every panel places the beam, when the panels agree
    within a pixel (one detector written as one array); otherwise it is left out. The pixel mask
    (bit 0) covers bad regions given in fs/ss, when *shape* is known.
    """
    from mxcat.adapters.crystfel_geom import Geometry, read_geometry

    g: Geometry = geom if isinstance(geom, Geometry) else read_geometry(geom)
    out: dict[str, Any] = {}
    res = {p.res for p in g.panels}
    if len(res) == 1:
        out["pixel_size_x"] = out["pixel_size_y"] = 1.0 / res.pop()
    if (d := g.camera_length()) is not None:
        out["distance"] = d
    if isinstance(g.photon_energy, (int, float)) and g.photon_energy > 0:
        out["wavelength"] = _PHOTON_EV_ANGSTROM / float(g.photon_energy)
    centres = []
    for p in g.panels:
        m = np.array([[p.fs[0], p.ss[0]], [p.fs[1], p.ss[1]]], dtype=float)
        if abs(np.linalg.det(m)) < 1e-9:
            continue
        a, b = np.linalg.solve(m, [-p.corner_x, -p.corner_y])
        centres.append((p.min_fs + a, p.min_ss + b))
    if centres:
        c = np.array(centres)
        if np.all(np.ptp(c, axis=0) <= 1.0):
            out["beam_centre_x"], out["beam_centre_y"] = (float(v) for v in c.mean(axis=0))
        else:
            log.warning(
                "CrystFEL geometry: panels place the beam at different array positions; no single beam centre"
            )
    if shape is not None:
        mask = np.zeros(shape, dtype=np.uint32)
        for r in g.bad_regions:
            if r.in_fsss:
                mask[r.min_ss : (r.max_ss or 0) + 1, r.min_fs : (r.max_fs or 0) + 1] |= 1
        if mask.any():
            out["pixel_mask"] = mask
    return out


# --------------------------------------------------------------------------- HDF5


def _h5():
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters)

    return h5py


def _scalar(f: Any, path: str) -> Any:
    d = f.get(path)
    if d is None or not hasattr(d, "shape") or d.size != 1:
        return None
    v = d[()]
    v = v.reshape(-1)[0] if hasattr(v, "reshape") and np.ndim(v) else v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _length(f: Any, path: str) -> float | None:
    v = _scalar(f, path)
    if not isinstance(v, (int, float)):
        return None
    units = f[path].attrs.get("units", b"m")
    units = (units.decode() if isinstance(units, bytes) else str(units)).strip().lower()
    scale = _LENGTH.get(units)
    if scale is None:
        log.warning("%s: unit %r is not a length unit known here; value left out", path, units)
        return None
    return float(v) * scale


def _number(f: Any, *paths: str) -> float | None:
    for p in paths:
        v = _scalar(f, p)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _master_info(f: Any) -> dict[str, Any]:
    """SeriesInfo values from NXmx / DECTRIS master fields (unknown ones left out)."""
    det = "/entry/instrument/detector"
    ds = det + "/detectorSpecific"
    out: dict[str, Any] = {}
    out["distance"] = (
        _length(f, det + "/distance")
        if f.get(det + "/distance") is not None
        else _length(f, det + "/detector_distance")
    )
    out["pixel_size_x"] = _length(f, det + "/x_pixel_size")
    out["pixel_size_y"] = _length(f, det + "/y_pixel_size")
    out["beam_centre_x"] = _number(f, det + "/beam_center_x")
    out["beam_centre_y"] = _number(f, det + "/beam_center_y")
    wl = _number(
        f, "/entry/instrument/beam/incident_wavelength", "/entry/instrument/monochromator/wavelength"
    )
    if wl is None and (e := _number(f, ds + "/photon_energy")):
        wl = _PHOTON_EV_ANGSTROM / e
    out["wavelength"] = wl
    out["count_time"] = _number(f, det + "/count_time")
    out["frame_time"] = _number(f, det + "/frame_time")
    sat = _number(f, det + "/saturation_value", ds + "/countrate_correction_count_cutoff")
    out["saturation_value"] = int(sat) if sat is not None else None
    bd = _number(f, det + "/bit_depth_image", det + "/bit_depth_readout")
    out["bit_depth"] = int(bd) if bd is not None else None
    out["detector"] = _scalar(f, det + "/description")
    n = _number(f, ds + "/nimages")
    trig = _number(f, ds + "/ntrigger")
    out["n_images"] = int(n * (trig or 1)) if n else None
    out["omega_start"] = _number(f, "/entry/sample/goniometer/omega_start")
    out["omega_increment"] = _number(f, "/entry/sample/goniometer/omega_increment")
    if out["omega_start"] is None:
        for p in (
            "/entry/data/omega",
            "/entry/sample/transformations/omega",
            "/entry/sample/sample_omega/omega",
        ):
            d = f.get(p)
            if d is not None and getattr(d, "ndim", 0) == 1 and d.shape[0] >= 1:
                om = d[: min(2, d.shape[0])]
                out["omega_start"] = float(om[0])
                if om.size > 1:
                    out["omega_increment"] = float(om[1] - om[0])
                break
    mask = f.get(ds + "/pixel_mask")
    if mask is not None and getattr(mask, "ndim", 0) == 2:
        out["pixel_mask"] = mask[()].astype(np.uint32, copy=False)
    return {k: v for k, v in out.items() if v is not None}


class Hdf5Source:
    """Replay an NXmx/Eiger master or a bare DECTRIS data file, frame by frame.

    *geometry*: a CrystFEL ``.geom`` path or a parsed Geometry; *overrides*: SeriesInfo field values
    that win over everything read from files. *series_id* defaults to the file stem (``_master``
    dropped). :meth:`series_info` reads only metadata (works while data files are absent);
    iterating checks that every data file exists, raising :class:`MissingDataFile` otherwise.
    """

    protocol = "hdf5"

    def __init__(
        self,
        path: str | Path,
        *,
        geometry: Any = None,
        overrides: Mapping[str, Any] | None = None,
        series_id: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.geometry = geometry
        self.overrides = dict(overrides or {})
        self.series_id = series_id or re.sub(
            r"(_master)?(\.(h5|hdf5|nxs|hdf))?$", "", self.path.name, flags=re.IGNORECASE
        )
        self._info: SeriesInfo | None = None

    # -- metadata
    def _datasets(self, f: Any) -> list[tuple[str, str | None]]:
        """(HDF5 path in the master, external file or None) of each image dataset, in order."""
        h5py = _h5()
        g = f.get("/entry/data")
        if g is None:
            raise SourceFileError("no /entry/data group: not an NXmx/Eiger file", path=self.path)
        if "data" in g and isinstance(g.get("data", getlink=True), h5py.HardLink):
            return [("/entry/data/data", None)]  # one dataset (bare data file, or a VDS over all data files)
        linked = sorted(k for k in g if re.fullmatch(r"data_\d+", k))
        if linked:
            out = []
            for k in linked:
                link = g.get(k, getlink=True)
                out.append(
                    (f"/entry/data/{k}", link.filename if isinstance(link, h5py.ExternalLink) else None)
                )
            return out
        if "data" in g:
            return [("/entry/data/data", None)]
        raise SourceFileError("/entry/data has neither data nor data_NNNNNN", path=self.path)

    def _check_files(self, f: Any) -> None:
        missing: list[str] = []
        for dpath, ext in self._datasets(f):
            names = [ext] if ext else []
            if ext is None:
                d = f.get(dpath)
                if d is not None and d.is_virtual:
                    h5py = _h5()
                    for vs in d.virtual_sources():
                        if vs.file_name != ".":
                            names.append(vs.file_name)
                            continue
                        # a source inside the master: usually an external link to a data file
                        parent, _, leaf = vs.dset_name.rpartition("/")
                        link = (
                            f[parent or "/"].get(leaf, getlink=True) if parent == "" or parent in f else None
                        )
                        if isinstance(link, h5py.ExternalLink):
                            names.append(link.filename)
                        elif link is None:
                            missing.append(f"{self.path}:{vs.dset_name}")
            for name in dict.fromkeys(names):
                p = Path(name)
                if not p.is_absolute():
                    p = self.path.parent / p
                if not p.is_file():
                    missing.append(str(p))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise MissingDataFile(
                f"data file {missing[0]} does not exist{more}", path=self.path, missing=missing[0]
            )

    def series_info(self) -> SeriesInfo:
        """The series metadata (geometry, mask, shape); cached."""
        if self._info is not None:
            return self._info
        h5py = _h5()
        try:
            with h5py.File(self.path, "r") as f:
                values = _master_info(f)
                shape = dtype = None
                n = 0
                for dpath, _ext in self._datasets(f):
                    try:
                        d = f[dpath]
                    except KeyError:  # dangling external link
                        continue
                    shape, dtype = tuple(d.shape[-2:]), d.dtype.str
                    n += d.shape[0] if d.ndim == 3 else 1
                if shape is None:
                    x = _number(f, "/entry/instrument/detector/detectorSpecific/x_pixels_in_detector")
                    y = _number(f, "/entry/instrument/detector/detectorSpecific/y_pixels_in_detector")
                    shape = (int(y), int(x)) if x and y else None
                elif "n_images" not in values:
                    values["n_images"] = n
        except OSError as err:
            raise SourceFileError(f"cannot open as HDF5: {err}", path=self.path) from err
        info = SeriesInfo(series_id=self.series_id, protocol=self.protocol, shape=shape, dtype=dtype)
        info = _apply(info, values, "master values")
        if self.geometry is not None:
            info = _apply(info, geometry_from_crystfel(self.geometry, shape), "geometry values")
        info = _apply(info, self.overrides, "overrides")
        if info.pixel_mask is not None and shape is not None and info.pixel_mask.shape != shape:
            log.warning(
                "%s: pixel mask %s does not match the image shape %s; dropped",
                self.path,
                info.pixel_mask.shape,
                shape,
            )
            info.pixel_mask = None
        if not info.has_geometry:
            log.warning(
                "%s: no complete geometry (distance, beam centre, wavelength, pixel size); resolution statistics are off for this series",
                self.path,
            )
        self._info = info
        return info

    # -- frames
    def __iter__(self) -> Iterator[Item]:
        info = self.series_info()
        yield info
        h5py = _h5()
        received = 0
        with h5py.File(self.path, "r") as f:
            self._check_files(f)
            index = 1
            for dpath, _ext in self._datasets(f):
                try:
                    d = f[dpath]
                except KeyError as err:
                    raise MissingDataFile(
                        f"{dpath} cannot be resolved", path=self.path, missing=dpath
                    ) from err
                first = d.attrs.get("image_nr_low")
                if first is not None:
                    index = int(np.asarray(first).reshape(-1)[0])
                n = d.shape[0] if d.ndim == 3 else 1
                for i in range(n):
                    buf = np.empty(d.shape[-2:], dtype=d.dtype)
                    try:
                        d.read_direct(buf, np.s_[i] if d.ndim == 3 else np.s_[...])
                    except OSError as err:
                        raise SourceFileError(
                            f"cannot read image {i} of {dpath}: {err}", path=self.path
                        ) from err
                    received += 1
                    yield Frame(series_id=info.series_id, index=index, data=buf)
                    index += 1
        yield SeriesEnd(series_id=info.series_id, n_received=received)


# --------------------------------------------------------------------------- CBF

_TRAILING_NUMBER = re.compile(r"(\d+)(?:\.cbf)?(?:\.gz|\.bz2)?$", re.IGNORECASE)


class CbfSource:
    """Replay a series of CBF files (a list of paths or a glob pattern), sorted by name.

    Geometry comes from the first file's miniCBF header (overridden by *geometry* / *overrides* as
    for :class:`Hdf5Source`). Pilatus sentinels become the pixel mask: -1 (gap) bit 0, -2 (bad) bit 1,
    taken from the first image. A file that cannot be read, or whose shape differs from the first,
    is logged, counted as malformed and skipped. Frame index: the number at the end of the file name.
    """

    protocol = "cbf"

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        geometry: Any = None,
        overrides: Mapping[str, Any] | None = None,
        series_id: str | None = None,
    ) -> None:
        if isinstance(paths, (str, Path)):
            p = str(paths)
            found = sorted(_glob.glob(p)) if any(c in p for c in "*?[") else [p]
        else:
            found = sorted(str(x) for x in paths)
        if not found:
            raise SourceFileError(f"no CBF files match {paths}")
        self.paths = [Path(p) for p in found]
        self.geometry = geometry
        self.overrides = dict(overrides or {})
        stem = re.sub(r"(\.cbf)?(\.gz|\.bz2)?$", "", self.paths[0].name, flags=re.IGNORECASE)
        self.series_id = series_id or re.sub(r"_?\d+$", "", stem) or stem
        self.n_malformed = 0

    @staticmethod
    def _index(path: Path, position: int) -> int:
        m = _TRAILING_NUMBER.search(path.name)
        return int(m.group(1)) if m else position + 1

    def __iter__(self) -> Iterator[Item]:
        first, header = read_cbf(self.paths[0])
        values = {
            k: header[k]
            for k in (
                "pixel_size_x",
                "pixel_size_y",
                "distance",
                "wavelength",
                "beam_centre_x",
                "beam_centre_y",
                "count_time",
                "frame_time",
                "omega_start",
                "omega_increment",
                "saturation_value",
                "detector",
            )
            if k in header
        }
        info = SeriesInfo(
            series_id=self.series_id,
            protocol=self.protocol,
            shape=first.shape,
            dtype=first.dtype.str,
            n_images=len(self.paths),
            **values,
        )
        if first.dtype.kind == "i":
            mask = ((first == -1) * 1 | (first == -2) * 2).astype(np.uint32)
            info.pixel_mask = mask if mask.any() else None
        if self.geometry is not None:
            info = _apply(info, geometry_from_crystfel(self.geometry, first.shape), "geometry values")
        info = _apply(info, self.overrides, "overrides")
        if not info.has_geometry:
            log.warning(
                "%s: no complete geometry in the CBF header; resolution statistics are off for this series",
                self.paths[0],
            )
        yield info
        received = 0
        self.n_malformed = 0
        for pos, path in enumerate(self.paths):
            if pos == 0:
                data, hdr = first, header
            else:
                try:
                    data, hdr = read_cbf(path)
                except CbfError as err:
                    log.warning("skipped: %s", err)
                    self.n_malformed += 1
                    continue
                if data.shape != first.shape:
                    log.warning(
                        "skipped %s: shape %s differs from the series shape %s", path, data.shape, first.shape
                    )
                    self.n_malformed += 1
                    continue
            received += 1
            extra = {"path": str(path)}
            if "omega_start" in hdr:
                extra["omega"] = hdr["omega_start"]
            yield Frame(series_id=info.series_id, index=self._index(path, pos), data=data, extra=extra)
        yield SeriesEnd(series_id=info.series_id, n_received=received, n_malformed=self.n_malformed)
