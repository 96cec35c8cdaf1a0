"""ISPyB AutoProcContainer XML: the processing summary that pipelines hand to the ISPyB LIMS.

autoPROC (Global Phasing), xia2, fast_dp and the ESRF EDNA plugins write one XML document whose
elements are named after the ISPyB tables and columns they fill (AutoProc, AutoProcScaling,
AutoProcScalingStatistics, AutoProcIntegration, AutoProcProgram...; see the ISPyB database schema
of ispyb/ISPyB and DiamondLightSource/ispyb-database). An ``AutoProcContainer`` holds the program
container, then one ``AutoProc`` (space group, cell) per ``AutoProcScalingContainer``, each with
overall/innerShell/outerShell statistics and the integration of one or more sweeps. EDNA wraps the
container in its own input element (``XSDataInputAutoProc``); element spellings vary in case
(``rMeasWithinIPlusIMinus``/``rmeasWithinIplusIminus``, ``refinedXBeam``/``RefinedXbeam``), so
names are matched ignoring case and underscores.

Rules, recorded in :attr:`Parsed.notes` for every file:

* **Results.** Each ``AutoProcScalingContainer`` is one result: the database stores each against
  its own data collection (autoPROC writes one container per sweep, repeating the merged
  statistics). A container is labelled ``staraniso`` when it carries ellipsoidal completeness or a
  resolution ellipsoid (STARANISO output), else ``isotropic``; a label used more than once gets the
  container's ordinal within that kind (``isotropic-1``, ``isotropic-2``).
* **Rmerge, Rmeas and Rpim** are fractions for autoPROC, xia2, fast_dp and DIALS, and percentages for
  the ESRF EDNA plugins of 2011 (``fastproc``, EDNA ``XSDataInput`` wrappers). An unknown writer is
  judged by the values: overall Rmerge > 1.0 or inner-shell Rmerge > 0.5 means percent. A writer's
  convention is overruled only by impossible values (an inner-shell R above 1.0 read as a fraction).
* The ``AutoProc`` cell is the cell of the result; the integration cell is used only without it.
  Integration values (``mmcat_integration``) come from the container's first sweep; further sweeps
  are listed in a note. A refined beam centre above 450 "mm" is a pixel value (larger than any
  detector) and is left out, as mmCAT has no pixel item for it.
* Attachments (log and result files) are listed in a note; mmCAT has no key for them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mxcat.adapters import Parsed, Result
from mxcat.adapters._util import keep_valid, line_of, number, read_bytes
from mxcat.errors import ParseError

NAME = "ispyb_xml"

# -- names and values -----------------------------------------------------------------------------


def norm(name: str) -> str:
    """Spelling-blind ISPyB name: ``rMeasWithinIPlusIMinus`` and ``rmeas_within_iplus_iminus`` agree."""
    return name.rsplit("}", 1)[-1].replace("_", "").replace("-", "").lower()


def num(v: Any) -> float | None:
    """A number from text (padded, ``.058``) or a JSON number; None for absent, booleans and junk."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if v == v and v not in (float("inf"), float("-inf")) else None
    return number(str(v)) if isinstance(v, str) else None


def text(v: Any) -> str | None:
    """Stripped text, None when empty; numbers become their text."""
    if v is None or isinstance(v, (dict, list)):
        return None
    s = str(v).strip()
    return s or None


F, I, R, P = "float", "int", "r", "percent"  # noqa: E741 - value kinds of the statistics table

