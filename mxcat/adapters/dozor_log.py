"""dozor log: the per-image table of dozor (A. Popov and G. Bourenkov, ESRF/EMBL; Zander et al. 2015, Acta Cryst. D71, 2328).

dozor, run by EDNA/MXCuBE at the ESRF and EMBL beamlines, prints a banner (``Program dozor``,
``Version x.y.z // date``) and then one row per image between dashed rules, the columns grouped by
``|``: the image number; spot statistics (number of spots, their mean intensity, in 2.x an
R-factor, and the resolution of the spots); a powder-pattern Wilson fit (scale, B factor,
resolution, correlation, R-factor; ``no results`` when the fit failed); and the scores. The column
sets changed across versions, so the layout is read from the two header lines, not assumed:

* dozor 1.3.x: ``num.of INTaver Res.`` | Wilson | ``Score`` (1.3.1) or ``Main Score``, ``Spot
  Score``, ``Visible Resolution`` (1.3.8);
* dozor 2.x: ``num.of INTaver R-factor Res.`` | Wilson | ``Main Score``, ``Spot Score``, ``Visible
  Resolution``.

Rows go to the ``mmcat_live_image`` table (dataset level): image_number, dozor_spots, dozor_score
(the main score), dozor_resolution (the visible resolution), peak_resolution (the resolution of the
spots) and wilson_b. Where dozor found no spot it prints 50 Å as a placeholder resolution; those
cells are left empty. A table without its closing rule is a truncated file (ParseError).
"""

from __future__ import annotations

import re
from pathlib import Path

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import fail, number, read_lines

NAME = "dozor_log"

_ROW = re.compile(r"^\s*(\d+)\s*\|")
_RULE = re.compile(r"^\s*-{20,}\s*$")
_VERSION = re.compile(r"^\s*Version\s+(\S+)")

# (group, column name) -> (mmcat_live_image column, integer?)
_COLUMNS = {
    ("spots", "num.of"): ("dozor_spots", True),
    ("spots", "Res."): ("peak_resolution", False),
    ("wilson", "B-fac."): ("wilson_b", False),
    ("scores", "Score"): ("dozor_score", False),
    ("scores", "Main Score"): ("dozor_score", False),
    ("scores", "Visible Resolution"): ("dozor_resolution", False),
}
_GROUPS = ("spots", "wilson", "scores")


def _layout(top: str, names: str) -> dict[str, list[str]] | None:
    """Column names per group from the two header lines, or None when they are not a dozor header."""
    t, b = top.split("|"), names.split("|")
    if len(b) < 4 or not b[0].strip().startswith("image"):
        return None
    t += [""] * (len(b) - len(t))
    out = {"spots": b[1].split(), "wilson": b[2].split()}
    upper, lower = t[3].split(), b[3].split()
    if upper and len(upper) == len(lower):
        out["scores"] = [f"{u} {w}" for u, w in zip(upper, lower, strict=True)]
    elif not upper:
        out["scores"] = lower
    else:
        return None
    if "num.of" not in out["spots"] or not ({"Score", "Main Score"} & set(out["scores"])):
        return None
    return out


class DozorLog:
    name = NAME
    description = "dozor log: per-image spots, scores, resolution and Wilson B (both column layouts)"

    def detect(self, head: bytes, name: str) -> bool:
        try:
            return b"Program dozor" in head or (b"num.of" in head and b"Powder Wilson" in head)
        except Exception:  # noqa: BLE001 - a detector never raises
            return False

    def parse(self, path: Path) -> Parsed:
        text, lines = read_lines(path, NAME)
        version = None
        layout = None
        start = 0
        for n, line in enumerate(lines, 1):
            if version is None and (m := _VERSION.match(line)):
                version = m.group(1)
            if n < len(lines) and line.lstrip().startswith("N") and "|" in line:
                layout = _layout(line, lines[n])
                if layout is not None:
                    start = n + 1
                    break
        if layout is None:
            fail(NAME, path, "no dozor table header ('N | SPOTS | Powder Wilson | ...' over 'image | num.of ...')", None)
        if start >= len(lines) or not _RULE.match(lines[start]):
            fail(NAME, path, "the table header is not followed by a dashed rule", start + 1)
        rows: list[dict[str, float | int | None]] = []
        seen: set[int] = set()
        closed = False
        for n in range(start + 2, len(lines) + 1):
            line = lines[n - 1]
            if _RULE.match(line):
                closed = True
                break
            if not line.strip():
                continue
            if not _ROW.match(line):
                fail(NAME, path, f"expected a table row, found {line.strip()[:40]!r}", n)
            rows.append(self._row(line, layout, path, n))
            image = int(rows[-1]["image_number"])
            if image in seen:
                fail(NAME, path, f"image {image} appears twice", n)
            seen.add(image)
        if not closed:
            fail(NAME, path, "the table has no closing rule: truncated", len(lines))
        r = Result(level="dataset")
        r.table("mmcat_live_image", rows)
        r.add("mmcat_live_summary.n_frames", len(rows))
        r.add("mmcat_live_summary.engine", f"dozor {version}" if version else "dozor")
        notes = [f"column layout: {' | '.join(' '.join(layout[g]) for g in _GROUPS)}"]
        if any(row.get("dozor_spots") == 0 for row in rows):
            notes.append("resolutions of images without spots (dozor prints 50 A) are left empty")
        return Parsed(adapter=NAME, path=path, program="dozor", version=version, results=[r], notes=notes)

    def _row(self, line: str, layout: dict[str, list[str]], path: Path, n: int) -> dict[str, float | int | None]:
        parts = line.split("|")
        if len(parts) != 4:
            fail(NAME, path, f"a row has {len(parts) - 1} column separators; expected 3", n)
        image = int(parts[0])
        row: dict[str, float | int | None] = {"image_number": image}
        for group, text in zip(_GROUPS, parts[1:], strict=True):
            if group == "wilson" and "no results" in text:
                continue
            tokens = text.split()
            if len(tokens) != len(layout[group]):
                fail(NAME, path, f"{len(tokens)} values in the {group} columns; the header names {len(layout[group])}", n)
            for name, token in zip(layout[group], tokens, strict=True):
                v = number(token)
                if v is None:
                    fail(NAME, path, f"{name} {token!r} is not a number", n)
                target = _COLUMNS.get((group, name))
                if target is None:
                    continue
                column, integer = target
                if integer:
                    if not v.is_integer() or v < 0:
                        fail(NAME, path, f"{name} {token!r} is not a count", n)
                    row[column] = int(v)
                elif column in ("dozor_resolution", "peak_resolution"):
                    if v <= 0:
                        fail(NAME, path, f"{name} {token!r} is not a resolution", n)
                    row[column] = v
                elif column == "dozor_score":
                    if v < 0:
                        fail(NAME, path, f"{name} {token!r} is negative", n)
                    row[column] = v
                else:
                    row[column] = v
        if row.get("dozor_spots") == 0:
            row["dozor_resolution"] = row["peak_resolution"] = None
        return row


ADAPTER = DozorLog()
