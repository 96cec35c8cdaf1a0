"""Helpers shared by the XDS adapters (CORRECT, XSCALE, IDXREF, XDS_ASCII) and the CCP4 adapters of this group.

XDS (Kabsch, Acta Cryst. D66, 125-132, 2010; https://xds.mr.mpg.de) writes fixed-layout text: a
banner ``***** STEP ***** (VERSION ...)``, ``KEYWORD= value`` parameter lines, ``!!! ERROR !!!``
lines when a step aborts, and the statistics table "SUBSET OF INTENSITY DATA WITH SIGNAL/NOISE >=
-3.0 AS FUNCTION OF RESOLUTION" in CORRECT and XSCALE. This module reads those pieces, turns the
statistics table into mmCAT keys (the rules are in :func:`emit_statistics`), and drops values that
break their mmCAT definition (a damaged file) one by one with a note (:func:`keep_valid`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxcat.adapters import Result
from mxcat.adapters._util import keep_valid, number  # noqa: F401 - keep_valid is used as xc.keep_valid
from mxcat.errors import ParseError

# -- banner, parameters, errors --------------------------------------------------------------------

_BANNER = re.compile(r"^\s*\*{5}\s*(?P<step>[A-Z_]+)\s*\*{5}\s*\(VERSION\s+(?P<ver>[^)]*?)\s*\)", re.M)
_PARAM = re.compile(r"([A-Z][A-Z0-9_'/().\-]*)=")


def starts_with_banner(head: bytes, step: str) -> bool:
    """True when the first non-blank line of *head* is the ``***** STEP *****`` banner of an XDS step."""
    try:
        text = head.lstrip(b" \t\r\n")[:200].decode("ascii", errors="replace")
        return re.match(r"\*{5}\s*" + re.escape(step) + r"\s*\*{5}", text) is not None
    except Exception:  # noqa: BLE001 - detectors never raise (adapter protocol)
        return False


def banner(lines: list[str], step: str, adapter: str, path: Path) -> str:
    """The version text of the step's banner (``Jan 31, 2020 (BUILT=20200131)``), or ParseError."""
    for i, line in enumerate(lines[:20]):
        m = _BANNER.match(line)
        if m:
            if m.group("step") != step:
                raise ParseError(f"an XDS {m.group('step')} file, not {step}", adapter=adapter, path=path, line=i + 1)
            return version_text(m.group("ver"))
    raise ParseError(f"no '***** {step} *****' banner: not an XDS {step} file", adapter=adapter, path=path, line=1)


def version_text(ver: str) -> str:
    """``Jan 31, 2020  BUILT=20200131`` -> ``Jan 31, 2020 (BUILT=20200131)``."""
    ver = " ".join(ver.split())
    built = re.search(r"\s*BUILT=(\d+)", ver)
    if built:
        ver = f"{ver[: built.start()].strip()} (BUILT={built.group(1)})"
    return ver


def params(line: str) -> dict[str, str]:
    """``KEY= value`` pairs of one XDS parameter line (several may share a line, ``!`` prefixes are dropped)."""
    s = line.lstrip("! ")
    out: dict[str, str] = {}
    matches = list(_PARAM.finditer(s))
    for j, m in enumerate(matches):
        if j == 0 and s[: m.start()].strip():
            return {}
        end = matches[j + 1].start() if j + 1 < len(matches) else len(s)
        out[m.group(1)] = s[m.end() : end].strip()
    return out


def numbers(text: str | None, n: int | None = None) -> list[float] | None:
    """The leading numbers of a parameter value (``1 as used in...`` -> [1.0]); None when fewer than *n*."""
    if text is None:
        return None
    out: list[float] = []
    for tok in text.split():
        v = number(tok)
        if v is None:
            break
        out.append(v)
    if n is not None:
        if len(out) < n:
            return None
        out = out[:n]
    return out or None


def whole(v: float | None) -> int | float | None:
    """An integral float as int (image numbers, counts); other values unchanged (validation judges them)."""
    return int(v) if v is not None and float(v).is_integer() else v


@dataclass
class Failure:
    line: int
    message: str
    advice: str = ""