STATISTICS: dict[str, tuple[str | None, str | None, str]] = {
    # normalised ISPyB column: (item of _reflns, item of _reflns_shell, kind)
    "resolutionlimitlow": ("d_resolution_low", "d_res_low", F),
    "resolutionlimithigh": ("d_resolution_high", "d_res_high", F),
    "rmerge": ("pdbx_Rmerge_I_obs", "Rmerge_I_obs", R),
    "rmeaswithiniplusiminus": ("mmcat_Rmeas_within_IplusIminus", "mmcat_Rmeas_within_IplusIminus", R),
    "rmeasalliplusiminus": ("pdbx_Rrim_I_all", "pdbx_Rrim_I_all", R),
    "rpimwithiniplusiminus": ("mmcat_Rpim_within_IplusIminus", "mmcat_Rpim_within_IplusIminus", R),
    "rpimalliplusiminus": ("pdbx_Rpim_I_all", "pdbx_Rpim_I_all", R),
    "fractionalpartialbias": ("mmcat_fractional_partial_bias", "mmcat_fractional_partial_bias", F),
    "ntotalobservations": ("pdbx_number_measured_all", "number_measured_all", I),
    "ntotaluniqueobservations": ("number_obs", "number_unique_obs", I),
    "meanioversigi": ("pdbx_netI_over_sigmaI", "pdbx_netI_over_sigmaI_obs", F),
    "completeness": ("percent_possible_obs", "percent_possible_obs", P),
    "completenessspherical": ("pdbx_percent_possible_spherical", "pdbx_percent_possible_spherical", P),
    "completenessellipsoidal": ("pdbx_percent_possible_ellipsoidal", "pdbx_percent_possible_ellipsoidal", P),
    "anomalouscompleteness": ("pdbx_percent_possible_anomalous", "pdbx_percent_possible_anomalous", P),
    "anomalouscompletenessspherical": ("pdbx_percent_possible_spherical_anomalous", "pdbx_percent_possible_spherical_anomalous", P),
    "anomalouscompletenessellipsoidal": ("pdbx_percent_possible_ellipsoidal_anomalous", "pdbx_percent_possible_ellipsoidal_anomalous", P),
    "multiplicity": ("pdbx_redundancy", "pdbx_redundancy", F),
    "anomalousmultiplicity": ("pdbx_redundancy_anomalous", "pdbx_redundancy_anomalous", F),
    "cchalf": ("pdbx_CC_half", "pdbx_CC_half", F),
    "ccanomalous": ("pdbx_CC_half_anomalous", "pdbx_CC_half_anomalous", F),
    "ccano": ("pdbx_CC_half_anomalous", "pdbx_CC_half_anomalous", F),
    "sigano": ("pdbx_absDiff_over_sigma_anomalous", "pdbx_absDiff_over_sigma_anomalous", F),
    "danooversigdano": ("pdbx_absDiff_over_sigma_anomalous", "pdbx_absDiff_over_sigma_anomalous", F),
    "isa": ("mmcat_ISa", None, F),  # a property of the whole dataset; shell copies are repeats
    "resioversigi2": ("pdbx_res_netI_over_sigmaI_2", None, F),
}
"""ISPyB scaling statistics and the mmCAT items they fill (overall -> _reflns, shells -> _reflns_shell)."""

R_FIELDS = ("rmerge", "rmeasalliplusiminus", "rmeaswithiniplusiminus", "rpimalliplusiminus", "rpimwithiniplusiminus")
SHELLS = {"overall": "overall", "innershell": "inner", "outershell": "outer"}
CELL = (("a", "length_a"), ("b", "length_b"), ("c", "length_c"),
        ("alpha", "angle_alpha"), ("beta", "angle_beta"), ("gamma", "angle_gamma"))
INTEGRATION = {
    "startimagenumber": ("start_image_number", I), "endimagenumber": ("end_image_number", I),
    "refineddetectordistance": ("refined_detector_distance", F),
    "rotationaxisx": ("rotation_axis_x", F), "rotationaxisy": ("rotation_axis_y", F), "rotationaxisz": ("rotation_axis_z", F),
    "beamvectorx": ("beam_vector_x", F), "beamvectory": ("beam_vector_y", F), "beamvectorz": ("beam_vector_z", F),
}
MAX_BEAM_MM = 450.0
"""No MX detector is wider than this (a Pilatus 6M is 424 mm): a larger 'refined beam centre' is in pixels."""

# -- the intermediate model shared with the JSON adapter -------------------------------------------


@dataclass
class Block:
    """One scaling result: its AutoProc row, scaling row, statistics by shell and integrated sweeps."""

    autoproc: dict[str, Any] = field(default_factory=dict)
    scaling: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``overall``, ``inner``, ``outer`` -> {normalised column: raw value}."""
    integrations: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """(Image row, AutoProcIntegration row) per sweep, both with normalised names."""
    where: str = ""

    @property
    def kind(self) -> str:
        ellipsoidal = any(k.endswith("ellipsoidal") for s in self.stats.values() for k in s)
        ellipsoid = any(k.startswith("resolutionellipsoid") for k in self.scaling)
        return "staraniso" if ellipsoidal or ellipsoid else "isotropic"


@dataclass
class Source:
    """Everything read from one file, before it becomes mmCAT keys."""

    program: dict[str, Any] = field(default_factory=dict)
    attachments: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    writer: str = "unknown writer"
    writer_scale: str | None = None
    """``percent`` or ``fraction`` when the writer's convention for R values is known."""
    collection_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- decisions --------------------------------------------------------------------------------------

