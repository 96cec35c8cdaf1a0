"""XDS CORRECT.LP: the log of the CORRECT step of XDS (scaling, symmetry, final statistics).

XDS (W. Kabsch, MPI for Medical Research; https://xds.mr.mpg.de, "CORRECT" in the XDS
documentation) writes CORRECT.LP with a banner ``***** CORRECT ***** (VERSION <date>)``. Read here,
as printed by versions from 2010 to 2020 (and later ones with the same layout):

* the final statistics table, the last "SUBSET OF INTENSITY DATA WITH SIGNAL/NOISE >= -3.0 AS
  FUNCTION OF RESOLUTION" after "STATISTICS OF SAVED DATA SET" (earlier copies describe subsets
  of images): overall = its total row, inner = first shell, outer = last shell, and every shell as
  a ``reflns_shell`` table (rules in :func:`mxcat.adapters._xds_common.emit_statistics`);
* the data's low-resolution limit from the first row of "STANDARD ERROR OF REFLECTION
  INTENSITIES AS FUNCTION OF RESOLUTION" (XDS prints only high limits in the statistics table);
* ISa, the Wilson B of the straight-line fit, the space group and cell the statistics assume (the
  refined cell when CORRECT refined it), the refined geometry of "REFINEMENT OF DIFFRACTION
  PARAMETERS USING ALL IMAGES" (distance, direct-beam position in mm = pixels x QX/QY, rotation
  axis, beam direction, mosaicity), the wavelength, image range and oscillation width;
* an aborted run (``!!! ERROR !!!``) gives a result with status ``failed`` and the error text.
"""

from __future__ import annotations

from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters import _xds_common as xc
from mxcat.adapters._util import read_text
from mxcat.errors import ParseError

NAME = "xds_correct_lp"


def _find(lines: list[str], text: str, start: int = 0) -> int | None:
    for i in range(start, len(lines)):
        if text in lines[i]:
            return i
    return None


def _last(lines: list[str], text: str) -> int | None:
    for i in range(len(lines) - 1, -1, -1):
        if text in lines[i]:
            return i
    return None


def input_parameters(lines: list[str]) -> dict[str, str]:
    """The ``INPUT PARAMETER VALUES`` block at the top (up to the first ``*****`` rule)."""
    out: dict[str, str] = {}
    for line in lines[:120]:
        if line.strip().startswith("*****") and out:
            break
        for k, v in xc.params(line).items():
            out.setdefault(k, v)
    return out


def low_limit(lines: list[str], start: int) -> float | None:
    """First number of the first row of the standard-error table after line index *start*."""
    i = _find(lines, "STANDARD ERROR OF REFLECTION INTENSITIES AS FUNCTION OF RESOLUTION", start)
    if i is None:
        return None
    j = _find(lines, "RESOLUTION RANGE", i)
    if j is None or j > i + 30:
        return None
    for line in lines[j + 1 : j + 6]:
        vals = xc.numbers(line, 2)
        if vals:
            return vals[0]
    return None


def isa(lines: list[str]) -> float | None:
    """ISa of the last ``a  b  ISa`` table (the error model of the saved data set)."""
    for i in range(len(lines) - 2, -1, -1):
        if lines[i].split()[:3] == ["a", "b", "ISa"]:
            vals = xc.numbers(lines[i + 1], 3)
            return vals[2] if vals else None
    return None


def symmetry(lines: list[str]) -> tuple[float | None, list[float] | None]:
    """Space group number and cell of the data set (the later block wins)."""
    sg = cell = None
    for title in ("SELECTED SPACE GROUP AND UNIT CELL FOR THIS DATA SET", "THE DATA COLLECTION STATISTICS REPORTED BELOW ASSUMES"):
        i = _last(lines, title)
        if i is None:
            continue
        for line in lines[i + 1 : i + 6]:
            p = xc.params(line)
            if "SPACE_GROUP_NUMBER" in p:
                v = xc.numbers(p["SPACE_GROUP_NUMBER"], 1)
                sg = v[0] if v else sg
            if "UNIT_CELL_CONSTANTS" in p:
                cell = xc.numbers(p["UNIT_CELL_CONSTANTS"], 6) or cell
    return sg, cell