def errors(lines: list[str]) -> list[Failure]:
    """Every ``!!! ERROR !!!`` line of the file, with the advice lines that follow it (up to a blank line)."""
    out = []
    for i, line in enumerate(lines):
        k = line.find("!!! ERROR !!!")
        if k < 0:
            continue
        advice = []
        for nxt in lines[i + 1 : i + 30]:
            if not nxt.strip() or "!!!" in nxt or nxt.lstrip().startswith("*****"):
                break
            advice.append(nxt.strip())
        msg = " ".join(line[k + len("!!! ERROR !!!") :].split())
        out.append(Failure(i + 1, msg or "error (no text)", " ".join(advice)))
    return out


def add_failure(r: Result, failures: list[Failure], notes: list[str]) -> None:
    """Status ``failed``, the error line(s) as the message; XDS's advice after an error goes to a note."""
    r.add("mmcat_processing.status", "failed")
    r.add("mmcat_processing.message", " | ".join(f.message for f in failures))
    r.add("mmcat_processing.message_severity", "ERROR")
    for f in failures:
        if f.advice:
            notes.append(f"XDS after the error of line {f.line}: {f.advice}")


_FRIEDEL = re.compile(r"FRIEDEL'S_LAW=\s*(TRUE|FALSE)\b")


def friedel(section: list[str], inp: dict[str, str], adapter: str, path: Path, at: int) -> bool:
    """FRIEDEL'S_LAW of a data set: from its ``FILE TYPE:`` line, else from the input parameters."""
    for line in section:
        m = _FRIEDEL.search(line)
        if m:
            return m.group(1) == "TRUE"
    word = inp.get("FRIEDEL'S_LAW", "").split()[:1]
    if word in (["TRUE"], ["FALSE"]):
        return word == ["TRUE"]
    raise ParseError("FRIEDEL'S_LAW (TRUE or FALSE) is not stated for the data set", adapter=adapter, path=path, line=at + 1)


_WILSON = re.compile(r"WILSON LINE \(using all data\)\s*:.*\bB=\s*(\S+)")


def wilson_b(lines: list[str]) -> float | None:
    """B of XDS's straight-line Wilson fit ``WILSON LINE (using all data) : A= ... B= ...``."""
    for line in lines:
        m = _WILSON.search(line)
        if m:
            return number(m.group(1))
    return None


def ended(lines: list[str]) -> bool:
    """XDS steps end a completed run with the elapsed wall-clock time."""
    return any("elapsed wall-clock time" in ln for ln in lines[-40:])


def dataset_hint(template: str | None) -> str | None:
    """``../../tryp1_2_????.cbf CBF`` -> ``tryp1_2``: the image prefix, a dataset name for the catalogue."""
    if not template:
        return None
    name = template.split()[0].replace("\\", "/").rsplit("/", 1)[-1]
    k = name.find("?")
    if k <= 0:
        return None
    prefix = name[:k].rstrip("_.-")
    return prefix if re.fullmatch(r"[A-Za-z0-9][\w.+-]*", prefix) else None


# -- crystal --------------------------------------------------------------------------------------


def space_group_from_number(r: Result, n: float | None, notes: list[str], where: str) -> None:
    """Space group number and its Hermann-Mauguin symbol (reference setting, from gemmi)."""
    if n is None:
        return
    if not float(n).is_integer() or not 1 <= n <= 230:
        notes.append(f"{where}: space group number {n:g} is not 1-230; left out")
        return
    r.add("symmetry.Int_Tables_number", int(n))
    try:
        import gemmi

        sg = gemmi.find_spacegroup_by_number(int(n))
    except Exception:  # noqa: BLE001 - gemmi is a convenience here; the number is stored anyway
        sg = None
    if sg is not None:
        r.add("symmetry.space_group_name_H-M", sg.hm)


def space_group_from_name(r: Result, name: str | None, notes: list[str], where: str) -> None:
    """Space group symbol as printed and its number (from gemmi) when the symbol is known."""
    if not name:
        return
    name = " ".join(name.split())
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9 ()/:\-]*", name):
        notes.append(f"{where}: space group {name!r} is not a space-group symbol; left out")
        return
    r.add("symmetry.space_group_name_H-M", name)
    try:
        import gemmi

        sg = gemmi.find_spacegroup_by_name(name)
    except Exception:  # noqa: BLE001
        sg = None
    if sg is None:
        notes.append(f"{where}: space group {name!r} is not known to gemmi; no number stored")
    else:
        r.add("symmetry.Int_Tables_number", sg.number)