_TZ = {"UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 1, "BST": 1, "CET": 1, "CEST": 2, "MET": 1, "MEST": 2,
       "EET": 2, "EEST": 3, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8,
       "PDT": -7, "JST": 9, "KST": 9, "AEST": 10, "AEDT": 11, "IST": None}
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_CTIME = re.compile(r"^(?:[A-Za-z]{3},?\s+)?([A-Za-z]{3})\s+(\d{1,2})\s+(\d{1,2}):(\d{2}):(\d{2})(?:\s+([A-Za-z]{1,5}))?\s+(\d{4})$")


def iso_time(value: Any, notes: list[str], what: str) -> str | None:
    """ISO 8601 from ``Mon Jun 14 15:09:27 PDT 2021`` (date(1) form), ISO text or ``YYYY-MM-DD hh:mm:ss``."""
    s = text(value)
    if s is None:
        return None
    m = _CTIME.match(s)
    if m:
        mon, day, hh, mi, ss, tz, year = m.groups()
        try:
            t = datetime(int(year), _MONTHS[mon.lower()], int(day), int(hh), int(mi), int(ss))
        except (KeyError, ValueError):
            notes.append(f"{what}: {s!r} is not a valid date; left out")
            return None
        if tz:
            hours = _TZ.get(tz.upper())
            if hours is None:
                notes.append(f"{what}: time zone {tz} is unknown or ambiguous; stored as local time")
            else:
                t = t.replace(tzinfo=timezone(timedelta(hours=hours)))
        return t.isoformat()
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).isoformat()
    except ValueError:
        notes.append(f"{what}: {s!r} is not a date form this adapter knows; left out")
        return None


def status_word(value: Any) -> str | None:
    """mmCAT status from ``1``/``0`` (Diamond), ``SUCCESS``/``FAILED``/``RUNNING`` (ESRF) or words."""
    s = text(value)
    if s is None:
        return None
    return {"1": "success", "0": "failed", "success": "success", "successful": "success", "failed": "failed",
            "failure": "failed", "error": "failed", "running": "running", "aborted": "aborted"}.get(s.lower())


def yes_no(value: Any) -> str | None:
    s = text(value)
    if s is None:
        return None
    return {"1": "yes", "true": "yes", "yes": "yes", "0": "no", "false": "no", "no": "no"}.get(s.lower())


_PROGRAM = re.compile(r"^(?P<name>[A-Za-z][\w.+-]*)(?:\s+v?(?P<ver>\d[\w.+-]*))?(?:\s*\((?P<build>\d{8})\b)?")


def program_and_version(programs: str | None) -> tuple[str | None, str | None]:
    """``autoPROC 1.0.5 (20210420 - see: ...)`` -> (``autoPROC``, ``1.0.5 (20210420)``)."""
    if not programs:
        return None, None
    m = _PROGRAM.match(programs.strip())
    if not m:
        return programs.strip(), None
    ver = m.group("ver")
    if ver and m.group("build"):
        ver = f"{ver} ({m.group('build')})"
    return m.group("name"), ver


def writer_of(root_tag: str, programs: str | None, command_line: str | None) -> tuple[str, str | None]:
    """Who wrote the file and, when known, its convention for R values (``percent``/``fraction``)."""
    p = (programs or "").lower()
    c = (command_line or "").lower()
    if root_tag.lower().startswith("xsdata"):
        return "EDNA (XSDataInput wrapper)", "percent"
    if "fastproc" in p or p.startswith("edna"):
        return f"EDNA ({programs})", "percent"
    if "autoproc" in p or "autoproc" in c:
        return "autoPROC", "fraction"
    if "/bin/linux64/process" in c:
        return "autoPROC (its 'process' command, renamed)", "fraction"
    for name in ("xia2", "fast_dp", "fastdp", "dials"):
        if name in p:
            return name, "fraction"
    return f"unknown writer ({programs or 'no program name'})", None


def _first_r(stats: dict[str, Any]) -> tuple[str, float] | None:
    for f in R_FIELDS:
        v = num(stats.get(f))
        if v is not None:
            return f, v
    return None


