"""XDS IDXREF.LP: the log of the IDXREF (indexing and refinement) step of XDS.

XDS (W. Kabsch; https://xds.mr.mpg.de, "IDXREF" in the XDS documentation) writes IDXREF.LP with a
banner ``***** IDXREF ***** (VERSION <date>)`` (read here as printed by the January 2020 version;
older versions share the layout). Read here:

* the solution "DIFFRACTION PARAMETERS USED AT START OF INTEGRATION" (else the last "REFINED
  SOLUTION"): space group number, cell, mosaicity, distance, direct-beam position (mm = pixels x
  QX/QY), rotation axis and beam direction;
* the wavelength and oscillation width of the input parameters;
* the reduced cell, the number of spots indexed and the lattice characters consistent with the
  spots (marked ``*``) as notes: mmCAT has no items for them;
* ``!!! ERROR !!!`` (for example INSUFFICIENT PERCENTAGE OF INDEXED REFLECTIONS): status
  ``failed`` with the error text; the solution printed before the error is kept, as it is what
  the step found.
"""

from __future__ import annotations

import re
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters import _xds_common as xc
from mxcat.adapters._util import number, read_text
from mxcat.errors import ParseError

NAME = "xds_idxref_lp"
_INDEXED = re.compile(r"^\s*(\d+)\s+OUT OF\s+(\d+)\s+SPOTS INDEXED")
_LATTICE = re.compile(r"^\s*(\*)?\s*(\d+)\s+([amothcR][PCIFRS])\s+(\S+)\s+((?:\S+\s+){5}\S+)\s*$")


def _section(lines: list[str], title: str) -> int | None:
    for i in range(len(lines) - 1, -1, -1):
        if title in lines[i]:
            return i
    return None


class XdsIdxrefLp:
    """XDS IDXREF.LP: indexing solution, refined cell and geometry."""

    name = NAME
    description = "XDS IDXREF.LP log: indexing solution (space group, cell, refined geometry), lattice characters"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            return xc.starts_with_banner(head, "IDXREF")
        except Exception:  # noqa: BLE001 - detectors never raise
            return False

    def parse(self, path: Path) -> Parsed:
        lines = read_text(path, NAME).splitlines()
        version = xc.banner(lines, "IDXREF", NAME, path)
        parsed = Parsed(NAME, path, program="XDS IDXREF", version=version)
        notes = parsed.notes
        r = Result(level="processing")
        inp: dict[str, str] = {}
        for line in lines[:60]:
            if line.strip().startswith("*****") and inp:
                break
            for k, v in xc.params(line).items():
                inp.setdefault(k, v)
        hint = xc.dataset_hint(inp.get("NAME_TEMPLATE_OF_DATA_FRAMES"))
        if hint:
            parsed.hints["dataset"] = hint
        failures = xc.errors(lines)

        at = _section(lines, "DIFFRACTION PARAMETERS USED AT START OF INTEGRATION")
        if at is None:
            at = _section(lines, "REFINED SOLUTION BASED ON INDEXED REFLECTIONS")
        if at is None and not failures:
            raise ParseError("no refined indexing solution (file truncated?)", adapter=NAME, path=path, line=len(lines))
        if not failures and not xc.ended(lines):
            raise ParseError("no 'elapsed wall-clock time' line at the end (file truncated?)", adapter=NAME, path=path, line=len(lines))

        wl = xc.numbers(inp.get("X-RAY_WAVELENGTH"), 1)
        if wl and wl[0] > 0:
            r.add("diffrn_radiation_wavelength.wavelength", wl[0])
        osc = xc.numbers(inp.get("OSCILLATION_RANGE"), 1)
        if osc:
            r.add("mmcat_collection.oscillation_width", osc[0])
        if at is not None:
            stop = next((i for i in range(at + 2, len(lines)) if lines[i].strip().startswith("*****")), None)
            geom = xc.geometry_block(lines, at, stop)
            need = ("cell", "sg", "distance")
            if not all(k in geom for k in need):
                raise ParseError("indexing solution without " + ", ".join(k for k in need if k not in geom) + " (file truncated?)",
                                 adapter=NAME, path=path, line=at + 1)
            qx = (xc.numbers(inp.get("QX"), 1) or [None])[0]
            qy = (xc.numbers(inp.get("QY"), 1) or [None])[0]
            xc.space_group_from_number(r, geom["sg"][0], notes, "IDXREF")
            xc.add_cell(r, geom["cell"][:6] if len(geom["cell"]) >= 6 else None)
            xc.add_geometry(r, geom, qx, qy, notes, "IDXREF")
            if "beam_px" in geom:
                notes.append("refined beam centre: the direct-beam position XDS prints in pixels, times the pixel size QX, QY")
        self._indexing(lines, r, notes)
        if failures:
            xc.add_failure(r, failures, notes)
        else:
            r.add("mmcat_processing.status", "success")
        parsed.results.append(r)
        return xc.keep_valid(parsed)

    @staticmethod
    def _indexing(lines: list[str], r: Result, notes: list[str]) -> None:
        """Reduced cell (a note), indexed spots, and the lattice-character table."""
        for i, line in enumerate(lines):
            if "PARAMETERS OF THE REDUCED CELL" in line and i + 1 < len(lines):
                cell = xc.numbers(lines[i + 1], 6)
                if cell:
                    notes.append("reduced cell: " + " ".join(f"{v:g}" for v in cell))
        indexed = [m for ln in lines if (m := _INDEXED.match(ln))]
        if indexed:
            m = indexed[-1]
            r.add("mmcat_integration.n_spots_indexed", int(m.group(1)))
            r.add("mmcat_integration.n_spots_used", int(m.group(2)))
        at = _section(lines, "DETERMINATION OF LATTICE CHARACTER AND BRAVAIS LATTICE")
        if at is None:
            return
        rows = []
        for line in lines[at + 1 :]:
            if line.strip().startswith("*****"):
                break
            m = _LATTICE.match(line)
            if not m:
                continue
            cell = xc.numbers(m.group(5), 6)
            quality = number(m.group(4))
            if cell is None or quality is None:
                notes.append(f"lattice character line not understood: {line.strip()}")
                continue
            row = {"index": int(m.group(2)), "bravais_lattice": m.group(3), "quality_of_fit": quality,
                   "consistent": "yes" if m.group(1) else "no"}
            for name, v in zip(("cell_length_a", "cell_length_b", "cell_length_c", "cell_angle_alpha", "cell_angle_beta", "cell_angle_gamma"),
                               cell, strict=True):
                row[name] = v
            rows.append(row)
        r.table("mmcat_lattice_character", rows)

ADAPTER = XdsIdxrefLp()