CELL_KEYS = ("cell.length_a", "cell.length_b", "cell.length_c", "cell.angle_alpha", "cell.angle_beta", "cell.angle_gamma")


def add_cell(r: Result, cell: list[float] | None) -> None:
    if cell and len(cell) == 6:
        for k, v in zip(CELL_KEYS, cell, strict=True):
            r.add(k, v)


# -- geometry ---------------------------------------------------------------------------------------

_GEOMETRY = {
    "CRYSTAL MOSAICITY (DEGREES)": "mosaicity",
    "DIRECT BEAM COORDINATES (REC. ANGSTROEM)": "s0",
    "DETECTOR COORDINATES (PIXELS) OF DIRECT BEAM": "beam_px",
    "DETECTOR ORIGIN (PIXELS) AT": "origin_px",
    "CRYSTAL TO DETECTOR DISTANCE (mm)": "distance",
    "LAB COORDINATES OF ROTATION AXIS": "axis",
    "UNIT CELL PARAMETERS": "cell",
    "SPACE GROUP NUMBER": "sg",
}


def geometry_block(lines: list[str], start: int, stop: int | None = None) -> dict[str, list[float]]:
    """The refined parameters XDS prints after ``REFINED PARAMETERS:`` (from line index *start*)."""
    out: dict[str, list[float]] = {}
    for line in lines[start : stop if stop is not None else start + 40]:
        s = line.strip()
        for label, key in _GEOMETRY.items():
            if s.startswith(label) and key not in out:
                vals = numbers(s[len(label) :])
                if vals:
                    out[key] = vals
    return out


def add_geometry(r: Result, g: dict[str, list[float]], qx: float | None, qy: float | None, notes: list[str], where: str) -> None:
    """Refined mosaicity, distance, direct-beam position (mm = pixels x pixel size), rotation axis, beam."""
    if g.get("mosaicity"):
        r.add("exptl_crystal.pdbx_mosaicity", g["mosaicity"][0])
    if g.get("distance"):
        r.add("mmcat_integration.refined_detector_distance", abs(g["distance"][0]))
    bx = g.get("beam_px")
    if bx and len(bx) >= 2:
        if qx and qy:
            r.add("mmcat_integration.refined_beam_centre_x", round(bx[0] * qx, 4))
            r.add("mmcat_integration.refined_beam_centre_y", round(bx[1] * qy, 4))
        else:
            notes.append(f"{where}: direct beam at pixel {bx[0]:g}, {bx[1]:g} but no pixel size; beam centre left out")
    axis = g.get("axis")
    if axis and len(axis) >= 3:
        for c, v in zip("xyz", axis[:3], strict=True):
            r.add(f"mmcat_integration.rotation_axis_{c}", v)
    s0 = g.get("s0")
    if s0 and len(s0) >= 3:
        norm = math.sqrt(sum(v * v for v in s0[:3]))
        if norm > 0:
            for c, v in zip("xyz", s0[:3], strict=True):
                r.add(f"mmcat_integration.beam_vector_{c}", round(v / norm, 6))


# -- the statistics table -------------------------------------------------------------------------

TABLE_TITLE = "SUBSET OF INTENSITY DATA WITH SIGNAL/NOISE >= -3.0 AS FUNCTION OF RESOLUTION"
_FIXED = ("limit", "observed", "unique", "possible", "completeness", "r_obs", "r_exp", "compared", "i_sigma", "r_meas")
_EXTRA = {"CC(1/2)": "cc_half", "Rmrgd-F": "rmrgd_f", "Anomal": "anomal", "SigAno": "sigano", "Nano": "nano"}


@dataclass
class Row:
    values: dict[str, float | None]
    line: int


@dataclass
class StatsTable:
    shells: list[Row] = field(default_factory=list)
    total: Row | None = None
    line: int = 0
    columns: tuple[str, ...] = ()


def _cell(tok: str) -> float | None:
    """A table number: ``99.7%``, ``99.9*`` and ``13*`` are numbers; junk raises ValueError."""
    t = tok.rstrip("*").rstrip("%")
    v = number(t)
    if v is None:
        raise ValueError(tok)
    return v