def r_scale(src: Source) -> tuple[str | None, str]:
    """Unit to give R values (``percent`` or None for fractions) and a note saying why."""
    overall = inner = None
    for b in src.blocks:
        overall = overall or _first_r(b.stats.get("overall", {}))
        inner = inner or _first_r(b.stats.get("inner", {}))
    seen = ", ".join(f"{shell} {f} {v:g}" for shell, fv in (("overall", overall), ("inner-shell", inner)) if fv for f, v in [fv])
    if overall is None and inner is None:
        return None, "no R values in the file"
    by_values = "percent" if (overall and overall[1] > 1.0) or (inner and inner[1] > 0.5) else "fraction"
    decided, why = src.writer_scale, f"{src.writer} writes {_plural(src.writer_scale)}"
    if decided is None:
        decided, why = by_values, f"{src.writer}: judged by the values (overall Rmerge > 1.0 or inner-shell > 0.5 means percent)"
    elif decided == "fraction" and ((inner and inner[1] > 1.0) or (overall and overall[1] >= 10.0)):
        decided, why = "percent", f"{src.writer} usually writes fractions, but these values are impossible as fractions"
    elif decided == "percent" and inner and inner[1] < 0.2 and (overall is None or overall[1] < 1.0):
        decided, why = "fraction", f"{src.writer} usually writes percentages, but these values are impossible as percentages"
    agree = "" if decided == by_values else " (the values alone would suggest otherwise)"
    return ("percent" if decided == "percent" else None), f"R values (Rmerge, Rmeas, Rpim) read as {_plural(decided)}: {why}; {seen}{agree}"


def _plural(scale: str | None) -> str:
    return "percentages" if scale == "percent" else "fractions"


def dataset_from_image(filename: str | None) -> str | None:
    """``abc2_1_00001.cbf`` -> ``abc2_1``; ``x_master.h5`` -> ``x``."""
    if not filename:
        return None
    stem = Path(filename.strip()).name
    stem = re.sub(r"(\.(gz|bz2|xz))$", "", stem, flags=re.I)
    stem = re.sub(r"\.(cbf|img|h5|hdf5|nxs|mccd|osc|sfrm|mar\d+|tif+)$", "", stem, flags=re.I)
    stem = re.sub(r"(_master|_\d+)$", "", stem)
    return stem or None


# -- from the intermediate model to results --------------------------------------------------------


def assemble(adapter: str, path: Path, src: Source) -> Parsed:
    """Results, hints and notes from what was read; shared by the XML and JSON adapters."""
    empty = all(not (b.autoproc or b.scaling or b.stats or b.integrations) for b in src.blocks)
    if not src.blocks or (empty and not any(text(v) for v in src.program.values())):
        raise ParseError("no AutoProc, scaling or program information: nothing to read", adapter=adapter, path=path)
    notes = list(src.notes)
    program, version = program_and_version(text(src.program.get("processingprograms")))
    unit, why = r_scale(src)
    notes.append(why)
    kinds = [b.kind for b in src.blocks]
    counters: dict[str, int] = {}
    ids = sorted(set(src.collection_ids) | {image["datacollectionid"] for b in src.blocks for image, _ in b.integrations
                                            if isinstance(image.get("datacollectionid"), int)})
    if len(ids) > 1:
        notes.append(f"several ISPyB DataCollection ids ({', '.join(map(str, ids))}); none is stored as the dataset's id")
    results = []
    for b in src.blocks:
        counters[b.kind] = counters.get(b.kind, 0) + 1
        label = b.kind if kinds.count(b.kind) == 1 else f"{b.kind}-{counters[b.kind]}"
        if not b.stats and not b.scaling and len(src.blocks) == 1:
            label = None  # program or AutoProc information only: nothing to tell apart
        r = Result(level="processing", label=label)
        _program_values(r, src.program, program, version, notes)
        _autoproc_values(r, b, notes)
        _statistics_values(r, b, unit, notes)
        _integration_values(r, b, notes)
        if len(ids) == 1:
            r.add("mmcat_collection.ispyb_datacollection_id", ids[0])
        results.append(r)
    for i in range(1, len(src.blocks)):
        for j in range(i):
            if src.blocks[i].stats and src.blocks[i].stats == src.blocks[j].stats:
                notes.append(f"{src.blocks[i].where} repeats the statistics of {src.blocks[j].where} "
                             "(one container per sweep, as autoPROC writes them)")
                break
    if src.attachments:
        notes.append("attachments: " + "; ".join(src.attachments))
    hints = {}
    for b in src.blocks:
        for image, _ in b.integrations:
            name = dataset_from_image(text(image.get("filename")))
            if name and "dataset" not in hints:
                hints["dataset"] = name
    notes = list(dict.fromkeys(notes))  # a note raised for each result is said once
    return Parsed(adapter=adapter, path=path, program=program, version=version, results=results, hints=hints, notes=notes)


