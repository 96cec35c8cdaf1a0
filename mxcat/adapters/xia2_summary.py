"""xia2-summary.dat: the short summary that xia2 (Winter 2010, J. Appl. Cryst. 43, 186) writes next to xia2.txt.

The file lists the project and crystal, each wavelength as ``Wavelength: NAME (lambda)``, the sweeps
(``Sweep:``, ``Files``, ``Images: 1 to N``, ``Distance header => refined``, ``Date:``), then one
block of merging statistics per wavelength headed ``For PROJECT/CRYSTAL/WAVELENGTH:``, each row a
label followed by the Overall, Low and High resolution shell values (tab separated), and finally
``Cell:`` and ``Spacegroup:`` of the crystal. Layout as written by xia2's ``XCrystal.summarise``
(xia2 0.3 to 3.x; see https://xia2.github.io/). Read here: one processing result per wavelength,
labelled with the wavelength name; Overall goes to ``reflns.*``, Low to ``reflns_shell.inner.*``,
High to ``reflns_shell.outer.*``. The statistics-row table and helpers are shared with
:mod:`mxcat.adapters.xia2_txt`, whose merging-statistics block has the same rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import fail, keep_valid, read_lines
from mxcat.errors import ParseError

NAME = "xia2_summary"


@dataclass(frozen=True)
class Stat:
    """How one xia2 statistics row maps to mmCAT."""

    overall: str | None
    """reflns key for the Overall column (None: not stored)."""
    shell: str | None = None
    """reflns_shell item for the Low and High columns (None: overall only)."""
    unit: str | None = None
    integer: bool = False
    lo: float | None = None
    """Below this the file is corrupt (ParseError)."""
    hi: float | None = None
    """Above this the file is corrupt (ParseError)."""


STAT_ROWS: dict[str, Stat] = {
    "High resolution limit": Stat("reflns.d_resolution_high", "d_res_high", lo=0),
    "Low resolution limit": Stat("reflns.d_resolution_low", "d_res_low", lo=0),
    "Completeness": Stat("reflns.percent_possible_obs", "percent_possible_obs", "%", lo=0, hi=100),
    "Multiplicity": Stat("reflns.pdbx_redundancy", "pdbx_redundancy", lo=0),
    "I/sigma": Stat("reflns.pdbx_netI_over_sigmaI", "pdbx_netI_over_sigmaI_obs"),
    # xia2 before about 2015 printed a bare "Rmerge"; later ones tell Rmerge(I) (I+ and I- merged)
    # from Rmerge(I+/-) (within I+/I-), which mmCAT has no item for.
    "Rmerge": Stat("reflns.pdbx_Rmerge_I_obs", "Rmerge_I_obs", lo=0),
    "Rmerge(I)": Stat("reflns.pdbx_Rmerge_I_obs", "Rmerge_I_obs", lo=0),
    "Rmerge(I+/-)": Stat(None),
    "Rmeas(I)": Stat("reflns.pdbx_Rrim_I_all", "pdbx_Rrim_I_all", lo=0),
    "Rmeas(I+/-)": Stat("reflns.mmcat_Rmeas_within_IplusIminus", "mmcat_Rmeas_within_IplusIminus", lo=0),
    "Rpim(I)": Stat("reflns.pdbx_Rpim_I_all", "pdbx_Rpim_I_all", lo=0),
    "Rpim(I+/-)": Stat("reflns.mmcat_Rpim_within_IplusIminus", "mmcat_Rpim_within_IplusIminus", lo=0),
    "CC half": Stat("reflns.pdbx_CC_half", "pdbx_CC_half", lo=-1, hi=1),
    "Wilson B factor": Stat("reflns.B_iso_Wilson_estimate"),
    "Partial bias": Stat("reflns.mmcat_fractional_partial_bias", "mmcat_fractional_partial_bias"),
    "Anomalous completeness": Stat("reflns.pdbx_percent_possible_anomalous", "pdbx_percent_possible_anomalous", "%", lo=0, hi=100),
    "Anomalous multiplicity": Stat("reflns.pdbx_redundancy_anomalous", "pdbx_redundancy_anomalous", lo=0),
    "Anomalous correlation": Stat("reflns.pdbx_CC_half_anomalous", "pdbx_CC_half_anomalous", lo=-1, hi=1),
    "Anomalous slope": Stat(None),
    "dF/F": Stat(None),
    "dI/s(dI)": Stat("reflns.pdbx_absDiff_over_sigma_anomalous", lo=0),
    "Total observations": Stat("reflns.pdbx_number_measured_all", "number_measured_all", integer=True, lo=0),
    "Total unique": Stat("reflns.number_obs", "number_unique_obs", integer=True, lo=0),
}
"""xia2 statistics rows (labels as xia2 prints them) and the mmCAT keys they fill."""

SHELLS = ("inner", "outer")
"""xia2 columns after Overall: Low (the inner shell) and High (the outer shell)."""

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
STAT_ROW_RE = re.compile(rf"^\s*(?P<label>\S.*?)\s*:?[ \t]+(?P<nums>{_NUM}(?:[ \t]+{_NUM})*)\s*$")


def stat_line(line: str) -> tuple[str, list[str]] | None:
    """(label, value texts) when *line* is a known statistics row, else None."""
    m = STAT_ROW_RE.match(line)
    if m and m.group("label") in STAT_ROWS:
        return m.group("label"), m.group("nums").split()
    stripped = line.strip()
    for label in STAT_ROWS:
        if stripped.startswith(label) and stripped[len(label):len(label) + 1] in (" ", "\t", ":"):
            rest = stripped[len(label):].lstrip(" \t:")
            if rest and not rest.startswith("("):
                return label, rest.split()
    return None


@dataclass
class StatBlock:
    """One ``For P/C/W`` block: its name, rows (label -> (values, line)) and first line."""

    name: str
    line: int
    rows: dict[str, tuple[list[str], int]]


def add_statistics(result: Result, block: StatBlock, notes: list[str], adapter: str, path: Path) -> None:
    """Put a block's rows into *result*; malformed or impossible values raise ParseError."""
    if "High resolution limit" not in block.rows:
        fail(adapter, path, f"statistics for {block.name} have no 'High resolution limit' row (truncated?)", block.line)
    for label, (texts, line) in block.rows.items():
        stat = STAT_ROWS[label]
        if len(texts) not in (1, 3):
            fail(adapter, path, f"{label!r} has {len(texts)} values; expected Overall, Low and High", line)
        values: list[float] = []
        for t in texts:
            try:
                v = float(t)
            except ValueError:
                fail(adapter, path, f"{label!r}: {t!r} is not a number", line)
            if not math.isfinite(v) or (stat.lo is not None and v < stat.lo) or (stat.hi is not None and v > stat.hi):
                fail(adapter, path, f"{label!r}: {t} is outside the possible range", line)
            if stat.integer and not v.is_integer():
                fail(adapter, path, f"{label!r}: {t} is not a whole number", line)
            values.append(v)
        if stat.overall is None:
            notes.append(f"{block.name}: {label!r} has no mmCAT item; not stored")
            continue
        columns = [(stat.overall, values[0], False)]
        if stat.shell is not None and len(values) == 3:
            columns += [(f"reflns_shell.{shell}.{stat.shell}", v, True) for shell, v in zip(SHELLS, values[1:], strict=True)]
        for key, v, _is_shell in columns:
            result.add(key, int(v) if stat.integer else v, stat.unit)  # keep_valid() drops and records what mmCAT forbids