def find_tables(lines: list[str], start: int = 0, stop: int | None = None) -> list[int]:
    stop = len(lines) if stop is None else stop
    return [i for i in range(start, stop) if lines[i].strip() == TABLE_TITLE]


def read_table(lines: list[str], at: int, adapter: str, path: Path) -> StatsTable:
    """Parse the statistics table whose title is line index *at*; ParseError when malformed or cut."""

    def bad(reason: str, i: int) -> ParseError:
        return ParseError(reason, adapter=adapter, path=path, line=i + 1)

    i = at + 1
    if i >= len(lines) or not lines[i].strip().startswith("RESOLUTION"):
        raise bad("statistics table without its column header", min(i, len(lines) - 1))
    head = lines[i].split()
    try:
        k = head.index("R-meas")
    except ValueError:
        raise bad("statistics table header without an R-meas column", i) from None
    extra = []
    for tok in head[k + 1 :]:
        if tok not in _EXTRA:
            raise bad(f"unknown column {tok!r} in the statistics table header", i)
        extra.append(_EXTRA[tok])
    columns = _FIXED + tuple(extra)
    table = StatsTable(line=at + 1, columns=columns)
    header_end = i + 5
    i += 1
    while i < min(len(lines), header_end) and not _is_row(lines[i]):
        i += 1  # the second header line (LIMIT OBSERVED ...) and blank lines
    while i < len(lines):
        toks = lines[i].split()
        if not toks:
            break
        if len(toks) != len(columns):
            raise bad(f"statistics row has {len(toks)} fields, the header names {len(columns)}", i)
        try:
            vals: dict[str, float | None] = {c: (None if (c == "limit" and t == "total") else _cell(t)) for c, t in zip(columns, toks, strict=True)}
        except ValueError as err:
            raise bad(f"not a number in the statistics table: {err}", i) from None
        row = Row(vals, i + 1)
        if toks[0] == "total":
            table.total = row
            break
        table.shells.append(row)
        i += 1
    if table.total is None:
        raise bad("statistics table ends before its 'total' row (file truncated?)", min(i, len(lines) - 1))
    if not table.shells:
        raise bad("statistics table has no resolution shells", table.total.line - 1)
    limits = [r.values["limit"] for r in table.shells]
    for a, b, row in zip(limits, limits[1:], table.shells[1:], strict=False):
        if a is None or b is None or not b < a:
            raise bad("resolution limits of the statistics table do not decrease", row.line - 1)
    return table


def _is_row(line: str) -> bool:
    toks = line.split()
    return bool(toks) and (toks[0] == "total" or number(toks[0]) is not None)


# -- from table to mmCAT -----------------------------------------------------------------------------


def _shell_values(v: dict[str, float | None], friedel: bool) -> dict[str, Any]:
    """mmCAT reflns_shell items (with units where XDS prints percent) of one table row.

    XDS prints -99.9% (R factors) and -99.00 (I/sigma) when a value cannot be computed; with no
    compared reflections R factors, I/sigma and CC(1/2) are not computed; with Nano = 0 neither are
    the anomalous correlation and SigAno.
    """
    out: dict[str, Any] = {}

    def pct(x: float | None) -> dict[str, Any] | None:
        return None if x is None else {"value": x, "unit": "percent"}

    compared = v.get("compared") or 0
    nano = v.get("nano")
    obs, uniq = v.get("observed"), v.get("unique")
    if obs is not None:
        out["number_measured_all"] = whole(obs)
    if friedel:
        out["percent_possible_obs"] = v.get("completeness")
        if uniq is not None:
            out["number_unique_obs"] = whole(uniq)
        if obs and uniq:
            out["pdbx_redundancy"] = round(obs / uniq, 3)
    else:
        out["pdbx_percent_possible_anomalous"] = v.get("completeness")
        if obs and uniq:
            out["pdbx_redundancy_anomalous"] = round(obs / uniq, 3)
    if compared > 0:
        r_obs, r_meas = v.get("r_obs"), v.get("r_meas")
        if r_obs is not None and r_obs >= 0:
            out["Rmerge_I_obs"] = pct(r_obs)
        if r_meas is not None and r_meas >= 0:
            out["pdbx_Rrim_I_all" if friedel else "mmcat_Rmeas_within_IplusIminus"] = pct(r_meas)
        isig = v.get("i_sigma")
        if isig is not None and isig != -99.0:
            out["pdbx_netI_over_sigmaI_obs"] = isig
        if v.get("cc_half") is not None:
            out["pdbx_CC_half"] = pct(v["cc_half"])
    if nano is not None and nano > 0:
        if v.get("anomal") is not None:
            out["pdbx_CC_half_anomalous"] = pct(v["anomal"])
        if v.get("sigano") is not None:
            out["pdbx_absDiff_over_sigma_anomalous"] = v["sigano"]
    return {k: x for k, x in out.items() if x is not None}


