"""xia2.txt: the main report of xia2 (Winter 2010, J. Appl. Cryst. 43, 186; https://xia2.github.io/).

xia2 writes its environment, a ``XIA2 <version>`` banner and the command line, then per sweep the
indexing and integration reports, then per crystal the wavelengths (``Wavelength name:`` and
``Wavelength <lambda>``), the sweeps (``SWEEP``, ``TEMPLATE``, ``DIRECTORY``, ``IMAGES (USER) a to
b``), one merging-statistics block per wavelength headed ``For PROJECT/CRYSTAL/WAVELENGTH`` with
Overall, Low and High columns, ``Assuming spacegroup:``, ``Unit cell:`` (or ``Unit cell (with
estimated std devs):``) followed by two lines of lengths and angles, and last a ``Status:`` line
(``normal termination`` or ``error "..."``). Layout as written by xia2 0.3 to 3.x.

A failed run gives one processing result with ``mmcat_processing.status`` = failed and the error as
the message. A finished run gives one processing result per wavelength (labelled with its name)
whose statistics map as in :mod:`mxcat.adapters.xia2_summary`. A file without a ``Status:`` line
did not finish or was cut short, and is a ParseError: a running xia2 cannot be told from a
truncated file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import fail, keep_valid, read_lines
from mxcat.adapters.xia2_summary import (
    STAT_ROW_RE,
    StatBlock,
    add_statistics,
    add_symmetry,
    stat_line,
    template_parts,
)

NAME = "xia2_txt"

_VERSION = re.compile(r"^\s*XIA2\s+v?(\d[\w.+-]*)\s*$", re.I)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CELL_NUM = re.compile(rf"({_NUM})(?:\(\d+\))?")
_FOR = re.compile(r"^For\s+(\S+?)/(\S+?)/(\S+?):?(?:\s+Overall.*)?$")
_MARKERS = re.compile(rb"^\s*(XIA2\s+v?\d|XIA2_ROOT\s*=>|Contact:\s*xia2\.support@|Environment configuration\.\.\.)", re.M | re.I)


@dataclass
class _Crystal:
    name: str
    waves: dict[str, float] = field(default_factory=dict)
    sweeps: dict[str, list[dict[str, str | int]]] = field(default_factory=dict)
    spacegroup: str | None = None
    cell: tuple[list[float], int] | None = None


class Xia2Txt:
    name = NAME
    description = "xia2.txt: xia2's report (status, merging statistics per wavelength, cell, space group)"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            if head.lstrip().startswith(b"Project:"):
                return False  # xia2-summary.dat
            return _MARKERS.search(head) is not None
        except Exception:  # noqa: BLE001 - a detector never raises
            return False

    def parse(self, path: Path) -> Parsed:
        text, lines = read_lines(path, NAME)
        if _MARKERS.search(text[:65536].encode("utf-8", "replace")) is None:
            fail(NAME, path, "not an xia2.txt: no XIA2 banner or environment report", 1)
        version = command = status = None
        status_line = 0
        notes: list[str] = []
        crystals: dict[str, _Crystal] = {}
        crystal: _Crystal | None = None
        wave_name: str | None = None
        sweep: dict[str, str | int] | None = None
        blocks: list[tuple[str, StatBlock]] = []
        block: StatBlock | None = None
        n = 0
        while n < len(lines):
            raw = lines[n]
            n += 1
            line = raw.strip()
            if block is not None:
                row = stat_line(raw)
                if row is not None:
                    if row[0] in block.rows:
                        fail(NAME, path, f"{row[0]!r} given twice for {block.name}", n)
                    block.rows[row[0]] = (row[1], n)
                    continue
                if line and not line.startswith(("Assuming spacegroup", "Unit cell", "For ")) and STAT_ROW_RE.match(raw):
                    notes.append(f"line {n}: statistics row {line.split('  ')[0]!r} has no mmCAT item")
                    continue
                block = None
            if not line:
                continue
            if (m := _VERSION.match(line)) is not None and version is None:
                version = m.group(1)
            elif line.startswith("Command line:"):
                command = line.partition(":")[2].strip() or None
            elif line.startswith("Status:"):
                status, status_line = line.partition(":")[2].strip(), n
            elif line.startswith("Crystal:"):
                cname = line.partition(":")[2].strip()
                crystal = crystals.setdefault(cname, _Crystal(cname))
                wave_name = sweep = None
            elif line.startswith("Wavelength name:"):
                wave_name = line.partition(":")[2].strip()
                nxt = lines[n].split() if n < len(lines) else []
                if crystal is None or not wave_name or len(nxt) != 2 or nxt[0] != "Wavelength" or not re.fullmatch(_NUM, nxt[1]) \
                        or float(nxt[1]) <= 0:
                    fail(NAME, path, "cannot read the wavelength (expected 'Wavelength name: X' then 'Wavelength <lambda>')", n)
                crystal.waves[wave_name] = float(nxt[1])
                n += 1
            elif line.startswith("SWEEP ") and crystal is not None:
                m = re.match(r"^SWEEP\s+(\S+)\s+\[WAVELENGTH\s+(\S+)\]", line)
                if m is None:
                    fail(NAME, path, "cannot read the SWEEP line", n)
                sweep = {"name": m.group(1)}
                crystal.sweeps.setdefault(m.group(2), []).append(sweep)
            elif sweep is not None and line.startswith(("TEMPLATE ", "DIRECTORY ", "IMAGES ")):
                _sweep_line(sweep, line, path, n)
            elif line.startswith("For ") and (m := _FOR.match(line)) is not None:
                block = StatBlock(f"{m.group(2)}/{m.group(3)}", n, {})
                if any(b.name == block.name for _, b in blocks):
                    fail(NAME, path, f"statistics for {block.name} given twice", n)
                blocks.append((m.group(2), block))
            elif line.startswith("Assuming spacegroup:"):
                if crystal is None:
                    fail(NAME, path, "space group before any 'Crystal:' line", n)
                crystal.spacegroup = line.partition(":")[2].strip() or None
            elif line.startswith("Unit cell") and line.endswith(":"):
                if crystal is None:
                    fail(NAME, path, "unit cell before any 'Crystal:' line", n)
                cell = []
                for extra in lines[n:n + 2]:
                    vals = extra.split()
                    if len(vals) != 3 or not all(_CELL_NUM.fullmatch(v) for v in vals):
                        fail(NAME, path, "expected two lines of three cell constants after 'Unit cell:'", n + 1)
                    cell += [float(_CELL_NUM.fullmatch(v).group(1)) for v in vals]
                crystal.cell = (cell, n)
                n += 2
        if status is None:
            fail(NAME, path, "no 'Status:' line: the run did not finish or the file is truncated", len(lines))
        common = Result(level="processing")
        common.add("mmcat_processing.pipeline", "xia2")
        common.add("mmcat_processing.program_version", version)
        common.add("mmcat_processing.command_line", command)
        if status.startswith("error"):
            message = status[5:].strip()
            if message.startswith('"') and (len(message) < 2 or not message.endswith('"')):
                fail(NAME, path, "the error message of the Status line is cut short", status_line)
            message = message.strip('"').strip() or "error"
            common.add("mmcat_processing.status", "failed")
            common.add("mmcat_processing.message", message)
            common.add("mmcat_processing.message_severity", "ERROR")
        elif status == "normal termination":
            common.add("mmcat_processing.status", "success")
            if not blocks:
                fail(NAME, path, "normal termination but no merging statistics ('For ...' block)", status_line)
        else:
            fail(NAME, path, f"unknown status {status!r}", status_line)
        results = []
        for cname, blk in blocks:
            c = crystals.get(cname)
            if c is None or c.spacegroup is None or c.cell is None:
                fail(NAME, path, f"statistics for crystal {cname!r} without its 'Crystal:', 'Assuming spacegroup:' or 'Unit cell:' lines",
                     blk.line)
            wname = blk.name.partition("/")[2]
            r = Result(level="processing", label=wname if len(crystals) == 1 else f"{cname}_{wname}", values=list(common.values))
            add_statistics(r, blk, notes, NAME, path)
            add_symmetry(r, c.spacegroup, c.cell[0], notes, NAME, path, c.cell[1])
            r.add("diffrn_radiation_wavelength.wavelength", c.waves.get(wname))
            sweeps = c.sweeps.get(wname, [])
            if len(sweeps) == 1:
                s = sweeps[0]
                r.add("mmcat_collection.file_template", s.get("template"))
                r.add("mmcat_collection.directory", s.get("directory"))
                if "first" in s:
                    r.add("mmcat_collection.first_image_number", s["first"])
                    r.add("mmcat_collection.number_of_images", int(s["last"]) - int(s["first"]) + 1)
            elif sweeps:
                notes.append(f"{blk.name}: {len(sweeps)} sweeps; their collection parameters are not stored")
            results.append(r)
        hints: dict[str, str] = {}
        names = {str(s["hint"]) for c in crystals.values() for ss in c.sweeps.values() for s in ss if s.get("hint")}
        if len(names) == 1:
            hints["dataset"] = names.pop()
        return keep_valid(Parsed(adapter=NAME, path=path, program="xia2", version=version, results=results or [common],
                                 hints=hints, notes=notes))


def _sweep_line(sweep: dict[str, str | int], line: str, path: Path, n: int) -> None:
    word, _, rest = line.partition(" ")
    rest = rest.strip()
    if word == "TEMPLATE":
        _, template, hint = template_parts(rest)
        sweep["template"] = template
        if hint:
            sweep["hint"] = hint
    elif word == "DIRECTORY":
        sweep["directory"] = rest
    elif word == "IMAGES":
        m = re.match(r"^(?:\(\w+\)\s*)?(\d+)\s+to\s+(\d+)$", rest)
        if m is None or int(m.group(2)) < int(m.group(1)):
            fail(NAME, path, "cannot read the IMAGES line", n)
        sweep["first"], sweep["last"] = int(m.group(1)), int(m.group(2))


ADAPTER = Xia2Txt()
