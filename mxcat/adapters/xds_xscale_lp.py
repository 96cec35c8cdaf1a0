"""XDS XSCALE.LP: the log of XSCALE, which scales and merges XDS_ASCII data sets into output files.

XSCALE belongs to the XDS package (W. Kabsch; https://xds.mr.mpg.de, "XSCALE" in the XDS
documentation); its log starts with ``***** XSCALE ***** (VERSION <date>)`` (read here as printed
from 2014 to 2020). The control cards name one or more ``OUTPUT_FILE=`` each followed by its
``INPUT_FILE=`` lines; after scaling, XSCALE prints for every output file a section "STATISTICS OF
SCALED OUTPUT DATA SET : <file>" with the table "SUBSET OF INTENSITY DATA WITH SIGNAL/NOISE >= -3.0
AS FUNCTION OF RESOLUTION" and a Wilson plot.

* One result per output data set, labelled by its output file name (``SAD.HKL``); values as for
  CORRECT (rules in :func:`mxcat.adapters._xds_common.emit_statistics`).
* The space group and cell are those "THE DATA COLLECTION STATISTICS REPORTED BELOW ASSUMES"
  (else the control cards); ISa is stored when the output has a single input data set (XSCALE
  prints ISa per input), otherwise the per-input values go to a note.
* XSCALE prints no low-resolution limit of the data: the upper bound of INCLUDE_RESOLUTION_RANGE
  (when given) is used, with a note.
* An aborted run (``!!! ERROR !!!``, for example CANNOT OPEN OR READ an input file) gives one
  result with status ``failed`` and the error text.
"""

from __future__ import annotations

import re
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters import _xds_common as xc
from mxcat.adapters._util import number, read_text
from mxcat.errors import ParseError

NAME = "xds_xscale_lp"
_SECTION = re.compile(r"STATISTICS OF SCALED OUTPUT DATA SET\s*:\s*(\S+)")


def control_cards(lines: list[str]) -> tuple[dict[str, str], list[tuple[str, list[str], dict[str, str]]]]:
    """Global cards, and (output file, its input files, its own cards) in the order given."""
    glob: dict[str, str] = {}
    outputs: list[tuple[str, list[str], dict[str, str]]] = []
    start = next((i for i, ln in enumerate(lines[:60]) if "CONTROL CARDS" in ln), None)
    if start is None:
        return glob, outputs
    for line in lines[start + 2 :]:
        if line.strip().startswith("*****") or line.strip().startswith("THE DATA COLLECTION STATISTICS"):
            break
        for k, v in xc.params(line).items():
            if k == "OUTPUT_FILE":
                outputs.append((v.split()[0] if v.split() else "", [], {}))
            elif k == "INPUT_FILE":
                name = v.split()[0].lstrip("*") if v.split() else ""
                if outputs:
                    outputs[-1][1].append(name)
            elif outputs:
                outputs[-1][2].setdefault(k, v)
                glob.setdefault(k, v)
            else:
                glob.setdefault(k, v)
    return glob, outputs


def isa_table(lines: list[str]) -> dict[str, float]:
    """ISa by input data set from the ``a b ISa ISa0 INPUT DATA SET`` table."""
    out: dict[str, float] = {}
    for i, line in enumerate(lines):
        if line.split()[:3] == ["a", "b", "ISa"]:
            for row in lines[i + 1 :]:
                toks = row.split()
                if len(toks) < 4:
                    break
                vals = [number(t) for t in toks[:4]]
                if any(v is None for v in vals[:3]):
                    break
                out[toks[-1].lstrip("*")] = vals[2]  # type: ignore[assignment]
    return out