def _program_values(r: Result, prog: dict[str, Any], program: str | None, version: str | None, notes: list[str]) -> None:
    r.add("mmcat_processing.pipeline", program)
    r.add("mmcat_processing.program_version", version)
    r.add("mmcat_processing.command_line", text(prog.get("processingcommandline")))
    st = prog.get("processingstatus")
    word = status_word(st)
    if word is None and text(st):
        notes.append(f"processingStatus {text(st)!r} is not a known status; left out")
    r.add("mmcat_processing.status", word)
    r.add("mmcat_processing.message", text(prog.get("processingmessage")))
    r.add("mmcat_processing.start_time", iso_time(prog.get("processingstarttime"), notes, "processingStartTime"))
    r.add("mmcat_processing.end_time", iso_time(prog.get("processingendtime"), notes, "processingEndTime"))
    r.add("mmcat_processing.environment", text(prog.get("processingenvironment")))
    r.add("mmcat_processing.shell_class_source", "ISPyB scalingStatisticsType (overall, innerShell, outerShell)")


def _autoproc_values(r: Result, b: Block, notes: list[str]) -> None:
    sg = text(b.autoproc.get("spacegroup"))
    if sg:
        sg = " ".join(sg.split())
        r.add("symmetry.space_group_name_H-M", sg)
        _space_group_number(r, sg, notes)
    r.add("diffrn_radiation_wavelength.wavelength", num(b.autoproc.get("wavelength")))
    cell = {item: num(b.autoproc.get(f"refinedcell{p}")) for p, item in CELL}
    if all(v is None for v in cell.values()) and b.integrations:
        cell = {item: num(b.integrations[0][1].get(f"cell{p}")) for p, item in CELL}
        if any(v is not None for v in cell.values()):
            notes.append(f"{b.where}: no AutoProc cell; the cell of the first integrated sweep is used")
    for item, v in cell.items():
        r.add(f"cell.{item}", v, "angstroms" if item.startswith("length") else "degrees")
    for n in (1, 2, 3):
        r.add(f"reflns.pdbx_aniso_diffraction_limit_{n}", num(b.scaling.get(f"resolutionellipsoidvalue{n}")), "angstroms")
        axis = [num(b.scaling.get(f"resolutionellipsoidaxis{n}{k}")) for k in (1, 2, 3)]
        if all(v is not None for v in axis):
            r.add(f"mmcat_integration.aniso_principal_axis_{n}", " ".join(f"{v:g}" for v in axis))


def _space_group_number(r: Result, name: str, notes: list[str]) -> None:
    import gemmi

    sg = gemmi.find_spacegroup_by_name(name)
    if sg is None:
        notes.append(f"space group {name!r} is not known to gemmi; no number or crystal system")
        return
    r.add("space_group.IT_number", sg.number)
    r.add("space_group.crystal_system", sg.crystal_system_str())


def _statistics_values(r: Result, b: Block, unit: str | None, notes: list[str]) -> None:
    for shell, stats in b.stats.items():
        for col, raw in stats.items():
            if col in ("scalingstatisticstype", "anomalous", "comments") or col.startswith("autoproc"):
                continue
            spec = STATISTICS.get(col)
            if spec is None:
                continue
            item = spec[0] if shell == "overall" else spec[1]
            if item is None:
                continue
            key = f"reflns.{item}" if shell == "overall" else f"reflns_shell.{shell}.{item}"
            v = num(raw)
            if v is None:
                if text(raw) is not None:
                    notes.append(f"{b.where}: {shell} {col} = {text(raw)!r} is not a number; left out")
                continue
            if spec[2] == I:
                if not v.is_integer():
                    notes.append(f"{b.where}: {shell} {col} = {v:g} is not a whole number; left out")
                    continue
                r.add(key, int(v))
            elif spec[2] == R:
                r.add(key, v, unit)
            elif spec[2] == P:
                r.add(key, v, "percent")
            else:
                r.add(key, v, "angstroms" if "resolution" in col or col == "resioversigi2" else None)
    overall = b.stats.get("overall", {})
    anomalous = yes_no(overall.get("anomalous"))
    if anomalous is None:
        for _, integ in b.integrations[:1]:
            anomalous = yes_no(integ.get("anomalous"))
    r.add("mmcat_processing.anomalous", anomalous)
    r.add("mmcat_processing.comments", text(overall.get("comments")))


