"""NXmx / DECTRIS EIGER master HDF5: the collection metadata of a NeXus MX dataset, images untouched.

NXmx is the NeXus application definition for macromolecular crystallography (NIAC, manual.nexusformat.org,
``NXmx``): an ``NXentry`` holding ``instrument/beam`` (wavelength, flux), ``instrument/detector``
(distance, beam centre in pixels, count and frame times, sensor, pixel size, saturation), ``sample``
(goniometer axes as ``NXtransformations``), ``source`` and start/end times. The DECTRIS EIGER
filewriter writes a close relative (the ``_master.h5`` file) with a ``detectorSpecific`` group
(``nimages``, ``ntrigger``, photon energy, firmware) and ``sample/goniometer`` axes; Diamond's nexgen
writes strict NXmx with virtual datasets. Every value is read with its ``@units`` attribute (a unit
the adapter does not know leaves the value out with a note; a missing one takes the NXmx default).

Only metadata is read: external links (to ``_data_000001.h5`` or ``_meta.h5`` files) are never
followed, virtual and image datasets are never read (their shape is metadata), so a master whose
data files are absent parses. The number of images is ``nimages`` x ``ntrigger``, or the length of
the image dataset when ``ntrigger`` is out of reach. h5py and hdf5plugin are imported when a file is
parsed (``pip install mxcat[hdf5]``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import keep_valid
from mxcat.adapters.ispyb_xml import dataset_from_image, iso_time
from mxcat.errors import ParseError

NAME = "nxmx_master"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

UNITS: dict[str, dict[str, str]] = {
    "length": {"m": "metres", "meter": "metres", "meters": "metres", "metre": "metres", "metres": "metres",
               "mm": "millimetres", "millimeter": "millimetres", "millimeters": "millimetres",
               "millimetre": "millimetres", "millimetres": "millimetres", "um": "micrometres", "µm": "micrometres",
               "μm": "micrometres", "micron": "micrometres", "microns": "micrometres", "micrometer": "micrometres",
               "micrometers": "micrometres", "micrometre": "micrometres", "micrometres": "micrometres",
               "nm": "nanometres", "nanometer": "nanometres", "nanometre": "nanometres", "nanometres": "nanometres",
               "angstrom": "angstroms", "angstroms": "angstroms", "å": "angstroms", "a": "angstroms"},
    "time": {"s": "seconds", "sec": "seconds", "second": "seconds", "seconds": "seconds",
             "ms": "milliseconds", "msec": "milliseconds", "millisecond": "milliseconds", "milliseconds": "milliseconds"},
    "energy": {"ev": "electron_volts", "electronvolt": "electron_volts", "electron_volts": "electron_volts",
               "kev": "kiloelectron_volts", "kiloelectron_volts": "kiloelectron_volts"},
    "angle": {"deg": "degrees", "degree": "degrees", "degrees": "degrees", "°": "degrees",
              "rad": "radian", "radian": "radian", "radians": "radian"},
    "pixels": {"pixel": "pixels", "pixels": "pixels", "px": "pixels"},
    "rate": {"hz": "photons_per_second", "1/s": "photons_per_second", "s-1": "photons_per_second", "s^-1": "photons_per_second",
             "photons/s": "photons_per_second", "ph/s": "photons_per_second", "photon/s": "photons_per_second",
             "counts/s": "photons_per_second"},
    "fraction": {"": "none", "1": "none", "none": "none", "dimensionless": "none", "%": "percent", "percent": "percent"},
    "temperature": {"k": "kelvins", "kelvin": "kelvins", "kelvins": "kelvins"},
}
DEFAULTS = {"length": "metres", "time": "seconds", "energy": "electron_volts", "angle": "degrees",
            "pixels": "pixels", "rate": "photons_per_second", "fraction": "none", "temperature": "kelvins"}
"""Unit assumed when a field has no ``@units`` (NeXus SI defaults; EIGER writes eV and degrees)."""


class _Reader:
    """Reads one NXentry by path without following external links or reading image data."""

    def __init__(self, h5py: Any, f: Any, entry: str, notes: list[str]) -> None:
        self.h5py, self.f, self.entry, self.notes = h5py, f, entry, notes
        self.skipped: list[str] = []

    def node(self, path: str, depth: int = 0) -> Any:
        """The object at *path* (relative to the entry unless absolute), None when absent or external."""
        full = path if path.startswith("/") else f"{self.entry}/{path}"
        g = self.f["/"]
        parts = [p for p in full.split("/") if p]
        for i, part in enumerate(parts):
            if not isinstance(g, self.h5py.Group):
                return None
            link = g.get(part, getlink=True)
            if link is None:
                return None
            if isinstance(link, self.h5py.ExternalLink):
                self.skipped.append("/" + "/".join(parts[: i + 1]))
                return None
            if isinstance(link, self.h5py.SoftLink):
                if depth > 8:
                    return None
                rest = "/".join(parts[i + 1:])
                target = link.path if link.path.startswith("/") else "/" + "/".join(parts[:i] + [link.path])
                return self.node(f"{target}/{rest}" if rest else target, depth + 1)
            g = g.get(part)
        return g

    def dataset(self, path: str, max_size: int = 1) -> Any:
        d = self.node(path)
        if d is None or not isinstance(d, self.h5py.Dataset) or d.is_virtual or d.size > max_size or d.size == 0:
            return None
        if d.dtype.kind not in "fiubSUO":
            return None
        return d

    def string(self, path: str) -> str | None:
        d = self.dataset(path)
        if d is None:
            return None
        return _text(d[()])

    def attr(self, path: str, name: str) -> str | None:
        d = self.node(path)
        if d is None:
            return None
        return _text(d.attrs.get(name))

    def number(self, path: str, dim: str, *, first: bool = False) -> tuple[float | None, str | None]:
        """(value, mmCAT unit) of a numeric field; *first* takes element 0 of a short 1-D array."""
        d = self.dataset(path, max_size=100_000 if first else 1)
        if d is None or d.dtype.kind not in "fiub":
            return None, None
        import numpy as np

        raw = d[()] if d.ndim == 0 else d[(0,) * d.ndim]
        v = float(np.format_float_positional(raw, unique=True, trim="-")) if d.dtype.kind == "f" else float(raw)
        if v != v or v in (float("inf"), float("-inf")):
            self.notes.append(f"{d.name} is not a finite number; left out")
            return None, None
        return v, self.unit(d, dim)

    def array(self, path: str, max_size: int = 100_000) -> Any:
        d = self.dataset(path, max_size=max_size)
        if d is None or d.dtype.kind not in "fiu" or d.ndim != 1:
            return None
        return d[()]

    def unit(self, d: Any, dim: str) -> str | None:
        raw = _text(d.attrs.get("units"))
        if raw is None:
            return DEFAULTS[dim]
        u = UNITS[dim].get(raw.strip().lower())
        if u is None:
            self.notes.append(f"{d.name}: unit {raw!r} is not a {dim} unit this adapter knows; value left out")
        return u


def _text(v: Any) -> str | None:
    import numpy as np

    if isinstance(v, np.ndarray):
        if v.size != 1:
            return None
        v = v.reshape(-1)[0]
    if isinstance(v, (bytes, np.bytes_)):
        v = bytes(v).decode("utf-8", errors="replace")
    if v is None or isinstance(v, (np.ndarray, list, dict)):
        return None
    s = str(v).replace("\x00", "").strip()
    return s or None


class NxmxMaster:
    """NXmx or DECTRIS EIGER master file: wavelength, geometry, detector, goniometer, times (dataset level)."""

    name = NAME
    description = "NXmx / DECTRIS EIGER master HDF5: collection metadata (wavelength, distance, beam centre, detector, goniometer)"
    _DATA = re.compile(r"_data_\d+\.(h5|hdf5?)$", re.I)
    _NAME = re.compile(r"(_master([_.-][^/]*)?\.(h5|hdf5?)|\.nxs|\.nx5|\.nexus)$", re.I)

    def detect(self, head: bytes, name: str) -> bool:
        try:
            if not any(head[o:o + 8] == HDF5_MAGIC for o in (0, 512, 1024, 2048, 4096)):
                return False
            if self._DATA.search(name):
                return False
            return self._NAME.search(name) is not None or b"NXmx" in head
        except Exception:  # noqa: BLE001 - a detector never raises (adapter protocol)
            return False

    def parse(self, path: Path) -> Parsed:
        try:
            import h5py
            import hdf5plugin  # noqa: F401 - registers the compression filters EIGER files use
        except ImportError as err:
            raise ParseError(f"reading HDF5 needs h5py and hdf5plugin ({err}); install them with "
                             "'pip install mxcat[hdf5]'", adapter=NAME, path=path) from err
        try:
            with open(path, "rb") as fh:
                magic = fh.read(8)
        except OSError as err:
            raise ParseError(f"cannot read: {err}", adapter=NAME, path=path) from err
        if magic != HDF5_MAGIC and not h5py.is_hdf5(str(path)):
            raise ParseError("not an HDF5 file (no HDF5 signature)", adapter=NAME, path=path)
        notes: list[str] = []
        try:
            with h5py.File(path, "r", locking=False) as f:
                return keep_valid(self._read(h5py, f, path, notes))
        except ParseError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError, OverflowError) as err:
            # h5py reports damaged or truncated files through these (HDF5 errors become OSError/KeyError/RuntimeError)
            raise ParseError(f"unreadable HDF5 metadata ({type(err).__name__}: {err})", adapter=NAME, path=path) from err

    def _read(self, h5py: Any, f: Any, path: Path, notes: list[str]) -> Parsed:
        entry = self._entry(h5py, f, path)
        rd = _Reader(h5py, f, entry, notes)
        if not isinstance(rd.node("instrument"), h5py.Group):
            raise ParseError(f"{entry} has no instrument group: an image data file, not a master or NXmx file",
                             adapter=NAME, path=path)
        r = Result(level="dataset")
        definition = rd.string("definition")
        det = "instrument/detector"
        spec = f"{det}/detectorSpecific"

        def add(key: str, *paths: str, dim: str, first: bool = False) -> float | None:
            for p in paths:
                v, unit = rd.number(p, dim, first=first)
                if v is not None:
                    if unit is not None:
                        r.add(key, v, unit)
                    return v
            return None

        add("diffrn_radiation_wavelength.wavelength", "instrument/beam/incident_wavelength", "sample/beam/incident_wavelength",
            dim="length", first=True)
        add("mmcat_collection.photon_energy", "instrument/beam/incident_energy", "sample/beam/incident_energy",
            f"{spec}/photon_energy", dim="energy", first=True)
        add("mmcat_collection.detector_distance", f"{det}/distance", f"{det}/detector_distance", dim="length", first=True)
        for axis in ("x", "y"):
            d = rd.dataset(f"{det}/beam_center_{axis}")
            units = _text(d.attrs.get("units")) if d is not None else None
            if units and units.strip().lower() in UNITS["length"]:
                add(f"mmcat_collection.beam_centre_{axis}", f"{det}/beam_center_{axis}", dim="length")
            else:
                add(f"mmcat_collection.beam_centre_{axis}_px", f"{det}/beam_center_{axis}", dim="pixels")
        add("mmcat_collection.exposure_time", f"{det}/count_time", dim="time")
        add("mmcat_collection.frame_time", f"{det}/frame_time", dim="time")
        add("mmcat_detector.readout_time", f"{det}/detector_readout_time", dim="time")
        add("mmcat_detector.sensor_thickness", f"{det}/sensor_thickness", dim="length")
        add("mmcat_detector.pixel_size_x", f"{det}/x_pixel_size", f"{det}/module/fast_pixel_direction", dim="length")
        add("mmcat_detector.pixel_size_y", f"{det}/y_pixel_size", f"{det}/module/slow_pixel_direction", dim="length")
        add("mmcat_detector.threshold_energy", f"{det}/threshold_energy", dim="energy")
        self._integer(r, rd, "mmcat_detector.bit_depth", f"{det}/bit_depth_readout")
        if not self._integer(r, rd, "mmcat_detector.saturation_value", f"{det}/saturation_value"):
            if self._integer(r, rd, "mmcat_detector.saturation_value", f"{spec}/countrate_correction_count_cutoff"):
                notes.append("saturation value taken from detectorSpecific/countrate_correction_count_cutoff (no saturation_value)")
        self._integer(r, rd, "mmcat_detector.underload_value", f"{det}/underload_value")
        self._integer(r, rd, "mmcat_detector.size_fast", f"{spec}/x_pixels_in_detector")
        self._integer(r, rd, "mmcat_detector.size_slow", f"{spec}/y_pixels_in_detector")
        cc = rd.dataset(f"{det}/countrate_correction_applied")
        if cc is not None and cc.dtype.kind in "iub":
            r.add("mmcat_detector.countrate_correction_applied", "yes" if int(cc[()]) else "no")
        r.add("diffrn_detector.type", rd.string(f"{det}/description"))
        r.add("diffrn_detector.detector", rd.string(f"{det}/type"))
        r.add("mmcat_detector.sensor_material", rd.string(f"{det}/sensor_material"))
        r.add("mmcat_detector.serial_number", rd.string(f"{det}/serial_number") or rd.string(f"{det}/detector_number"))
        self._goniometer(r, rd, add)
        self._images(r, rd, spec, notes)
        self._beamline(r, rd, notes)
        self._times(r, rd, spec, notes)
        add("mmcat_collection.transmission", "instrument/attenuator/attenuator_transmission", dim="fraction")
        add("mmcat_collection.flux", "instrument/beam/total_flux", "sample/beam/total_flux", dim="rate", first=True)
        size = rd.array("instrument/beam/incident_beam_size", max_size=2)
        if size is not None and len(size) == 2:
            unit = rd.unit(rd.node("instrument/beam/incident_beam_size"), "length")
            if unit is not None:
                r.add("mmcat_collection.beam_size_x", float(size[0]), unit)
                r.add("mmcat_collection.beam_size_y", float(size[1]), unit)
        add("diffrn.ambient_temp", "sample/temperature", dim="temperature", first=True)
        sample = rd.string("sample/name")
        r.add("mmcat_sample.name", sample)
        program, version = self._program(rd, spec, notes)
        if rd.skipped:
            notes.append("external links not followed: " + ", ".join(sorted(set(rd.skipped))))
        if definition and definition != "NXmx":
            notes.append(f"the entry's definition is {definition!r}, not NXmx")
        hints = {k: v for k, v in (("dataset", dataset_from_image(path.name)), ("sample", sample)) if v}
        hints.update(self._beamline_hints(rd))
        return Parsed(adapter=NAME, path=path, program=program, version=version, results=[r], hints=hints, notes=notes)

    @staticmethod
    def _entry(h5py: Any, f: Any, path: Path) -> str:
        for name in f:
            link = f.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                continue
            g = f.get(name)
            if isinstance(g, h5py.Group) and _text(g.attrs.get("NX_class")) == "NXentry":
                return f"/{name}"
        if "entry" in f and isinstance(f.get("entry", getlink=True), h5py.HardLink) and isinstance(f["entry"], h5py.Group):
            return "/entry"
        raise ParseError("no NXentry group: not an NXmx or EIGER master file", adapter=NAME, path=path)

    @staticmethod
    def _integer(r: Result, rd: _Reader, key: str, path: str) -> bool:
        d = rd.dataset(path)
        if d is None or d.dtype.kind not in "iu":
            return False
        r.add(key, int(d[()]))
        return True

    @staticmethod
    def _goniometer(r: Result, rd: _Reader, add: Any) -> None:
        groups = ("sample/transformations", "sample/goniometer", "sample/sample_omega")
        start = add("mmcat_collection.oscillation_start", *(f"{g}/omega" for g in groups), "sample/goniometer/omega_start",
                    dim="angle", first=True)
        width = add("mmcat_collection.oscillation_width", "sample/transformations/omega_increment_set",
                    "sample/goniometer/omega_increment", "sample/goniometer/omega_range_average",
                    "sample/sample_omega/omega_increment_set", dim="angle")
        if start is not None and width is None:
            for g in groups:
                omega = rd.array(f"{g}/omega")
                if omega is not None and len(omega) > 1:
                    unit = rd.unit(rd.node(f"{g}/omega"), "angle")
                    if unit is not None:
                        r.add("mmcat_collection.oscillation_width", abs(float(omega[1] - omega[0])), unit)
                    break
        for g in groups:
            end = rd.array(f"{g}/omega_end")
            if end is not None and len(end):
                unit = rd.unit(rd.node(f"{g}/omega_end"), "angle")
                if unit is not None:
                    r.add("mmcat_collection.oscillation_end", float(end[-1]), unit)
                break
        for axis in ("chi", "kappa", "phi"):
            add(f"mmcat_collection.{axis}_start", *(f"{g}/{axis}" for g in groups), f"sample/goniometer/{axis}_start",
                dim="angle", first=True)
        add("mmcat_collection.detector_two_theta", "instrument/detector/transformations/two_theta",
            "instrument/detector/goniometer/two_theta", dim="angle", first=True)

    @staticmethod
    def _images(r: Result, rd: _Reader, spec: str, notes: list[str]) -> None:
        nimages = rd.dataset(f"{spec}/nimages")
        ntrigger = rd.dataset(f"{spec}/ntrigger")
        n_img = int(nimages[()]) if nimages is not None and nimages.dtype.kind in "iu" else None
        n_trig = int(ntrigger[()]) if ntrigger is not None and ntrigger.dtype.kind in "iu" else None
        data = rd.node("data/data")
        frames = data.shape[0] if data is not None and isinstance(data, rd.h5py.Dataset) and data.ndim == 3 else None
        if n_img is not None and n_trig is not None:
            r.add("mmcat_collection.number_of_images", n_img * n_trig)
        elif frames is not None:
            r.add("mmcat_collection.number_of_images", frames)
            notes.append(f"number of images from the shape of data/data ({frames}), without reading it")
        elif n_img is not None:
            r.add("mmcat_collection.number_of_images", n_img)
            notes.append("number of images is nimages; ntrigger is absent or out of reach (assumed 1)")

    @staticmethod
    def _beamline(r: Result, rd: _Reader, notes: list[str]) -> None:
        name = rd.string("instrument/name")
        if name:
            r.add("diffrn_source.type", name)
            m = re.search(r"\bbeamline\s+(\S+)\s*$", name, re.I)
            r.add("diffrn_source.pdbx_synchrotron_beamline", m.group(1) if m else name)
        r.add("diffrn_source.pdbx_synchrotron_site", rd.string("source/name"))

    @staticmethod
    def _beamline_hints(rd: _Reader) -> dict[str, str]:
        hints = {}
        name = rd.string("instrument/name")
        if name:
            m = re.search(r"\bbeamline\s+(\S+)\s*$", name, re.I)
            hints["beamline"] = m.group(1) if m else name
        facility = rd.attr("source/name", "short_name") or rd.string("source/name")
        if facility:
            hints["facility"] = facility
        return hints

    @staticmethod
    def _times(r: Result, rd: _Reader, spec: str, notes: list[str]) -> None:
        start = rd.string("start_time")
        if start is None:
            start = rd.string(f"{spec}/data_collection_date")
            if start:
                notes.append("start time from detectorSpecific/data_collection_date (no start_time)")
        r.add("mmcat_collection.start_time", iso_time(start, notes, "start_time"))
        end = rd.string("end_time")
        if end is None:
            end = rd.string("end_time_estimated")
            if end:
                notes.append("end time is the writer's estimate (end_time_estimated)")
        r.add("mmcat_collection.end_time", iso_time(end, notes, "end_time"))

    @staticmethod
    def _program(rd: _Reader, spec: str, notes: list[str]) -> tuple[str | None, str | None]:
        program = rd.string("program_name")
        version = rd.attr("program_name", "version")
        firmware = rd.string(f"{spec}/eiger_fw_version")
        if firmware:
            notes.append(f"EIGER firmware {firmware} (mmCAT has no detector firmware item)")
        if program is None:
            creator = _text(rd.f["/"].attrs.get("creator"))
            if creator:
                return creator, _text(rd.f["/"].attrs.get("creator_version"))
            if firmware or rd.string(f"{spec}/software_version"):
                return "DECTRIS EIGER filewriter", rd.string(f"{spec}/software_version") or firmware
        return program, version


ADAPTER = NxmxMaster()
