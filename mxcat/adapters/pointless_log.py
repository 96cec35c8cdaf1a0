"""CCP4 POINTLESS log: the standard output of POINTLESS (P.R. Evans, MRC LMB), the symmetry determination program.

POINTLESS (CCP4 program documentation "pointless"; Evans, Acta Cryst. D62, 72-82, 2006 and D67,
282-292, 2011) scores Laue groups and systematic absences of unmerged data and chooses a space
group. Its log starts with the CCP4 banner ``### CCP4 <version>: POINTLESS version <x.y.z>`` (read
here as written by 1.9.x in CCP4 6.5; later versions keep the summary layout) and ends the analysis
with a ``Best Solution:`` block (space group or point group, reindex operator, probabilities,
confidences, unit cell).

* The chosen space group goes to ``symmetry.space_group_name_H-M`` with its number (from gemmi,
  else the number POINTLESS prints); the cell of the Best Solution block to ``cell.*`` as printed
  (a note flags a cell that breaks the symmetry of the chosen group).
* Probabilities, confidences, the reindex operator, the scored Laue groups and the alternative
  space groups have no mmCAT items and go to notes.
* A best solution that is only a point group (no systematic-absence analysis) stores no space
  group; a log with a fatal error gives status ``failed`` with the error text.
"""

from __future__ import annotations

import re
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters import _xds_common as xc
from mxcat.adapters._util import number, read_text
from mxcat.errors import ParseError

NAME = "pointless_log"
_BANNER = re.compile(r"###\s*CCP4\s+([^:\n]*?)\s*:\s*POINTLESS\s+version\s+(\S+)")
_BEST = re.compile(r"^\s*Best Solution:\s+(space|point)\s+group\s+(.+?)\s*$")
_FIELD = re.compile(r"^\s*(Reindex operator|Laue group probability|Systematic absence probability|Total probability|"
                    r"Space group confidence|Laue group confidence)\s*:?\s+(\S.*?)\s*$")
_SG_ROW = re.compile(r"^\s*([A-Z] [\d /\-a-z]+?)\s*\(\s*(\d+)\)\s+([\d.]+)\s+([\d.]+)\s*(\[[^\]]*\])?\s*(.*?)\s*$")
_LAUE_ROW = re.compile(r"^\s*([=\->])?\s*(\d+)\s+([A-Z] [\d /\-a-z]+?)\s+(\*{0,3})\s*(\d+\.\d+)\s+")
_FATAL = re.compile(r"(FATAL ERROR|Fatal error|\*\*\*\* Error)", re.I)


