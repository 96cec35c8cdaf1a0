"""DIALS experiment list (.expt): the JSON models of DIALS and dxtbx (Winter et al. 2018, Acta Cryst. D74, 85).

An ExperimentList (``"__id__": "ExperimentList"``) holds lists of models (beam, detector, goniometer,
scan, crystal, imageset, profile, scaling model) and experiments that point at them by index; the
layout is dxtbx's ``ExperimentListDict`` (https://dials.github.io/documentation/data_files.html).
Lengths are in mm, angles in degrees, wavelengths in angstroms; crystal vectors are the real-space
a, b, c in angstroms, with the space group as a Hall symbol (read with gemmi).

One result per experiment (labelled ``experiment_<n>`` when there are several): a processing result
when the experiment has a crystal (cell, space group, refined rotation axis; the collection values
in it attach to the dataset at ingest), else a dataset result. Experiments of one file that share
a scan describe one sweep, so their collection values agree; experiments of several sweeps all
attach their collection values to the one dataset the file is ingested under: ingest such files
per sweep. Still-shot lists of serial crystallography (one experiment per lattice, thousands of
them) are read the same way, one result per lattice; their run statistics are better taken from
the indexing program's own summary. DIALS writes no program version into .expt files. Default placeholders of dxtbx (flux
0, transmission 1, empty material, thickness 0) are not stored.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import fail, read_json
from mxcat.errors import ParseError

NAME = "dials_expt"

_ID = re.compile(rb'"__id__"\s*:\s*"ExperimentList"')
Vec = tuple[float, float, float]


class _Bad(Exception):
    """A model is malformed; turned into a ParseError naming the experiment."""


def _num(d: Any, key: str, *, positive: bool = False) -> float:
    v = d.get(key) if isinstance(d, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or (positive and v <= 0):
        raise _Bad(f"{key!r} is {v!r}, not a {'positive ' if positive else ''}number")
    return float(v)


def _vec(d: Any, key: str, n: int = 3) -> tuple[float, ...]:
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, list) or len(v) != n or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v):
        raise _Bad(f"{key!r} is {v!r}, not a list of {n} numbers")
    return tuple(float(x) for x in v)


def _cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _norm(a: tuple[float, ...]) -> float:
    return math.sqrt(_dot(a, a))


def _unit(a: Vec, what: str) -> Vec:
    n = _norm(a)
    if n < 1e-9:
        raise _Bad(f"{what} is a zero vector")
    return (a[0] / n, a[1] / n, a[2] / n)


def cell_from_vectors(a: Vec, b: Vec, c: Vec) -> tuple[float, float, float, float, float, float]:
    """(a, b, c, alpha, beta, gamma) of real-space basis vectors (lengths as given, angles in degrees)."""
    la, lb, lc = _norm(a), _norm(b), _norm(c)
    if min(la, lb, lc) < 1e-6 or abs(_dot(_cross(a, b), c)) < 1e-6 * la * lb * lc:
        raise _Bad("the crystal's real-space vectors do not span a cell")

    def angle(u: Vec, v: Vec, lu: float, lv: float) -> float:
        return math.degrees(math.acos(max(-1.0, min(1.0, _dot(u, v) / (lu * lv)))))

    return la, lb, lc, angle(b, c, lb, lc), angle(a, c, la, lc), angle(a, b, la, lb)


class DialsExpt:
    name = NAME
    description = "DIALS .expt experiment list: beam, detector, goniometer, scan, crystal models"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            return head.lstrip()[:1] == b"{" and _ID.search(head[:4096]) is not None
        except Exception:  # noqa: BLE001 - a detector never raises
            return False

    def parse(self, path: Path) -> Parsed:
        doc = read_json(path, NAME)
        if not isinstance(doc, dict) or doc.get("__id__") != "ExperimentList":
            fail(NAME, path, "not a DIALS experiment list (no \"__id__\": \"ExperimentList\")", 1)
        experiments = doc.get("experiment")
        if not isinstance(experiments, list) or not experiments:
            fail(NAME, path, "the experiment list is empty", None)
        notes: list[str] = []
        results = []
        for i, exp in enumerate(experiments):
            try:
                results.append(self._experiment(doc, exp, notes, i if len(experiments) > 1 else None))
            except _Bad as err:
                raise ParseError(f"experiment {i}: {err}", adapter=NAME, path=path) from err
        hints: dict[str, str] = {}
        templates = {t for t in (self._hint(doc, e) for e in experiments) if t}
        if len(templates) == 1:
            hints["dataset"] = templates.pop()
        return Parsed(adapter=NAME, path=path, program="DIALS", results=results, hints=hints, notes=notes)

    @staticmethod
    def _model(doc: dict[str, Any], exp: dict[str, Any], kind: str) -> dict[str, Any] | None:
        ref = exp.get(kind)
        if ref is None:
            return None
        models = doc.get(kind)
        if isinstance(ref, bool) or not isinstance(ref, int) or not isinstance(models, list) or not 0 <= ref < len(models) \
                or not isinstance(models[ref], dict):
            raise _Bad(f"{kind} {ref!r} does not name one of the file's {kind} models")
        return models[ref]

    def _hint(self, doc: dict[str, Any], exp: Any) -> str | None:
        try:
            imageset = self._model(doc, exp, "imageset") if isinstance(exp, dict) else None
        except _Bad:
            return None
        template = imageset.get("template") if imageset else None
        if not isinstance(template, str):
            return None
        m = re.match(r"^(.*?)[_.-]?#+\.[^/]*$", template.rpartition("/")[2])
        return m.group(1) if m and m.group(1) else None

    def _experiment(self, doc: dict[str, Any], exp: Any, notes: list[str], index: int | None) -> Result:
        if not isinstance(exp, dict):
            raise _Bad("is not a JSON object")
        crystal = self._model(doc, exp, "crystal")
        r = Result(level="processing" if crystal is not None else "dataset",
                   label=None if index is None else f"experiment_{index}")
        beam = self._model(doc, exp, "beam")
        detector = self._model(doc, exp, "detector")
        goniometer = self._model(doc, exp, "goniometer")
        scan = self._model(doc, exp, "scan")
        imageset = self._model(doc, exp, "imageset")
        s0 = None
        if beam is not None:
            r.add("diffrn_radiation_wavelength.wavelength", round(_num(beam, "wavelength", positive=True), 8))
            # dxtbx's direction points from the sample to the source; the beam travels the other way
            d = _unit(_vec(beam, "direction"), "the beam direction")
            s0 = (-d[0], -d[1], -d[2])
            if "polarization_fraction" in beam:
                p = _num(beam, "polarization_fraction")
                if not 0 <= p <= 1:
                    raise _Bad(f"polarization_fraction {p} is outside [0, 1]")
                r.add("mmcat_collection.polarisation_fraction", p)
        if detector is not None:
            self._detector(r, detector, s0, notes)
        if scan is not None:
            self._scan(r, scan, exp, notes)
        if goniometer is not None:
            axis = _unit(_vec(goniometer, "rotation_axis"), "the rotation axis")
            names, scan_axis = goniometer.get("names"), goniometer.get("scan_axis")
            if isinstance(names, list) and isinstance(scan_axis, int) and 0 <= scan_axis < len(names) and isinstance(names[scan_axis], str):
                r.add("mmcat_collection.rotation_axis", names[scan_axis] or None)
            if crystal is not None:
                for c, v in zip("xyz", axis, strict=True):
                    r.add(f"mmcat_integration.rotation_axis_{c}", round(v, 6))
        if imageset is not None and isinstance(imageset.get("template"), str) and imageset["template"]:
            template = imageset["template"].rpartition("/")[2]
            r.add("mmcat_collection.file_template", template or None)
        if crystal is not None:
            self._crystal(r, crystal, notes)
        return r

    def _detector(self, r: Result, detector: dict[str, Any], s0: Vec | None, notes: list[str]) -> None:
        panels = detector.get("panels")
        if not isinstance(panels, list) or not panels or not all(isinstance(p, dict) for p in panels):
            raise _Bad("the detector has no panels")
        pixel = {_vec(p, "pixel_size", 2) for p in panels}
        if len(pixel) == 1:
            px, py = pixel.pop()
            if px <= 0 or py <= 0:
                raise _Bad(f"pixel size {px}, {py} is not positive")
            r.add("mmcat_detector.pixel_size_x", px, "mm")
            r.add("mmcat_detector.pixel_size_y", py, "mm")
        distances = []
        for p in panels:
            fast = _unit(_vec(p, "fast_axis"), "a panel's fast axis")
            slow = _unit(_vec(p, "slow_axis"), "a panel's slow axis")
            normal = _unit(_cross(fast, slow), "a panel's normal")
            distances.append((abs(_dot(_vec(p, "origin"), normal)), p, fast, slow, normal))
        if max(d[0] for d in distances) - min(d[0] for d in distances) < 0.01:
            if distances[0][0] > 0:
                r.add("mmcat_collection.detector_distance", round(distances[0][0], 4), "mm")
        else:
            notes.append("panels at different distances from the sample: no detector distance stored")
        trusted = {_vec(p, "trusted_range", 2) for p in panels}
        if len(trusted) == 1:
            low, high = trusted.pop()
            if high > 0 and high.is_integer():
                r.add("mmcat_detector.saturation_value", int(high), "counts")
                notes.append("saturation value: the upper limit of the detector's trusted range")
        materials = {p.get("material") for p in panels}
        if len(materials) == 1 and isinstance(m := materials.pop(), str) and m:
            r.add("mmcat_detector.sensor_material", m)
        thickness = {p.get("thickness") for p in panels}
        if len(thickness) == 1:
            t = _num(panels[0], "thickness")
            if t > 0:
                r.add("mmcat_detector.sensor_thickness", t, "mm")
        if len(panels) == 1:
            p = panels[0]
            size = _vec(p, "image_size", 2)
            if size[0] >= 1 and size[1] >= 1 and size[0].is_integer() and size[1].is_integer():
                r.add("mmcat_detector.size_fast", int(size[0]), "pixels")
                r.add("mmcat_detector.size_slow", int(size[1]), "pixels")
            _, _, fast, slow, normal = distances[0]
            origin = _vec(p, "origin")
            if s0 is not None and abs(_dot(s0, normal)) > 1e-6:
                # where the beam meets the panel plane, in mm along the fast and slow axes from the origin
                t = _dot(origin, normal) / _dot(s0, normal)
                if t > 0:
                    hit = tuple(t * c - o for c, o in zip(s0, origin, strict=True))
                    bx, by = _dot(hit, fast), _dot(hit, slow)
                    r.add("mmcat_collection.beam_centre_x", round(bx, 4), "mm")
                    r.add("mmcat_collection.beam_centre_y", round(by, 4), "mm")
                    r.add("mmcat_collection.beam_centre_x_px", round(bx / px, 3), "pixels")
                    r.add("mmcat_collection.beam_centre_y_px", round(by / py, 3), "pixels")
        else:
            notes.append(f"{len(panels)} panels: image size and beam centre not stored")

    def _scan(self, r: Result, scan: dict[str, Any], exp: dict[str, Any], notes: list[str]) -> None:
        first, last = _vec(scan, "image_range", 2)
        if not (first.is_integer() and last.is_integer()) or first < 0 or last < first:
            raise _Bad(f"image_range {first}, {last} is not a range of image numbers")
        n = int(last - first + 1)
        r.add("mmcat_collection.first_image_number", int(first))
        r.add("mmcat_collection.number_of_images", n)
        start, width = _vec(scan, "oscillation", 2)
        if width < 0:
            raise _Bad(f"oscillation width {width} is negative")
        r.add("mmcat_collection.oscillation_start", start, "degrees")
        r.add("mmcat_collection.oscillation_width", width, "degrees")
        r.add("mmcat_collection.oscillation_end", start + width * n, "degrees")
        times = scan.get("exposure_time")
        if isinstance(times, list) and times:
            values = {_num({"t": t}, "t") for t in times}
            if len(values) == 1 and (t := values.pop()) > 0:
                r.add("mmcat_collection.exposure_time", t, "s")
            elif len(values) > 1:
                notes.append("exposure time differs between images: not stored")
        epochs = scan.get("epochs")
        if isinstance(epochs, list) and epochs:
            t0 = _num({"t": epochs[0]}, "t")
            if 0 < t0 < 32503680000:  # a time stamp before the year 3000
                r.add("mmcat_collection.start_time", datetime.fromtimestamp(t0, UTC).isoformat())
        valid = scan.get("valid_image_ranges")
        ranges = valid.get(exp.get("identifier")) if isinstance(valid, dict) else None
        if isinstance(ranges, list) and len(ranges) == 1:
            a, b = _vec({"r": ranges[0]}, "r", 2)
            if a.is_integer() and b.is_integer() and 0 <= a <= b and r.level == "processing":
                r.add("mmcat_integration.start_image_number", int(a))
                r.add("mmcat_integration.end_image_number", int(b))

    def _crystal(self, r: Result, crystal: dict[str, Any], notes: list[str]) -> None:
        import gemmi

        recalculated = crystal.get("recalculated_unit_cell")
        if recalculated is not None:
            cell = _vec(crystal, "recalculated_unit_cell", 6)
            notes.append("cell: the recalculated unit cell (dials.two_theta_refine), not the model vectors")
        else:
            cell = cell_from_vectors(_vec(crystal, "real_space_a"), _vec(crystal, "real_space_b"), _vec(crystal, "real_space_c"))
        if any(x <= 0 for x in cell[:3]) or any(not 0 < x < 180 for x in cell[3:]):
            raise _Bad(f"impossible unit cell {cell}")
        for key, v in zip(("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"), cell, strict=True):
            r.add(f"cell.{key}", round(v, 5))
        hall = crystal.get("space_group_hall_symbol")
        if not isinstance(hall, str) or not hall.strip():
            raise _Bad("the crystal has no space_group_hall_symbol")
        try:
            sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(hall))
        except (RuntimeError, ValueError) as err:
            raise _Bad(f"cannot read the Hall symbol {hall!r}: {err}") from err
        if sg is None:
            notes.append(f"Hall symbol {hall.strip()!r} is not a tabulated setting: no space group name stored")
        else:
            r.add("symmetry.space_group_name_H-M", sg.hm)
            r.add("symmetry.Int_Tables_number", sg.number)
        if "mosaicity" in crystal:
            m = _num(crystal, "mosaicity")
            if m >= 0:
                r.add("exptl_crystal.pdbx_mosaicity", m, "degrees")


ADAPTER = DialsExpt()