def space_group(text: str) -> tuple[str, int | None]:
    """(Hermann-Mauguin name, IT number) of a space-group symbol; compact symbols (C2) are expanded."""
    import gemmi

    name = " ".join(text.split())
    try:
        sg = gemmi.find_spacegroup_by_name(name)
    except (RuntimeError, ValueError):
        sg = None
    if sg is None:
        return name, None
    return (name if " " in name else sg.hm), sg.number


def add_symmetry(result: Result, sg_text: str | None, cell: list[float] | None, notes: list[str], adapter: str, path: Path,
                 line: int | None = None) -> None:
    """Space group (name and number) and cell constants; an impossible cell raises ParseError."""
    if sg_text:
        name, number = space_group(sg_text)
        if number is None:
            notes.append(f"space group {name!r} is not known to gemmi; its number is not given")
        result.add("symmetry.space_group_name_H-M", name)
        result.add("symmetry.Int_Tables_number", number)
    if cell is not None:
        if len(cell) != 6 or any(not math.isfinite(x) for x in cell) or any(x <= 0 for x in cell[:3]) \
                or any(not 0 < x < 180 for x in cell[3:]):
            fail(adapter, path, f"impossible unit cell {cell}", line)
        for key, v in zip(("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"), cell, strict=True):
            result.add(f"cell.{key}", v)