_OVERALL = {
    "number_measured_all": "pdbx_number_measured_all",
    "number_unique_obs": "number_obs",
    "Rmerge_I_obs": "pdbx_Rmerge_I_obs",
    "pdbx_netI_over_sigmaI_obs": "pdbx_netI_over_sigmaI",
}
"""reflns_shell item -> reflns item where the names differ."""


def emit_statistics(r: Result, table: StatsTable, friedel: bool, d_low: float | None, notes: list[str], where: str) -> None:
    """Overall (the total row), inner (first row) and outer (last row) values and the full shell table.

    Rules: XDS R factors, completeness, CC(1/2) and Anomal Corr are percentages (sent with unit
    ``percent``); multiplicity is OBSERVED/UNIQUE; a shell's low limit is the previous shell's high
    limit, the first shell's is *d_low* (the data's low limit). With FRIEDEL'S_LAW=FALSE XDS counts
    I(+) and I(-) as different reflections: completeness and multiplicity then become the anomalous
    items, R-meas the within-I+/I- item, the unique count (Friedel mates counted twice) is left out,
    and Rmerge, I/sigma and CC(1/2) keep their items (their mmCAT definitions do not fix how Friedel
    mates are treated); a note says so.
    """
    shells = table.shells
    rows: list[dict[str, Any]] = []
    for n, row in enumerate(shells):
        vals = _shell_values(row.values, friedel)
        vals["d_res_high"] = row.values["limit"]
        low = shells[n - 1].values["limit"] if n else d_low
        if low is not None:
            vals["d_res_low"] = low
        vals["mmcat_shell_class"] = "inner" if n == 0 else "outer" if n == len(shells) - 1 else "intermediate"
        vals["pdbx_ordinal"] = n + 1
        rows.append(vals)
    if len(shells) == 1:
        rows[0]["mmcat_shell_class"] = "outer"
        notes.append(f"{where}: the statistics table has one shell; it is stored as the outer shell")
    total = _shell_values(table.total.values, friedel)
    total["d_res_high"] = shells[-1].values["limit"]
    if d_low is not None:
        total["d_res_low"] = d_low
    for item, value in total.items():
        key = {"d_res_high": "d_resolution_high", "d_res_low": "d_resolution_low"}.get(item, _OVERALL.get(item, item))
        _add(r, f"reflns.{key}", value)
    for sel, row in (("inner", rows[0]), ("outer", rows[-1])) if len(rows) > 1 else (("outer", rows[0]),):
        for item, value in row.items():
            if item not in ("mmcat_shell_class", "pdbx_ordinal"):
                _add(r, f"reflns_shell.{sel}.{item}", value)
    r.table("reflns_shell", rows)
    r.add("mmcat_processing.shell_class_source", "XDS statistics table: first row inner, last row outer, total row overall")
    r.add("mmcat_processing.anomalous", "no" if friedel else "yes")
    if not friedel:
        notes.append(f"{where}: FRIEDEL'S_LAW=FALSE: XDS counts I(+) and I(-) separately, so completeness and "
                     "multiplicity are stored as anomalous completeness and multiplicity, R-meas as Rmeas within "
                     "I+/I-, the unique-reflection counts are left out, and Rmerge, I/sigma and CC(1/2) are "
                     "XDS's values with I(+) and I(-) apart")
    notes.append(f"{where}: multiplicity is OBSERVED/UNIQUE of the XDS table (XDS prints no multiplicity)")


def _add(r: Result, key: str, value: Any) -> None:
    if isinstance(value, dict):
        r.add(key, value["value"], value["unit"])
    else:
        r.add(key, value)
