"""XDSAPP results text: the processing summary XDSAPP (Sparta et al. 2016, J. Appl. Cryst. 49, 1085) writes per data set.

XDSAPP, the graphical XDS front end of HZB (https://www.helmholtz-berlin.de/forschung/oe/np/gmx/xdsapp/),
writes ``results_<dataset>.txt``: a ``Processing summary for data set NAME`` header with the date, a
list of ``Things you may want to check``, a ``Table 1 like summary`` (space group, cell, resolution,
reflections, multiplicity, I/sigI, R_meas, completeness, Wilson B, mosaicity, CC(1/2), ISa; shell
values after the overall ones in parentheses are the outer shell), intensity checks, the Pointless
space group, an indexing summary and the experimental settings (images, distance, oscillation,
wavelength, Friedel's law). Each section is a title line over a dashed rule, then ``label  value``
lines. XDSAPP prints R_meas and CC(1/2) in percent, as XDS does. R_meas is XDS's: Friedel mates
merged when ``Friedels law`` is TRUE (mmCAT ``pdbx_Rrim_I_all``), kept apart when FALSE
(``mmcat_Rmeas_within_IplusIminus``); the ``Friedels law`` line is therefore required.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import fail, keep_valid, read_lines
from mxcat.adapters.xia2_summary import space_group

NAME = "xdsapp_results"

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"^({_NUM})(?:\s*\(\s*({_NUM})\s*\))?$")
_STRICT = ("Table 1 like summary", "Indexing summary", "Experimental settings")
"""Sections read for values, where a repeated label means a damaged file."""
_SECTIONS = ("Table 1 like summary", "Intensity checks", "Space group determination by Pointless", "Indexing summary",
             "Experimental settings", "Result files generated", "Things you may want to check")

# label -> (overall key, outer-shell key, unit, lower bound, upper bound); bounds outside which the file is corrupt
_TABLE1 = {
    "No. of reflections": ("reflns.pdbx_number_measured_all", None, None, 0, None),
    "No. of uniques": ("reflns.number_obs", None, None, 0, None),
    "Multiplicity": ("reflns.pdbx_redundancy", "reflns_shell.outer.pdbx_redundancy", None, 0, None),
    "I/sigI": ("reflns.pdbx_netI_over_sigmaI", "reflns_shell.outer.pdbx_netI_over_sigmaI_obs", None, None, None),
    "Completeness [%]": ("reflns.percent_possible_obs", "reflns_shell.outer.percent_possible_obs", "%", 0, 100),
    "B(Wilson) [A^2]": ("reflns.B_iso_Wilson_estimate", None, "Å^2", None, None),
    "Mosaicity [deg]": ("exptl_crystal.pdbx_mosaicity", None, "degrees", 0, None),
    "ISa": ("reflns.mmcat_ISa", None, None, 0, None),
}
_INTEGER = {"No. of reflections", "No. of uniques"}


def _split(line: str) -> tuple[str, str]:
    """``    Label [unit]     value`` -> (label, value): label and value are separated by 3+ spaces."""
    parts = re.split(r"\s{3,}", line.strip(), maxsplit=1)
    return parts[0], (parts[1].strip() if len(parts) > 1 else "")


class XdsappResults:
    name = NAME
    description = "XDSAPP results_<dataset>.txt: Table 1 statistics, cell, space group, settings"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            return b"Table 1 like summary" in head or (b"Processing summary for data set" in head and b"XDSAPP" in head)
        except Exception:  # noqa: BLE001 - a detector never raises
            return False

    def parse(self, path: Path) -> Parsed:
        text, lines = read_lines(path, NAME)
        sections: dict[str, dict[str, tuple[str, int]]] = {}
        current: dict[str, tuple[str, int]] | None = None
        header: dict[str, tuple[str, int]] = {}
        for n, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or set(line) == {"-"}:
                continue
            title = next((s for s in _SECTIONS if line.startswith(s)), None)
            if title is not None:
                if title in sections:
                    fail(NAME, path, f"section {title!r} appears twice", n)
                current = sections[title] = {}
                continue
            if line.startswith("Processing summary for data set"):
                header["dataset"] = (line[len("Processing summary for data set"):].strip(), n)
                continue
            if line.startswith("Images in"):
                header["images"] = (line[len("Images in"):].strip(), n)
                continue
            if current is None:
                if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line):
                    header["date"] = (line, n)
                continue
            label, value = _split(raw)
            if sections.get("Things you may want to check") is current:
                current.setdefault("check", ("", n))
                current["check"] = ((current["check"][0] + "; " if current["check"][0] else "") + line, n)
                continue
            if label in current:
                if current in (sections.get(t) for t in _STRICT):
                    fail(NAME, path, f"{label!r} appears twice in its section", n)
                continue
            current[label] = (value, n)
        table = sections.get("Table 1 like summary")
        if table is None:
            fail(NAME, path, "no 'Table 1 like summary' section: not an XDSAPP results file", 1)
        settings = sections.get("Experimental settings", {})
        if "Friedels law" not in settings:
            fail(NAME, path, "no 'Friedels law' line in 'Experimental settings' (truncated?)", len(lines))
        notes: list[str] = []
        r = Result(level="processing")
        r.add("mmcat_processing.pipeline", "XDSAPP")
        self._table1(r, table, settings, path, notes)
        self._settings(r, settings, sections.get("Indexing summary", {}), path)
        pointless = sections.get("Space group determination by Pointless", {}).get("Selected space group")
        self._symmetry(r, table, pointless, path, notes)
        check = sections.get("Things you may want to check", {}).get("check")
        if check:
            r.add("mmcat_processing.message", check[0])
            r.add("mmcat_processing.message_severity", "WARNING")
        if "date" in header:
            r.add("mmcat_processing.end_time", datetime.strptime(header["date"][0], "%Y-%m-%d %H:%M:%S").isoformat())
        r.add("mmcat_collection.directory", header.get("images", (None,))[0] or None)
        hints = {"dataset": header["dataset"][0]} if header.get("dataset", ("",))[0] else {}
        return keep_valid(Parsed(adapter=NAME, path=path, program="XDSAPP", results=[r], hints=hints, notes=notes))

    def _table1(self, r: Result, table: dict[str, tuple[str, int]], settings: dict[str, tuple[str, int]], path: Path,
                notes: list[str]) -> None:
        if "Resolution limit [A]" not in table:
            fail(NAME, path, "the Table 1 summary has no 'Resolution limit [A]' line", None)
        res, n = table["Resolution limit [A]"]
        m = re.fullmatch(rf"({_NUM})\s*-\s*({_NUM})(?:\s*\(\s*({_NUM})\s*-\s*({_NUM})\s*\))?", res)
        if m is None or any(g is not None and float(g) <= 0 for g in m.groups()):
            fail(NAME, path, f"cannot read the resolution range {res!r}", n)
        r.add("reflns.d_resolution_low", float(m.group(1)))
        r.add("reflns.d_resolution_high", float(m.group(2)))
        if m.group(3) is not None:
            r.add("reflns_shell.outer.d_res_low", float(m.group(3)))
            r.add("reflns_shell.outer.d_res_high", float(m.group(4)))
        for label, (key, outer_key, unit, lo, hi) in _TABLE1.items():
            if label in table:
                overall, outer = self._pair(label, table[label], lo, hi, path)
                r.add(key, int(overall) if label in _INTEGER else overall, unit)
                if outer_key is not None:
                    r.add(outer_key, outer, unit)
        friedel = settings["Friedels law"][0].upper()
        if friedel not in ("TRUE", "FALSE"):
            fail(NAME, path, f"'Friedels law' is {friedel!r}, not TRUE or FALSE", settings["Friedels law"][1])
        r.add("mmcat_processing.anomalous", "no" if friedel == "TRUE" else "yes")
        r.add("mmcat_processing.status", "success")  # XDSAPP writes this summary only for a finished run
        if "R_meas [%]" in table:
            overall, outer = self._pair("R_meas", table["R_meas [%]"], 0, None, path)
            item = "pdbx_Rrim_I_all" if friedel == "TRUE" else "mmcat_Rmeas_within_IplusIminus"
            for prefix, v in (("reflns", overall), ("reflns_shell.outer", outer)):
                r.add(f"{prefix}.{item}", v, "%")  # keep_valid() drops and records what mmCAT forbids
        if "CC(1/2)" in table:
            overall, outer = self._pair("CC(1/2)", table["CC(1/2)"], -100, 100, path)
            # XDS and XDSAPP print CC(1/2) in percent; an overall value of at most 1 can only be a fraction
            unit = "%" if overall > 1 else None
            notes.append(f"CC(1/2) read as {'a percentage' if unit else 'a fraction'}")
            for key, v in (("reflns.pdbx_CC_half", overall), ("reflns_shell.outer.pdbx_CC_half", outer)):
                if v is not None and v <= 0:
                    notes.append(f"{key} = {v} not stored: mmCAT accepts only positive CC1/2")
                    continue
                if v is not None and unit is None and v > 1:
                    fail(NAME, path, f"CC(1/2) {v} is not a fraction", table["CC(1/2)"][1])
                r.add(key, v, unit)

    def _pair(self, label: str, entry: tuple[str, int], lo: float | None, hi: float | None, path: Path) -> tuple[float, float | None]:
        text, n = entry
        m = _PAIR.fullmatch(text)
        if m is None:
            fail(NAME, path, f"{label}: cannot read {text!r} as 'overall (outer)'", n)
        values = [float(g) for g in m.groups() if g is not None]
        for v in values:
            if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
                fail(NAME, path, f"{label}: {v} is outside the possible range", n)
        return values[0], (values[1] if len(values) > 1 else None)

    def _settings(self, r: Result, settings: dict[str, tuple[str, int]], indexing: dict[str, tuple[str, int]], path: Path) -> None:
        if "Images processed" in settings:
            text, n = settings["Images processed"]
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
            if m is None or int(m.group(2)) < int(m.group(1)):
                fail(NAME, path, f"cannot read the image range {text!r}", n)
            r.add("mmcat_integration.start_image_number", int(m.group(1)))
            r.add("mmcat_integration.end_image_number", int(m.group(2)))
        for label, key, unit in (("Oscillation increment [deg]", "mmcat_collection.oscillation_width", "degrees"),
                                 ("Wavelength [A]", "diffrn_radiation_wavelength.wavelength", "Å")):
            if label in settings:
                v, _ = self._pair(label, settings[label], 0, None, path)
                if v > 0:
                    r.add(key, v, unit)
        # "Detector distance (refined)  158.96 (158.97)": refined value, then the one given to XDS
        if "Detector distance (refined)" in indexing:
            refined, given = self._pair("Detector distance", indexing["Detector distance (refined)"], 0, None, path)
            if refined > 0:
                r.add("mmcat_integration.refined_detector_distance", refined, "mm")
            if given is not None and given > 0:
                r.add("mmcat_collection.detector_distance", given, "mm")
        elif "Detector distance [mm]" in settings:
            v, _ = self._pair("Detector distance", settings["Detector distance [mm]"], 0, None, path)
            if v > 0:
                r.add("mmcat_integration.refined_detector_distance", v, "mm")

    def _symmetry(self, r: Result, table: dict[str, tuple[str, int]], pointless: tuple[str, int] | None, path: Path,
                  notes: list[str]) -> None:
        if "Space group" in table:
            text, n = table["Space group"]
            m = re.fullmatch(r"(.+?)\s*\(\s*(\d+)\s*\)", text)
            if m is None or not 1 <= int(m.group(2)) <= 230:
                fail(NAME, path, f"cannot read the space group {text!r}", n)
            name, number = space_group(m.group(1))
            if pointless is not None:
                pm = re.fullmatch(r"(.+?)\s*\(\s*(\d+)\s*\)", pointless[0])
                if pm is not None and int(pm.group(2)) == int(m.group(2)):
                    name = " ".join(pm.group(1).split())
            if number is not None and number != int(m.group(2)):
                notes.append(f"space group {m.group(1)!r} is number {number} for gemmi, {m.group(2)} for XDSAPP; XDSAPP's kept")
            r.add("symmetry.space_group_name_H-M", name)
            r.add("symmetry.Int_Tables_number", int(m.group(2)))
        if "Unit cell parameters [A]" in table:
            text, n = table["Unit cell parameters [A]"]
            try:
                cell = [float(x) for x in text.split()]
            except ValueError:
                cell = []
            if len(cell) != 6 or any(not math.isfinite(x) for x in cell) or any(x <= 0 for x in cell[:3]) \
                    or any(not 0 < x < 180 for x in cell[3:]):
                fail(NAME, path, f"cannot read the unit cell {text!r}", n)
            for key, v in zip(("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"), cell, strict=True):
                r.add(f"cell.{key}", v)


ADAPTER = XdsappResults()