class PointlessLog:
    """CCP4 POINTLESS log: chosen space group, its probability and the alternatives."""

    name = NAME
    description = "CCP4 POINTLESS log: chosen space group, confidence, alternatives, unit cell"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            return _BANNER.search(head[:4096].decode("latin-1")) is not None
        except Exception:  # noqa: BLE001 - detectors never raise
            return False

    def parse(self, path: Path) -> Parsed:
        lines = read_text(path, NAME).splitlines()
        m = next((mm for ln in lines[:40] if (mm := _BANNER.search(ln))), None)
        if m is None:
            raise ParseError("no CCP4 POINTLESS banner: not a POINTLESS log", adapter=NAME, path=path, line=1)
        parsed = Parsed(NAME, path, program="POINTLESS", version=m.group(2))
        notes = parsed.notes
        notes.append(f"CCP4 {m.group(1)}")
        for ln in lines:
            if ln.startswith("!NAME_TEMPLATE_OF_DATA_FRAMES="):
                hint = xc.dataset_hint(ln.split("=", 1)[1])
                if hint:
                    parsed.hints["dataset"] = hint
                break
        r = Result(level="processing")
        best = next((i for i in range(len(lines) - 1, -1, -1) if _BEST.match(lines[i])), None)
        fatal = [(i, ln.strip()) for i, ln in enumerate(lines) if _FATAL.search(ln)]
        if best is None:
            if fatal:
                i, text = fatal[0]
                nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
                r.add("mmcat_processing.status", "failed")
                r.add("mmcat_processing.message", f"{text} {nxt}".strip())
                r.add("mmcat_processing.message_severity", "ERROR")
                parsed.results.append(r)
                return xc.keep_valid(parsed)
            raise ParseError("no 'Best Solution:' block (file truncated or POINTLESS did not finish)",
                             adapter=NAME, path=path, line=len(lines))
        self._best(r, lines, best, _BEST.match(lines[best]), path, notes)  # type: ignore[arg-type]
        self._alternatives(lines, r)
        r.add("mmcat_processing.status", "success")
        parsed.results.append(r)
        return xc.keep_valid(parsed)

    def _best(self, r: Result, lines: list[str], at: int, bm: re.Match[str], path: Path, notes: list[str]) -> None:
        kind, group = bm.group(1), " ".join(bm.group(2).split())
        fields: dict[str, str] = {}
        cell: list[float] | None = None
        end = None
        for j in range(at + 1, min(at + 40, len(lines))):
            s = lines[j]
            if "SUMMARY_END" in s or s.startswith("HKLIN spacegroup"):
                end = j
                break
            fm = _FIELD.match(s)
            if fm:
                fields[fm.group(1)] = fm.group(2)
            if s.strip().startswith("Unit cell:"):
                cell = xc.numbers(s.split(":", 1)[1], 6)
                if cell is None:
                    raise ParseError("Best Solution unit cell is not six numbers", adapter=NAME, path=path, line=j + 1)
        if end is None or cell is None:
            raise ParseError("the Best Solution block is incomplete (file truncated?)", adapter=NAME, path=path, line=at + 1)
        if kind == "space":
            xc.space_group_from_name(r, group, notes, "POINTLESS")
            if not any(o.key == "symmetry.Int_Tables_number" for o in r.values):
                num = self._printed_number(lines, group)
                if num is not None:
                    r.add("symmetry.Int_Tables_number", num)
        else:
            notes.append(f"POINTLESS chose point group {group} only (no space group): none stored")
        xc.add_cell(r, cell)
        self._check_cell(group if kind == "space" else None, cell, notes)
        for label, key in (("Space group confidence", "mmcat_processing.space_group_confidence"),
                           ("Laue group confidence", "mmcat_processing.laue_group_confidence")):
            if label in fields:
                r.add(key, number(fields[label]))
        if fields.get("Reindex operator"):
            r.add("mmcat_processing.reindex_operator", fields["Reindex operator"].strip())
        if fields:
            notes.append("POINTLESS best solution: " + "; ".join(f"{k.lower()} {v}" for k, v in fields.items()))

    @staticmethod
    def _printed_number(lines: list[str], group: str) -> int | None:
        for ln in lines:
            m = re.search(r"Space group = '([^']+)' \(number\s+(\d+)\)", ln)
            if m and " ".join(m.group(1).split()) == group:
                return int(m.group(2))
        return None

    @staticmethod
    def _check_cell(group: str | None, cell: list[float], notes: list[str]) -> None:
        if group is None:
            return
        try:
            import gemmi

            sg = gemmi.find_spacegroup_by_name(group)
            ok = sg is None or gemmi.UnitCell(*cell).is_compatible_with_spacegroup(sg, 1e-3)
        except Exception:  # noqa: BLE001 - an impossible cell is judged by validation, not here
            return
        if not ok:
            notes.append(f"the Best Solution cell {' '.join(f'{v:g}' for v in cell)} breaks the symmetry of {group}; stored as printed")

    @staticmethod
    def _alternatives(lines: list[str], r: Result) -> None:
        """The scored Laue groups and the possible space groups, as one mmcat_space_group_candidate table."""
        rows: list[dict[str, object]] = []
        i = next((k for k, ln in enumerate(lines) if ln.strip().startswith("Laue Group") and "Lklhd" in ln), None)
        if i is not None:
            for ln in lines[i + 1 : i + 60]:
                if "SUMMARY_END" in ln:
                    break
                m = _LAUE_ROW.match(ln)
                if m:
                    reindex = re.search(r"(\[[^\]]*\])\s*$", ln)
                    rows.append({"kind": "laue_group", "rank": int(m.group(2)), "name_H-M": " ".join(m.group(3).split()),
                                 "probability": float(m.group(5)), "reindex_operator": reindex.group(1) if reindex else None,
                                 "accepted": "yes" if m.group(1) in (">", "=") else "no"})
        j = next((k for k, ln in enumerate(lines) if ln.strip().startswith("Spacegroup") and "TotProb" in ln), None)
        if j is not None:
            rank = 0
            for ln in lines[j + 1 : j + 60]:
                if ln.strip().startswith("---") or "confidence" in ln:
                    break
                m = _SG_ROW.match(ln)
                if m:
                    rank += 1
                    rows.append({"kind": "space_group", "rank": rank, "name_H-M": " ".join(m.group(1).split()), "IT_number": int(m.group(2)),
                                 "probability": float(m.group(3)), "systematic_absence_probability": float(m.group(4)),
                                 "reindex_operator": m.group(5), "accepted": "yes" if rank == 1 else "no"})
        r.table("mmcat_space_group_candidate", [{k: v for k, v in row.items() if v is not None} for row in rows])

ADAPTER = PointlessLog()