def template_parts(full: str) -> tuple[str | None, str, str | None]:
    """(directory, file template, dataset-name hint) of an image path template such as /d/x_1_####.cbf."""
    directory, _, template = full.rpartition("/")
    m = re.match(r"^(.*?)[_.-]?#+\.[^/]*$", template)
    return (directory or None), template, (m.group(1) if m and m.group(1) else None)


@dataclass
class _Wavelength:
    name: str
    value: float
    sweeps: list[dict[str, str | int]]


@dataclass
class _Crystal:
    name: str
    wavelengths: dict[str, _Wavelength]
    cell: tuple[list[float], int] | None = None
    spacegroup: str | None = None


_DIRECTIVES = ("Project:", "Crystal:", "Wavelength:", "Sweep:", "Files ", "Images:", "Beam ", "Distance ", "Date:", "For ",
               "Cell:", "Spacegroup:", "Sequence")
_WAVE = re.compile(rf"^Wavelength:\s*(\S+)\s*\(\s*({_NUM})\s*\)\s*$")
_FOR = re.compile(r"^For\s+(\S+?)/(\S+?)/(\S+?):?\s*(?:Overall.*)?$")


class Xia2Summary:
    name = NAME
    description = "xia2-summary.dat: merging statistics per wavelength, cell and space group"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            text = head.lstrip()
            if not text.startswith(b"Project:"):
                return False
            return b"\nCrystal:" in text and (b"\nWavelength:" in text or b"\nFor " in text)
        except Exception:  # noqa: BLE001 - a detector never raises
            return False

    def parse(self, path: Path) -> Parsed:
        text, lines = read_lines(path, NAME)
        if not lines or not lines[0].strip().startswith("Project:"):
            fail(NAME, path, "not an xia2-summary.dat: it does not start with 'Project:'", 1)
        notes: list[str] = []
        crystals: dict[str, _Crystal] = {}
        crystal: _Crystal | None = None
        wave: _Wavelength | None = None
        sweep: dict[str, str | int] | None = None
        blocks: list[tuple[str, StatBlock]] = []
        block: StatBlock | None = None
        for n, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line:
                continue
            if block is not None:
                row = stat_line(raw)
                if row is not None:
                    label, values = row
                    if label in block.rows:
                        fail(NAME, path, f"{label!r} given twice for {block.name}", n)
                    block.rows[label] = (values, n)
                    continue
                if not line.startswith(_DIRECTIVES) and STAT_ROW_RE.match(raw):
                    notes.append(f"line {n}: statistics row {line.split('  ')[0]!r} has no mmCAT item")
                    continue
                block = None
            if line.startswith("Project:"):
                continue
            if line.startswith("Crystal:"):
                cname = line.partition(":")[2].strip()
                if not cname or cname in crystals:
                    fail(NAME, path, f"crystal {cname!r} is unnamed or given twice", n)
                crystal = crystals[cname] = _Crystal(cname, {})
                wave = sweep = None
                continue
            if crystal is None:
                fail(NAME, path, f"{line[:40]!r} before any 'Crystal:' line", n)
            if line.startswith("Wavelength:"):
                m = _WAVE.match(line)
                if m is None or float(m.group(2)) <= 0 or m.group(1) in crystal.wavelengths:
                    fail(NAME, path, "cannot read the wavelength line (expected 'Wavelength: NAME (lambda)', once per name)", n)
                wave = crystal.wavelengths[m.group(1)] = _Wavelength(m.group(1), float(m.group(2)), [])
                sweep = None
            elif line.startswith("Sweep:"):
                if wave is None:
                    fail(NAME, path, "sweep before any wavelength", n)
                sweep = {"name": line.partition(":")[2].strip()}
                wave.sweeps.append(sweep)
            elif line.startswith(("Files ", "Images:", "Beam ", "Distance ", "Date:")):
                if sweep is None:
                    fail(NAME, path, f"{line.split()[0]!r} outside a sweep", n)
                _sweep_line(sweep, line, path, n)
            elif line.startswith("For "):
                m = _FOR.match(line)
                if m is None:
                    fail(NAME, path, "cannot read the 'For PROJECT/CRYSTAL/WAVELENGTH:' line", n)
                block = StatBlock(f"{m.group(2)}/{m.group(3)}", n, {})
                if any(b.name == block.name for _, b in blocks):
                    fail(NAME, path, f"statistics for {block.name} given twice", n)
                blocks.append((m.group(2), block))
            elif line.startswith("Cell:"):
                try:
                    cell = [float(x) for x in line.partition(":")[2].split()]
                except ValueError:
                    fail(NAME, path, "cannot read the cell", n)
                if crystal.cell is not None:
                    fail(NAME, path, "cell given twice", n)
                crystal.cell = (cell, n)
            elif line.startswith("Spacegroup:"):
                if crystal.spacegroup is not None:
                    fail(NAME, path, "space group given twice", n)
                crystal.spacegroup = line.partition(":")[2].strip() or None
            elif line.startswith("Sequence"):
                continue
            else:
                notes.append(f"line {n} not read: {line[:60]}")
        if not blocks:
            fail(NAME, path, "no merging statistics ('For ...' block): truncated or not an xia2 summary", len(lines))
        results = []
        for cname, blk in blocks:
            c = crystals.get(cname)
            if c is None:
                fail(NAME, path, f"statistics for crystal {cname!r}, which the file does not declare", blk.line)
            if c.spacegroup is None or c.cell is None:
                fail(NAME, path, f"crystal {cname} has no 'Cell:' or 'Spacegroup:' line (truncated?)", len(lines))
            wname = blk.name.partition("/")[2]
            label = wname if len(crystals) == 1 else f"{cname}_{wname}"
            r = Result(level="processing", label=label)
            r.add("mmcat_processing.pipeline", "xia2")
            add_statistics(r, blk, notes, NAME, path)
            add_symmetry(r, c.spacegroup, c.cell[0], notes, NAME, path, c.cell[1])
            w = c.wavelengths.get(wname)
            if w is None:
                notes.append(f"{blk.name}: no 'Wavelength:' line names this wavelength")
            else:
                r.add("diffrn_radiation_wavelength.wavelength", w.value)
                if len(w.sweeps) == 1:
                    _add_sweep(r, w.sweeps[0])
                elif w.sweeps:
                    notes.append(f"{blk.name}: {len(w.sweeps)} sweeps; their collection parameters are not stored")
            results.append(r)
        hints: dict[str, str] = {}
        dataset_names = {s["hint"] for c in crystals.values() for w in c.wavelengths.values() for s in w.sweeps if s.get("hint")}
        if len(dataset_names) == 1:
            hints["dataset"] = str(dataset_names.pop())
        if any("Rmerge" in b.rows for _, b in blocks):
            notes.append("'Rmerge' (an older xia2 label) is stored as Rmerge with I+ and I- merged (pdbx_Rmerge_I_obs)")
        return keep_valid(Parsed(adapter=NAME, path=path, program="xia2", results=results, hints=hints, notes=notes))