def _integration_values(r: Result, b: Block, notes: list[str]) -> None:
    if not b.integrations:
        return
    image, integ = b.integrations[0]
    for col, (item, kind) in INTEGRATION.items():
        v = num(integ.get(col))
        if v is None:
            continue
        if kind == I:
            if v.is_integer():
                r.add(f"mmcat_integration.{item}", int(v))
            continue
        r.add(f"mmcat_integration.{item}", v, "millimetres" if item.endswith("distance") else None)
    for axis in ("x", "y"):
        v = num(integ.get(f"refined{axis}beam"))
        if v is None:
            continue
        if abs(v) > MAX_BEAM_MM:
            notes.append(f"{b.where}: refined {axis} beam {v:g} is in pixels (larger than any detector in mm); "
                         "left out, mmCAT has no refined beam centre in pixels")
            continue
        r.add(f"mmcat_integration.refined_beam_centre_{axis}", v, "millimetres")
    if len(b.integrations) > 1:
        sweeps = []
        for img, integ in b.integrations:
            start, end = num(integ.get("startimagenumber")), num(integ.get("endimagenumber"))
            rng = f" images {start:g}-{end:g}" if start is not None and end is not None else ""
            sweeps.append(f"{text(img.get('filename')) or text(img.get('datacollectionid')) or '?'}{rng}")
        notes.append(f"{b.where} integrates {len(sweeps)} sweeps; mmcat_integration holds the first: " + "; ".join(sweeps))




# -- XML reading ------------------------------------------------------------------------------------


def _el_text(el: ET.Element) -> str | None:
    """An element's text; EDNA's XSData form ``<x><value>1.2</value></x>`` is unwrapped."""
    if len(el) == 1 and norm(el[0].tag) == "value":
        return el[0].text
    return el.text


def _row(el: ET.Element, notes: list[str], where: str) -> dict[str, Any]:
    """Leaf children of an element as {normalised name: text}; the first of duplicates is kept."""
    out: dict[str, Any] = {}
    for child in el:
        if len(child) and not (len(child) == 1 and norm(child[0].tag) == "value"):
            continue
        k = norm(child.tag)
        if k in out:
            notes.append(f"{where}: element {child.tag} appears twice; the first is kept")
            continue
        out[k] = _el_text(child)
    return out


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    n = norm(name)
    return [c for c in el if norm(c.tag) == n]


