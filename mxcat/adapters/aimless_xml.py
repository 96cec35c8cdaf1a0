"""CCP4 AIMLESS XMLOUT: the XML summary that AIMLESS (P.R. Evans, MRC LMB) writes next to its log.

AIMLESS scales and merges unmerged intensities (CCP4 program documentation "aimless"; Evans &
Murshudov, Acta Cryst. D69, 1204-1214, 2013). With ``XMLOUT`` it writes a document with root
``<AIMLESS version="...">`` (often without an XML declaration; read here as written by version
0.7.x, whose layout later 0.7/0.8 versions keep): ``ReflectionData`` (datasets, wavelengths),
``ReflectionFile`` (cell, space group), one ``Result/Dataset`` per dataset with the summary table
(``Overall``/``Inner``/``Outer`` of each statistic) and ``CCP4Table`` graphs, among them the
per-shell tables "Analysis against resolution", "... with & without anomalous (Ov)", "Correlations
CC(1/2) within dataset" and "Completeness & multiplicity v. resolution".

Rules:

* ``Rmerge``/``Rmeas``/``Rpim`` are AIMLESS's "within I+/I-" values, ``RmergeOverall`` etc. the
  "all I+ and I-" ones: Rmeas and Rpim map to the mmCAT items of the same meaning, Rmerge "all I+
  and I-" to ``pdbx_Rmerge_I_obs`` (mmCAT has no within-I+/I- Rmerge: that one goes to a note).
* The shell table lists bin mid-points (1/d^2) only; AIMLESS bins are equal in 1/d^2, so the edges
  are fitted to the mid-points (``mid_k = a + (k - 1/2) w``, edges ``a + k w``) and given to 0.01 A;
  the first shell starts at the overall low limit and the last ends at the overall high limit. If
  the mid-points are not evenly spaced, edges half-way between mid-points are used (with a note).
* One result per dataset (labelled with the dataset name when there are several).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from mxcat.adapters import Parsed, Result
from mxcat.adapters import _xds_common as xc
from mxcat.adapters._util import number, read_bytes
from mxcat.errors import ParseError

NAME = "aimless_xml"

SUMMARY: dict[str, tuple[str | None, str | None, bool]] = {
    # Result/Dataset element: (item of _reflns, item of _reflns_shell, integer)
    "ResolutionLow": ("d_resolution_low", "d_res_low", False),
    "ResolutionHigh": ("d_resolution_high", "d_res_high", False),
    "RmergeOverall": ("pdbx_Rmerge_I_obs", "Rmerge_I_obs", False),
    "RmeasOverall": ("pdbx_Rrim_I_all", "pdbx_Rrim_I_all", False),
    "Rmeas": ("mmcat_Rmeas_within_IplusIminus", "mmcat_Rmeas_within_IplusIminus", False),
    "RpimOverall": ("pdbx_Rpim_I_all", "pdbx_Rpim_I_all", False),
    "Rpim": ("mmcat_Rpim_within_IplusIminus", "mmcat_Rpim_within_IplusIminus", False),
    "NumberObservations": ("pdbx_number_measured_all", "number_measured_all", True),
    "NumberReflections": ("number_obs", "number_unique_obs", True),
    "MeanIoverSD": ("pdbx_netI_over_sigmaI", "pdbx_netI_over_sigmaI_obs", False),
    "CChalf": ("pdbx_CC_half", "pdbx_CC_half", False),
    "Completeness": ("percent_possible_obs", "percent_possible_obs", False),
    "Multiplicity": ("pdbx_redundancy", "pdbx_redundancy", False),
    "MeanChiSq": ("pdbx_chi_squared", None, False),
    "AnomalousCompleteness": ("pdbx_percent_possible_anomalous", "pdbx_percent_possible_anomalous", False),
    "AnomalousMultiplicity": ("pdbx_redundancy_anomalous", "pdbx_redundancy_anomalous", False),
    "AnomalousCChalf": ("pdbx_CC_half_anomalous", "pdbx_CC_half_anomalous", False),
}
"""Summary statistics and the mmCAT items they fill."""

NO_ITEM = {"Rmerge": "Rmerge within I+/I-", "RmergeTopI": "Rmerge in the top intensity bin",
           "AnomalousNPslope": "mid-slope of the anomalous normal probability plot"}

SHELL_TABLES: dict[str, dict[str, str]] = {
    # title (before ", <dataset>") -> {column: item of _reflns_shell}
    "Analysis against resolution": {"Mn(I/sd)": "pdbx_netI_over_sigmaI_obs"},
    "Analysis against resolution, with & without anomalous (Ov)": {
        "RmrgOv": "Rmerge_I_obs", "RmeasOv": "pdbx_Rrim_I_all", "Rmeas": "mmcat_Rmeas_within_IplusIminus",
        "RpimOv": "pdbx_Rpim_I_all", "Rpim": "mmcat_Rpim_within_IplusIminus"},
    "Correlations CC(1/2) within dataset": {"CC1/2": "pdbx_CC_half", "CCanom": "pdbx_CC_half_anomalous"},
    "Completeness & multiplicity v. resolution": {
        "Nmeas": "number_measured_all", "Nref": "number_unique_obs", "%poss": "percent_possible_obs",
        "Mlplct": "pdbx_redundancy", "AnoCmp": "pdbx_percent_possible_anomalous", "AnoMlt": "pdbx_redundancy_anomalous"},
}
INTEGER_ITEMS = {"number_measured_all", "number_unique_obs"}
CELL = ("a", "b", "c", "alpha", "beta", "gamma")


def _num(text: str | None, what: str, path: Path) -> float | None:
    """A number; None for absent, ``-``, ``?`` or ``nan``; ParseError for anything else."""
    if text is None:
        return None
    t = text.strip()
    if t in ("", "-", "?", "nan", "NaN", "*"):
        return None
    v = number(t)
    if v is None:
        raise ParseError(f"{what}: {t[:40]!r} is not a number", adapter=NAME, path=path)
    return v


def _title(tb: ET.Element) -> str:
    return " ".join((tb.get("title") or "").split())


def read_table(tb: ET.Element, path: Path) -> list[dict[str, float | None]]:
    """Rows of a CCP4Table as {column: value}, from its ``headers`` and ``data`` elements."""
    head = tb.find("headers")
    data = tb.find("data")
    if head is None or data is None or not (head.text or "").split():
        raise ParseError(f"table {_title(tb)!r} without headers or data", adapter=NAME, path=path)
    cols = (head.text or "").split()
    rows = []
    for line in (data.text or "").splitlines():
        toks = line.split()
        if not toks:
            continue
        if len(toks) != len(cols):
            raise ParseError(f"table {_title(tb)!r}: a row has {len(toks)} values for {len(cols)} columns",
                             adapter=NAME, path=path)
        rows.append({c: _num(t, f"table {_title(tb)!r} column {c}", path) for c, t in zip(cols, toks, strict=True)})
    return rows


def shell_edges(mids: list[float], notes: list[str], where: str) -> list[float] | None:
    """Edges in 1/d^2 between consecutive shells (len(mids) - 1 of them) from the bin mid-points."""
    n = len(mids)
    if n < 2:
        return []
    xs = [k + 0.5 for k in range(n)]
    mx, my = sum(xs) / n, sum(mids) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    w = sum((x - mx) * (y - my) for x, y in zip(xs, mids, strict=True)) / sxx
    a = my - w * mx
    if w > 0 and max(abs(a + w * x - y) for x, y in zip(xs, mids, strict=True)) <= 1.5e-4:
        edges = [a + w * k for k in range(1, n)]
    else:
        edges = [(mids[k] + mids[k + 1]) / 2 for k in range(n - 1)]
        notes.append(f"{where}: shell mid-points are not evenly spaced in 1/d^2; shell limits are half-way between them")
    if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        notes.append(f"{where}: shell mid-points do not increase; no shell limits")
        return None
    return edges


class AimlessXml:
    """CCP4 AIMLESS XMLOUT: merging statistics, shells, cell and space group of each dataset."""

    name = NAME
    description = "CCP4 AIMLESS XMLOUT: overall/inner/outer and per-shell merging statistics, cell, space group"
    _ROOT = re.compile(rb"<AIMLESS[\s>/]")

    def detect(self, head: bytes, name: str) -> bool:
        try:
            s = head.lstrip(b"\xef\xbb\xbf \t\r\n")
            if s.startswith(b"<?xml"):
                end = s.find(b"?>")
                if end < 0:
                    return False
                s = s[end + 2 :].lstrip()
            while s.startswith(b"<!--"):
                end = s.find(b"-->")
                if end < 0:
                    return False
                s = s[end + 3 :].lstrip()
            return self._ROOT.match(s) is not None
        except Exception:  # noqa: BLE001 - detectors never raise
            return False

    def parse(self, path: Path) -> Parsed:
        data = read_bytes(path, NAME)
        if re.search(rb"<!(DOCTYPE|ENTITY)", data[:65536], re.I):
            raise ParseError("a DOCTYPE or entity declaration: not an AIMLESS XML (refused for safety)", adapter=NAME, path=path)
        try:
            root = ET.fromstring(data)
        except ET.ParseError as err:
            line = err.position[0] if err.position else None
            raise ParseError(f"not well-formed XML: {err}", adapter=NAME, path=path, line=line) from err
        if root.tag != "AIMLESS":
            raise ParseError(f"root element is <{root.tag}>, not <AIMLESS>", adapter=NAME, path=path, line=1)
        parsed = Parsed(NAME, path, program="AIMLESS", version=(root.get("version") or "").strip() or None)
        notes = parsed.notes
        result = root.find("Result")
        datasets = result.findall("Dataset") if result is not None else []
        if not datasets:
            raise ParseError("no Result/Dataset element: AIMLESS did not finish (truncated or failed run)", adapter=NAME, path=path)
        self._run_notes(root, notes)
        wavelengths = {(d.get("name") or ""): d.findtext("Wavelength") for d in root.iterfind("ReflectionData/Dataset")}
        tables = [tb for tb in root.iter("CCP4Table")]
        names = [d.get("name") or f"dataset {i + 1}" for i, d in enumerate(datasets)]
        if len(set(names)) != len(names):
            raise ParseError("two Result datasets share a name", adapter=NAME, path=path)
        for ds, full in zip(datasets, names, strict=True):
            short = full.rsplit("/", 1)[-1]
            r = Result(level="processing", label=short if len(datasets) > 1 else None)
            where = f"dataset {full}"
            self._summary(r, ds, path, notes, where)
            self._crystal(r, ds, root, notes, where, path)
            wl = _num(wavelengths.get(full), f"{where} wavelength", path)
            if wl is not None and wl > 0:
                r.add("diffrn_radiation_wavelength.wavelength", wl)
            self._shells(r, ds, short, tables, path, notes, where)
            r.add("mmcat_processing.status", "success")
            parsed.results.append(r)
        return xc.keep_valid(parsed)

    # -- pieces ---------------------------------------------------------------------------------

    @staticmethod
    def _run_notes(root: ET.Element, notes: list[str]) -> None:
        if root.find("OnlyMerge") is not None:
            notes.append("AIMLESS ran with ONLYMERGE: data merged without scaling")
        for el in root:
            if el.get("class") == "warningmessage" or el.tag == "AnomalousStatus":
                txt = " ".join((el.text or "").split())
                if txt:
                    notes.append(f"AIMLESS {el.tag}: {txt}")

    @staticmethod
    def _summary(r: Result, ds: ET.Element, path: Path, notes: list[str], where: str) -> None:
        for tag, (overall, shell, integer) in SUMMARY.items():
            el = ds.find(tag)
            if el is None:
                continue
            for part, prefix, item in (("Overall", "reflns", overall), ("Inner", "reflns_shell.inner", shell),
                                       ("Outer", "reflns_shell.outer", shell)):
                v = _num(el.findtext(part), f"{where} {tag}/{part}", path)
                if v is None or item is None:
                    continue
                r.add(f"{prefix}.{item}", xc.whole(v) if integer else v)
        for tag, what in NO_ITEM.items():
            el = ds.find(tag)
            if el is not None:
                txt = " ".join(f"{c.tag} {(c.text or '').strip()}" for c in el) or (el.text or "").strip()
                notes.append(f"{where}: {what} ({txt}): no mmCAT item")
        for est in ds.findall("ResolutionLimitEstimate"):
            kind, direction = est.get("type") or "?", (est.findtext("Direction") or "").strip()
            d = _num(est.findtext("MaximumResolution"), f"{where} resolution estimate", path)
            msg = " ".join((est.findtext("Message") or "").split())
            if kind == "I/sd gt 2" and direction == "Overall" and d is not None and "maximum resolution" not in msg:
                r.add("reflns.pdbx_res_netI_over_sigmaI_2", d)
            elif d is not None:
                notes.append(f"{where}: resolution estimate {kind} > {(est.findtext('Threshold') or '').strip()} "
                             f"({direction}): {d:g} A{' ' + msg if msg else ''}")
        mos = _num(ds.findtext("Mosaicity"), f"{where} mosaicity", path)
        if mos is not None:
            r.add("exptl_crystal.pdbx_mosaicity", mos)
        # a Wilson B appears in some AIMLESS versions' XML (not in the corpus one); take it when present
        wilson = next((el for el in ds.iter() if el.tag.lower().replace("_", "") in ("wilsonb", "bwilson", "wilsonbfactor")), None)
        if wilson is not None:
            r.add("reflns.B_iso_Wilson_estimate", _num(wilson.text, f"{where} Wilson B", path))
        r.add("mmcat_processing.shell_class_source", "AIMLESS Result summary: Overall, Inner and Outer columns")

    @staticmethod
    def _crystal(r: Result, ds: ET.Element, root: ET.Element, notes: list[str], where: str, path: Path) -> None:
        cell_el = ds.find("cell")
        if cell_el is None:
            cell_el = root.find("ReflectionFile/cell")
        if cell_el is not None:
            cell = [_num(cell_el.findtext(c), f"{where} cell {c}", path) for c in CELL]
            if all(v is not None for v in cell):
                xc.add_cell(r, cell)  # type: ignore[arg-type]
        sg = ds.findtext("SpacegroupName") or root.findtext("ReflectionFile/SpacegroupName")
        xc.space_group_from_name(r, sg, notes, where)

    @staticmethod
    def _shells(r: Result, ds: ET.Element, short: str, tables: list[ET.Element], path: Path,
                notes: list[str], where: str) -> None:
        by_n: dict[int, dict[str, Any]] = {}
        mids: dict[int, float] = {}
        for prefix, columns in SHELL_TABLES.items():
            title = f"{prefix}, {short}"
            tb = next((t for t in tables if _title(t) == title), None)
            if tb is None:
                continue
            for row in read_table(tb, path):
                n, mid = row.get("N"), row.get("1/d^2")
                if n is None or mid is None or not float(n).is_integer():
                    raise ParseError(f"table {title!r}: a row without bin number or 1/d^2", adapter=NAME, path=path)
                k = int(n)
                if k in mids and abs(mids[k] - mid) > 1e-4:
                    raise ParseError(f"table {title!r}: bin {k} has another 1/d^2 than in other tables", adapter=NAME, path=path)
                mids[k] = mid
                cells = by_n.setdefault(k, {})
                for col, item in columns.items():
                    v = row.get(col)
                    if v is not None:
                        cells[item] = xc.whole(v) if item in INTEGER_ITEMS else v
        if not by_n:
            notes.append(f"{where}: no per-shell tables")
            return
        order = sorted(by_n)
        if order != list(range(1, len(order) + 1)):
            raise ParseError(f"{where}: shell numbers are not 1..{len(order)}", adapter=NAME, path=path)
        edges = shell_edges([mids[k] for k in order], notes, where)
        low = _num(ds.findtext("ResolutionLow/Overall"), f"{where} low resolution", path)
        high = _num(ds.findtext("ResolutionHigh/Overall"), f"{where} high resolution", path)
        rows = []
        for i, k in enumerate(order):
            row = dict(by_n[k])
            if edges is not None:
                lo = low if i == 0 else round(1 / math.sqrt(edges[i - 1]), 2)
                hi = high if i == len(order) - 1 else round(1 / math.sqrt(edges[i]), 2)
                if lo is not None:
                    row["d_res_low"] = lo
                if hi is not None:
                    row["d_res_high"] = hi
            row["mmcat_shell_class"] = "inner" if i == 0 else "outer" if i == len(order) - 1 else "intermediate"
            row["pdbx_ordinal"] = k
            rows.append(row)
        r.table("reflns_shell", rows)


ADAPTER = AimlessXml()