def _sweep_line(sweep: dict[str, str | int], line: str, path: Path, n: int) -> None:
    try:
        if line.startswith("Files "):
            directory, template, hint = template_parts(line[6:].strip())
            sweep["template"] = template
            if directory:
                sweep["directory"] = directory
            if hint:
                sweep["hint"] = hint
        elif line.startswith("Images:"):
            m = re.match(r"^Images:\s*(\d+)\s+to\s+(\d+)\s*$", line)
            if m is None or int(m.group(2)) < int(m.group(1)):
                raise ValueError(line)
            sweep["first"], sweep["last"] = int(m.group(1)), int(m.group(2))
        elif line.startswith("Distance "):
            m = re.match(rf"^Distance\s+({_NUM})\s*=>\s*({_NUM})\s*$", line)
            if m is None or float(m.group(1)) <= 0 or float(m.group(2)) <= 0:
                raise ValueError(line)
            sweep["distance"], sweep["refined_distance"] = m.group(1), m.group(2)
        elif line.startswith("Date:"):
            # time.ctime() of the first image's time stamp, in the local time of the processing host
            sweep["date"] = datetime.strptime(" ".join(line[5:].split()), "%a %b %d %H:%M:%S %Y").isoformat()
    except ValueError as err:
        raise ParseError(f"cannot read the sweep line {line[:40]!r}", adapter=NAME, path=path, line=n) from err


def _add_sweep(r: Result, s: dict[str, str | int]) -> None:
    r.add("mmcat_collection.file_template", s.get("template"))
    r.add("mmcat_collection.directory", s.get("directory"))
    if "first" in s:
        r.add("mmcat_collection.first_image_number", s["first"])
        r.add("mmcat_collection.number_of_images", int(s["last"]) - int(s["first"]) + 1)
    if "distance" in s:
        r.add("mmcat_collection.detector_distance", float(s["distance"]))
        r.add("mmcat_integration.refined_detector_distance", float(s["refined_distance"]))
    r.add("mmcat_collection.start_time", s.get("date"))


ADAPTER = Xia2Summary()