class IspybXml:
    """ISPyB AutoProcContainer XML (autoPROC, xia2, fast_dp, EDNA): one result per scaling container."""

    name = NAME
    description = "ISPyB AutoProcContainer XML from autoPROC, xia2, fast_dp or EDNA: scaling statistics, cell, integration, program"
    _DETECT = re.compile(rb"<\s*AutoProcContainer[\s>/]", re.I)

    def detect(self, head: bytes, name: str) -> bool:
        try:
            start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
            return start.startswith(b"<") and self._DETECT.search(head) is not None
        except Exception:  # noqa: BLE001 - a detector never raises (adapter protocol)
            return False

    def parse(self, path: Path) -> Parsed:
        data = read_bytes(path, NAME)
        if re.search(rb"<!(DOCTYPE|ENTITY)", data[:65536], re.I):
            raise ParseError("a DOCTYPE or entity declaration: not an ISPyB XML (refused for safety)", adapter=NAME, path=path)
        try:
            root = ET.fromstring(data)
        except ET.ParseError as err:
            line = err.position[0] if err.position else None
            raise ParseError(f"not well-formed XML: {err}", adapter=NAME, path=path, line=line) from err
        containers = [root] if norm(root.tag) == "autoproccontainer" else [e for e in root.iter() if norm(e.tag) == "autoproccontainer"]
        if not containers:
            raise ParseError(f"no AutoProcContainer element (root is <{root.tag}>): not an ISPyB AutoProcContainer XML",
                             adapter=NAME, path=path)
        src = Source()
        text_doc = data.decode("utf-8", errors="replace")
        for container in containers:
            self._read_container(container, src, text_doc)
        programs = text(src.program.get("processingprograms"))
        src.writer, src.writer_scale = writer_of(root.tag.rsplit("}", 1)[-1], programs, text(src.program.get("processingcommandline")))
        return keep_valid(assemble(NAME, path, src))

    def _read_container(self, container: ET.Element, src: Source, doc: str) -> None:
        """Program, attachments and one block per scaling container, each paired with its AutoProc.

        The i-th AutoProc goes with the i-th scaling container when their numbers agree (autoPROC
        writes AutoProc before each container, others after); a single AutoProc serves every
        container; otherwise each container takes the nearest AutoProc before it.
        """
        notes = src.notes
        for el in container.iter():
            if norm(el.tag) == "autoprocprogram" and not src.program:
                src.program = _row(el, notes, "AutoProcProgram")
            elif norm(el.tag) == "autoprocprogramattachment":
                a = _row(el, notes, "AutoProcProgramAttachment")
                name = text(a.get("filename"))
                if name:
                    folder = text(a.get("filepath"))
                    src.attachments.append(f"{text(a.get('filetype')) or 'file'} {folder.rstrip('/') + '/' if folder else ''}{name}")
        offsets = [m.start() for m in re.finditer(r"<\s*AutoProcScalingContainer[\s>]", doc, re.I)]
        autoprocs: list[dict[str, Any]] = []
        scalings: list[tuple[ET.Element, dict[str, Any] | None]] = []
        for child in container:
            k = norm(child.tag)
            if k == "autoproc":
                autoprocs.append(_row(child, notes, "AutoProc"))
            elif k == "autoprocscalingcontainer":
                scalings.append((child, autoprocs[-1] if autoprocs else None))
        for i, (sc, before) in enumerate(scalings):
            if len(autoprocs) == len(scalings):
                autoproc = autoprocs[i]
            elif len(autoprocs) == 1:
                autoproc = autoprocs[0]
            else:
                autoproc = before if before is not None else (autoprocs[0] if autoprocs else {})
            idx = sum(1 for b in src.blocks if b.where.startswith("scaling container"))
            line = line_of(doc, offsets[idx]) if idx < len(offsets) else None
            where = f"scaling container {idx + 1}" + (f" (line {line})" if line else "")
            src.blocks.append(self._block(sc, autoproc, notes, where))
        if not scalings and autoprocs:
            src.blocks.append(Block(autoproc=autoprocs[0], where="AutoProc without scaling container"))
        elif not scalings and src.program:
            src.blocks.append(Block(where="program information only"))

    def _block(self, sc: ET.Element, autoproc: dict[str, Any], notes: list[str], where: str) -> Block:
        b = Block(autoproc=autoproc, where=where)
        for el in _children(sc, "AutoProcScaling")[:1]:
            b.scaling = _row(el, notes, f"{where} AutoProcScaling")
        for el in _children(sc, "AutoProcScalingStatistics"):
            row = _row(el, notes, f"{where} statistics")
            kind = text(row.get("scalingstatisticstype"))
            shell = SHELLS.get((kind or "").lower())
            if shell is None:
                notes.append(f"{where}: statistics of type {kind!r} are not overall/innerShell/outerShell; left out")
            elif shell in b.stats:
                notes.append(f"{where}: a second {kind} statistics row; the first is kept")
            else:
                b.stats[shell] = row
        for ic in _children(sc, "AutoProcIntegrationContainer"):
            image: dict[str, Any] = {}
            integ: dict[str, Any] = {}
            for el in _children(ic, "Image")[:1]:
                image = _row(el, notes, f"{where} Image")
            for el in _children(ic, "AutoProcIntegration")[:1]:
                integ = _row(el, notes, f"{where} AutoProcIntegration")
            dc = num(image.get("datacollectionid")) or num(integ.get("datacollectionid"))
            image["datacollectionid"] = int(dc) if dc is not None and dc.is_integer() and dc >= 0 else None
            b.integrations.append((image, integ))
        return b


ADAPTER = IspybXml()