class XdsXscaleLp:
    """XDS XSCALE.LP: merging statistics of every output data set."""

    name = NAME
    description = "XDS XSCALE.LP log: statistics by resolution shell for each output data set, space group, cell, ISa"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            return xc.starts_with_banner(head, "XSCALE")
        except Exception:  # noqa: BLE001 - detectors never raise
            return False

    def parse(self, path: Path) -> Parsed:
        lines = read_text(path, NAME).splitlines()
        version = xc.banner(lines, "XSCALE", NAME, path)
        parsed = Parsed(NAME, path, program="XDS XSCALE", version=version)
        notes = parsed.notes
        glob, outputs = control_cards(lines)
        failures = xc.errors(lines)
        sections = [(i, m.group(1)) for i, ln in enumerate(lines) if (m := _SECTION.search(ln))]
        if failures:
            r = Result(level="processing", label=outputs[0][0] if len(outputs) == 1 and outputs[0][0] else None)
            xc.add_failure(r, failures, notes)
            if sections:
                notes.append("XSCALE stopped with an error after printing statistics; only the error is stored")
            parsed.results.append(r)
            return xc.keep_valid(parsed)
        if not sections:
            raise ParseError("no 'STATISTICS OF SCALED OUTPUT DATA SET' section (file truncated?)", adapter=NAME, path=path, line=len(lines))
        if not xc.ended(lines):
            raise ParseError("no 'elapsed wall-clock time' line at the end (file truncated?)", adapter=NAME, path=path, line=len(lines))

        sg, cell = self._symmetry(lines, glob)
        isa = isa_table(lines)
        inputs = {out: ins for out, ins, _ in outputs}
        own = {out: cards for out, _, cards in outputs}
        seen: set[str] = set()
        for n, (at, out) in enumerate(sections):
            if out in seen:
                raise ParseError(f"a second statistics section for {out}", adapter=NAME, path=path, line=at + 1)
            seen.add(out)
            stop = sections[n + 1][0] if n + 1 < len(sections) else len(lines)
            tables = xc.find_tables(lines, at, stop)
            if not tables:
                raise ParseError(f"no statistics table for {out} (file truncated?)", adapter=NAME, path=path, line=at + 1)
            r = Result(level="processing", label=out)
            where = f"XSCALE {out}"
            xc.space_group_from_number(r, sg, notes, where)
            xc.add_cell(r, cell)
            ins = inputs.get(out, [])
            if len(ins) == 1 and ins[0] in isa:
                r.add("reflns.mmcat_ISa", isa[ins[0]])
            elif ins and any(i in isa for i in ins):
                notes.append(f"{where}: merges {len(ins)} input data sets; ISa by input: "
                             + ", ".join(f"{i} {isa[i]:g}" for i in ins if i in isa))
            friedel = xc.friedel(lines[at : at + 3], own.get(out, glob), NAME, path, at)
            table = xc.read_table(lines, tables[-1], NAME, path)
            inc = xc.numbers(own.get(out, {}).get("INCLUDE_RESOLUTION_RANGE") or glob.get("INCLUDE_RESOLUTION_RANGE"), 2)
            d_low = inc[0] if inc and inc[0] > 0 else None
            if d_low is not None:
                notes.append(f"{where}: low-resolution limit is the upper bound of INCLUDE_RESOLUTION_RANGE (XSCALE prints no data low limit)")
            xc.emit_statistics(r, table, friedel, d_low, notes, where)
            b = xc.wilson_b(lines[at:stop])
            if b is not None:
                r.add("reflns.B_iso_Wilson_estimate", b)
            r.add("mmcat_processing.status", "success")
            parsed.results.append(r)
        return xc.keep_valid(parsed)

    @staticmethod
    def _symmetry(lines: list[str], glob: dict[str, str]) -> tuple[float | None, list[float] | None]:
        sg = (xc.numbers(glob.get("SPACE_GROUP_NUMBER"), 1) or [None])[0]
        cell = xc.numbers(glob.get("UNIT_CELL_CONSTANTS"), 6)
        for i, line in enumerate(lines):
            if "THE DATA COLLECTION STATISTICS REPORTED BELOW ASSUMES" in line:
                for nxt in lines[i + 1 : i + 4]:
                    p = xc.params(nxt)
                    if "SPACE_GROUP_NUMBER" in p:
                        sg = (xc.numbers(p["SPACE_GROUP_NUMBER"], 1) or [sg])[0]
                    if "UNIT_CELL_CONSTANTS" in p:
                        cell = xc.numbers(p["UNIT_CELL_CONSTANTS"], 6) or cell
        return sg, cell


ADAPTER = XdsXscaleLp()