class XdsCorrectLp:
    """XDS CORRECT.LP: final merging statistics, ISa, refined cell and geometry."""

    name = NAME
    description = "XDS CORRECT.LP log: final statistics by resolution shell, ISa, space group, refined cell and geometry"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            return xc.starts_with_banner(head, "CORRECT")
        except Exception:  # noqa: BLE001 - detectors never raise
            return False

    def parse(self, path: Path) -> Parsed:
        text = read_text(path, NAME)
        lines = text.splitlines()
        version = xc.banner(lines, "CORRECT", NAME, path)
        parsed = Parsed(NAME, path, program="XDS CORRECT", version=version)
        notes = parsed.notes
        r = Result(level="processing")
        inp = input_parameters(lines)
        hint = xc.dataset_hint(inp.get("NAME_TEMPLATE_OF_DATA_FRAMES"))
        if hint:
            parsed.hints["dataset"] = hint
        failures = xc.errors(lines)

        saved = _last(lines, "STATISTICS OF SAVED DATA SET")
        tables = xc.find_tables(lines, saved) if saved is not None else []
        if not failures:
            if saved is None:
                raise ParseError("no 'STATISTICS OF SAVED DATA SET' section (file truncated?)", adapter=NAME, path=path, line=len(lines))
            if not tables:
                raise ParseError("no final statistics table after 'STATISTICS OF SAVED DATA SET' (file truncated?)",
                                 adapter=NAME, path=path, line=saved + 1)
            if not xc.ended(lines):
                raise ParseError("no 'elapsed wall-clock time' line at the end (file truncated?)", adapter=NAME, path=path, line=len(lines))

        # collection and crystal
        wl = xc.numbers(inp.get("X-RAY_WAVELENGTH"), 1)
        if wl and wl[0] > 0:
            r.add("diffrn_radiation_wavelength.wavelength", wl[0])
        dr = xc.numbers(inp.get("DATA_RANGE"), 2)
        if dr:
            r.add("mmcat_integration.start_image_number", xc.whole(dr[0]))
            r.add("mmcat_integration.end_image_number", xc.whole(dr[1]))
        osc = xc.numbers(inp.get("OSCILLATION_RANGE"), 1)
        if osc:
            r.add("mmcat_collection.oscillation_width", osc[0])
        qx = (xc.numbers(inp.get("QX"), 1) or [None])[0]
        qy = (xc.numbers(inp.get("QY"), 1) or [None])[0]

        sg, cell = symmetry(lines)
        ref = _last(lines, "REFINEMENT OF DIFFRACTION PARAMETERS USING ALL IMAGES")
        geom: dict[str, list[float]] = {}
        if ref is not None:
            stop = _find(lines, "******", ref + 2)
            geom = xc.geometry_block(lines, ref, stop)
            if geom.get("cell") and len(geom["cell"]) >= 6:
                cell = geom["cell"][:6]
            if geom.get("sg"):
                sg = geom["sg"][0]
            if not any(k in geom for k in ("distance", "beam_px", "axis")):
                notes.append("CORRECT did not refine the geometry (refinement results not accepted); no refined geometry stored")
        xc.space_group_from_number(r, sg, notes, "CORRECT")
        xc.add_cell(r, cell)
        xc.add_geometry(r, geom, qx, qy, notes, "CORRECT")
        if "beam_px" in geom:
            notes.append("refined beam centre: the direct-beam position XDS prints in pixels, times the pixel size QX, QY")
        # statistics of the saved data set
        v = isa(lines)
        if tables:
            friedel = xc.friedel(lines[saved : saved + 3], inp, NAME, path, saved)
            table = xc.read_table(lines, tables[-1], NAME, path)
            d_low = low_limit(lines, 0)
            if d_low is None:
                inc = xc.numbers(inp.get("INCLUDE_RESOLUTION_RANGE"), 2)
                if inc and inc[0] > 0:
                    d_low = inc[0]
                    notes.append("low-resolution limit from INCLUDE_RESOLUTION_RANGE (no standard-error table)")
            xc.emit_statistics(r, table, friedel, d_low, notes, "CORRECT")
            if v is not None and not (table.total and table.total.values.get("compared")):
                notes.append(f"ISa {v:g} left out: no symmetry-related reflections were compared, so XDS printed its default error model")
                v = None
            b = xc.wilson_b(lines[saved:])
            if b is not None:
                r.add("reflns.B_iso_Wilson_estimate", b)
        if v is not None:
            r.add("reflns.mmcat_ISa", v)
        if failures:
            xc.add_failure(r, failures, notes)
        else:
            r.add("mmcat_processing.status", "success")
        parsed.results.append(r)
        return xc.keep_valid(parsed)


ADAPTER = XdsCorrectLp()
