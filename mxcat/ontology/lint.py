"""Lint mmCAT dictionaries: DDL2 conformance through gemmi, then mmCAT's house rules.

DDL2 conformance: every file is validated with gemmi's ``cif.Ddl`` against ``mmcif_ddl.dic`` plus
the mmCAT extension. gemmi returns True even when it logged problems, so every logged message
counts as a failure. gemmi's regular-expression checks are switched off (its std::regex engine
overflows the stack on long text values) and done here with Python's ``re`` instead; its per-frame
parent-link check is replaced by the cross-file reference checks below.

House rules: numeric items carry units (or the explicit ``none``); unit and type codes exist;
ranges are numeric, ordered, and advisory ranges lie inside hard ones; enumerations fit their
type; mapping targets are unique per scheme and point at existing items and selectors; non-exact
mappings say why; ICAT (name, units) pairs are unique; no PDBx item is redefined: items outside
the ``mmcat`` namespace must agree with the PDBx dictionary (type, units, hard range) when it is
available; versions are semantic and recorded in ``_dictionary_history``.

The DDL and PDBx dictionaries are found from explicit arguments, the environment variables
``MXCAT_MMCIF_DDL`` and ``MXCAT_PDBX_DIC``, or Debian's ``libcifpp-data`` under /usr/share/libcifpp.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import gemmi

from mxcat.errors import OntologyError
from mxcat.ontology.core import Ontology, normalise_selector
from mxcat.ontology.loader import EXTENSION_NAME, dictionary_files, read_document, read_set, text
from mxcat.ontology.model import ENTITIES, RELATIONS, STORAGES, ItemDef, RangeSet

DDL_SEARCH = (
    "/usr/share/libcifpp/mmcif_ddl.dic",
    "/usr/share/libcifpp/mmcif_ddl.dic.gz",
)
PDBX_SEARCH = (
    "/usr/share/libcifpp/mmcif_pdbx.dic",
    "/usr/share/libcifpp/mmcif_pdbx.dic.gz",
)
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where, which rule, what."""

    path: str
    line: int | None
    rule: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        loc = f"{self.path}:{self.line}" if self.line else self.path
        return f"{loc}: {self.severity}: [{self.rule}] {self.message}"


@dataclass
class LintReport:
    problems: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    ddl: Path | None = None
    pdbx: Path | None = None
    n_items: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def find_reference(explicit: str | Path | None, env: str, search: Iterable[str]) -> Path | None:
    """A reference dictionary from an argument, an environment variable or the usual places."""
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise OntologyError("reference dictionary not found", path=p)
        return p
    if os.environ.get(env):
        p = Path(os.environ[env])
        if not p.is_file():
            raise OntologyError(f"reference dictionary named by {env} not found", path=p)
        return p
    for cand in search:
        if Path(cand).is_file():
            return Path(cand)
    return None


def lint(
    paths: Iterable[str | Path] | None = None,
    *,
    ddl: str | Path | None = None,
    pdbx: str | Path | None = None,
    require_ddl: bool = True,
) -> LintReport:
    """Lint a dictionary set (default: the shipped one). Syntax errors are problems, not exceptions."""
    report = LintReport()
    files = dictionary_files(paths)
    report.files = files
    for f in files:
        try:
            read_document(f)
        except OntologyError as err:
            report.problems.append(Problem(str(f), err.line, "cif-syntax", err.reason))
    if report.problems:
        return report
    try:
        raw = read_set(files)
        onto = Ontology(raw)
    except OntologyError as err:
        report.problems.append(Problem(err.path or "?", err.line, "load", err.reason))
        return report
    report.n_items = len(onto.items)

    report.ddl = find_reference(ddl, "MXCAT_MMCIF_DDL", DDL_SEARCH)
    if report.ddl is not None:
        report.problems.extend(_ddl_conformance(report.ddl, raw.documents))
    elif require_ddl:
        report.problems.append(
            Problem(
                str(files[0]),
                None,
                "ddl-missing",
                "mmcif_ddl.dic not found: pass --ddl, set MXCAT_MMCIF_DDL, or install Debian's libcifpp-data "
                "(use --no-ddl to skip DDL2 conformance on purpose)",
            )
        )
    report.problems.extend(_house_rules(onto))
    report.pdbx = find_reference(pdbx, "MXCAT_PDBX_DIC", PDBX_SEARCH)
    report.problems.extend(_pdbx_rules(onto, report.pdbx))
    return report


# ------------------------------------------------------------------------------------------------
# DDL2 conformance


class _Collector:
    """A gemmi logger: gemmi calls write() with each message."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def write(self, msg: str) -> None:
        parts = [line.strip() for line in str(msg).splitlines() if line.strip()]
        if parts:
            self.messages.append(parts[0] + (" " + ", ".join(parts[1:]) if parts[1:] else ""))

    def flush(self) -> None:
        pass


_MSG = re.compile(r"^(?:(?P<file>.+?):(?P<line>\d+)\s+)?\[(?P<where>[^\]]+)\]\s*(?P<what>.*)$")
_TAG = re.compile(r"(_[A-Za-z0-9_\[\]%-]+\.[A-Za-z0-9_\[\]%-]+)")


def _ddl_conformance(ddl_path: Path, documents: dict[Path, gemmi.cif.Document]) -> list[Problem]:
    setup = _Collector()
    validator = gemmi.cif.Ddl(logger=setup, use_regex=False, use_linked_groups=False)
    ddl_docs = [read_document(ddl_path)]
    ext = next((d for p, d in documents.items() if p.name == EXTENSION_NAME), None)
    if ext is not None:
        ddl_docs.append(read_document(next(p for p in documents if p.name == EXTENSION_NAME)))
    problems = _regex_conformance(ddl_docs, documents)  # before read_ddl, which consumes the documents
    for d in ddl_docs:
        validator.read_ddl(d)
    for path, doc in documents.items():
        log = _Collector()
        validator.set_logger(log)
        validator.validate_cif(doc)
        frames = _frame_lines(doc)
        for msg in log.messages:
            if "has undefined type" in msg:
                continue  # gemmi forgets types when its regex checks are off; types are checked above
            m = _MSG.match(msg)
            where, what = (m.group("where"), m.group("what")) if m else ("", msg)
            line = int(m.group("line")) if m and m.group("line") else frames.get(where.lower())
            tag = _TAG.search(what)
            if tag and where.lower() in frames:
                line = _tag_line(doc, where, tag.group(1)) or line
            problems.append(Problem(str(path), line, "ddl2", what))
    return problems


def _frame_lines(doc: gemmi.cif.Document) -> dict[str, int]:
    out: dict[str, int] = {}
    for block in doc:
        out[block.name.lower()] = 1
        for it in block:
            if it.frame is not None:
                out[it.frame.name.lower()] = it.line_number
    return out


def _tag_line(doc: gemmi.cif.Document, frame_name: str, tag: str) -> int | None:
    for block in doc:
        frame = block.find_frame(frame_name)
        if frame is None:
            continue
        for it in frame:
            if it.pair is not None and it.pair[0].lower() == tag.lower():
                return it.line_number
            if it.loop is not None and tag.lower() in (t.lower() for t in it.loop.tags):
                return it.line_number
    return None


def _regex_conformance(
    ddl_docs: list[gemmi.cif.Document], documents: dict[Path, gemmi.cif.Document]
) -> list[Problem]:
    """Check every DDL attribute value against the regular expression of its DDL type (Python re)."""
    problems: list[Problem] = []
    type_rx: dict[str, re.Pattern[str]] = {}
    attr_type: dict[str, str] = {}
    for ddl_doc in ddl_docs:
        for block in ddl_doc:
            for row in block.find("_item_type_list.", ["code", "construct"]):
                code, construct = text(row[0]), text(row[1])
                if code and construct and code not in type_rx:
                    try:
                        type_rx[code] = re.compile(construct, re.DOTALL)
                    except re.error as err:
                        problems.append(Problem("<ddl>", None, "regex", f"type {code!r}: bad regular expression: {err}"))
            for it in block:
                f = it.frame
                if f is not None and f.name.startswith("_"):
                    code = text(f.find_value("_item_type.code"))
                    if code:
                        attr_type.setdefault(f.name.lower(), code)
    for path, doc in documents.items():
        for block in doc:
            for scope in [block] + [it.frame for it in block if it.frame is not None]:
                for it in scope:
                    if it.pair is not None:
                        tags, rows, line = [it.pair[0]], [[it.pair[1]]], it.line_number
                    elif it.loop is not None:
                        lp = it.loop
                        tags, line = list(lp.tags), it.line_number
                        rows = [[lp[r, c] for c in range(lp.width())] for r in range(lp.length())]
                    else:
                        continue
                    for c, tag in enumerate(tags):
                        rx = type_rx.get(attr_type.get(tag.lower(), ""))
                        if rx is None:
                            continue
                        for row in rows:
                            v = row[c]
                            if gemmi.cif.is_null(v):
                                continue
                            if not rx.fullmatch(gemmi.cif.as_string(v)):
                                problems.append(Problem(str(path), line, "ddl2",
                                                        f"value {gemmi.cif.as_string(v)!r} of {tag} does not match type {attr_type[tag.lower()]!r}"))
    return problems


def _where(documents: dict[Path, gemmi.cif.Document], tag: str) -> str:
    for path, doc in documents.items():
        for block in doc:
            if block.find_value(tag) is not None or block.find_loop(tag):
                return str(path)
    return next(iter(documents), Path("?")).__str__()


# ------------------------------------------------------------------------------------------------
# House rules


def _p(item: ItemDef, rule: str, message: str, severity: str = "error", *, tag: str | None = None) -> Problem:
    line = item.line_of(tag) if tag else item.line
    return Problem(item.path or "?", line, rule, f"{item.name}: {message}", severity)


def _house_rules(onto: Ontology) -> list[Problem]:
    out: list[Problem] = []
    raw = onto.raw
    for name, path, line, first in raw.duplicates:
        out.append(Problem(path, line, "duplicate", f"{name} is defined again (first at {first})"))
    for comp in onto.components:
        if not SEMVER.match(comp.version):
            out.append(Problem(str(comp.path), None, "version", f"_dictionary.version {comp.version!r} is not MAJOR.MINOR.PATCH"))
        if comp.version not in {h[0] for h in comp.history}:
            out.append(Problem(str(comp.path), None, "history", f"_dictionary_history has no row for version {comp.version}"))
    for code in raw.unit_details:
        if code not in raw.units:
            out.append(Problem(_where(raw.documents, "_mmcat_unit.code"), None, "unit-crosswalk", f"unit {code!r} has no _mmcat_unit crosswalk row"))
    regexes = {}
    for code, (_prim, construct) in onto.types.items():
        try:
            regexes[code] = re.compile(construct, re.DOTALL)
        except re.error as err:
            out.append(Problem(_where(raw.documents, "_item_type_list.construct"), None, "regex",
                               f"type {code!r}: bad regular expression {construct!r}: {err}"))

    for cat in onto.categories.values():
        loc = (cat.path or "?", cat.line)
        if cat.storage not in STORAGES:
            out.append(Problem(*loc, "storage", f"category {cat.id}: storage {cat.storage!r} is not one of {', '.join(STORAGES)}"))
        if cat.entity not in ENTITIES:
            out.append(Problem(*loc, "entity", f"category {cat.id}: entity {cat.entity!r} is not one of {', '.join(ENTITIES)}"))
        for key in cat.keys:
            if key not in onto.items:
                out.append(Problem(*loc, "category-key", f"category {cat.id}: key item {key} is not defined"))
        if cat.storage == "flattened":
            sel = onto.items.get(cat.selector_item or "")
            if sel is None or sel.category != cat.id:
                out.append(Problem(*loc, "flatten", f"category {cat.id}: selector item {cat.selector_item!r} is not an item of the category"))
            elif not cat.selector_values:
                out.append(Problem(*loc, "flatten", f"category {cat.id}: no selector values declared"))
            else:
                missing = [v for v in cat.selector_values if v not in sel.enumeration]
                if missing:
                    out.append(Problem(*loc, "flatten", f"category {cat.id}: selector values {missing} are not in the enumeration of {sel.name}"))
        elif cat.selector_item or cat.selector_values:
            out.append(Problem(*loc, "flatten", f"category {cat.id}: selector given but storage is {cat.storage}"))

    for item in onto.items.values():
        if item.category not in onto.categories:
            out.append(_p(item, "category-unknown", f"category {item.category!r} is not defined"))
        if not item.description.strip():
            out.append(_p(item, "description", "no description"))
        if item.type_code not in onto.types:
            out.append(_p(item, "type-unknown", f"type {item.type_code!r} is not in _item_type_list", tag="_item_type.code"))
        if item.is_numeric and not item.units:
            out.append(_p(item, "units-missing", "numeric item without _item_units.code (use 'none' for pure numbers)"))
        if item.units and item.units not in raw.unit_details:
            out.append(_p(item, "units-unknown", f"unit {item.units!r} is not in _item_units_list", tag="_item_units.code"))
        if item.units and not item.is_numeric:
            out.append(_p(item, "units-on-text", f"a {item.kind} item cannot have units", tag="_item_units.code"))
        if item.entity not in ENTITIES:
            out.append(_p(item, "entity", f"entity {item.entity!r} is not one of {', '.join(ENTITIES)}"))
        if item.status not in ("current", "deprecated"):
            out.append(_p(item, "status", f"status {item.status!r} is not current or deprecated"))
        if item.deprecated and (not item.replaced_by or item.replaced_by not in onto.items):
            out.append(_p(item, "deprecation", f"deprecated without an existing replaced_by ({item.replaced_by!r})", tag="_mmcat_item.status"))
        out.extend(_range_rules(item))
        rx = regexes.get(item.type_code)
        if item.enumeration and item.kind == "string" and rx is not None:
            for v in item.enumeration:
                if not rx.fullmatch(v):
                    out.append(_p(item, "enumeration", f"value {v!r} does not fit type {item.type_code!r}", tag="_item_enumeration.value"))
        out.extend(_mapping_rules(onto, item))

    for m in onto.orphan_mappings:
        out.append(Problem(m.path or "?", m.line, "mapping-item", f"mapping of unknown item {m.item}"))
    seen: dict[tuple[str, str, str | None], tuple[str, object]] = {}
    for m in onto.mappings():
        k = (m.scheme, m.target.lower(), normalise_selector(m.target_selector))
        if k in seen and seen[k][0] != m.key:
            out.append(Problem(m.path or "?", m.line, "mapping-duplicate",
                               f"{m.scheme}:{m.target}[{m.target_selector or ''}] maps to both {seen[k][0]} and {m.key}"))
        seen.setdefault(k, (m.key, m))

    from mxcat.ontology.export import icat_parameter_types

    pairs: dict[tuple[str, str], str] = {}
    for names in ("mmcat", "esrf"):
        for pt in icat_parameter_types(onto, names=names):
            k = (pt["name"], pt["units"])
            if k in pairs and pairs[k] != pt["key"]:
                out.append(Problem("<icat export>", None, "icat-unique",
                                   f"ICAT ParameterType {k} ({names} names) comes from both {pairs[k]} and {pt['key']}"))
            pairs.setdefault(k, pt["key"])
        pairs.clear()
    return out


def _range_rules(item: ItemDef) -> list[Problem]:
    out: list[Problem] = []
    for label, rng, tag in (("hard", item.hard_range, "_item_range.minimum"), ("advisory", item.advisory_range, "_pdbx_item_range.minimum")):
        if rng is None:
            continue
        if not item.is_numeric:
            out.append(_p(item, "range", f"{label} range on a {item.kind} item", tag=tag))
            continue
        for lo, hi in rng.rows:
            if lo is not None and hi is not None and lo > hi:
                out.append(_p(item, "range", f"{label} range row ({lo}, {hi}) has minimum above maximum", tag=tag))
    if item.hard_range and item.advisory_range and not item.hard_range.covers(item.advisory_range):
        out.append(_p(item, "range", f"advisory range {item.advisory_range} reaches outside the hard range {item.hard_range}",
                      tag="_pdbx_item_range.minimum"))
    return out


def _mapping_rules(onto: Ontology, item: ItemDef) -> list[Problem]:
    out: list[Problem] = []
    cat = onto.categories.get(item.category)
    for m in item.mappings:
        loc = (m.path or item.path or "?", m.line or item.line)
        if m.scheme not in onto.schemes:
            out.append(Problem(*loc, "mapping-scheme", f"{m.item}: scheme {m.scheme!r} is not declared in _mmcat_mapping_scheme"))
        if m.relation not in RELATIONS:
            out.append(Problem(*loc, "mapping-relation", f"{m.item}: relation {m.relation!r} is not one of {', '.join(RELATIONS)}"))
        elif m.relation != "exact" and not (m.note or "").strip():
            out.append(Problem(*loc, "mapping-note", f"{m.item} -> {m.scheme}:{m.target}: a {m.relation} mapping must say why in a note"))
        if m.units is not None and m.units not in onto.raw.unit_details:
            out.append(Problem(*loc, "mapping-units", f"{m.item}: unit {m.units!r} is not in _item_units_list"))
        if m.selector is None and cat is not None and cat.storage == "flattened" and item.name != cat.selector_item:
            out.append(Problem(*loc, "mapping-selector", f"{m.item}: a mapping of an item of the flattened category {cat.id} "
                                                          f"needs a selector ({', '.join(cat.selector_values)})"))
        if m.selector is not None:
            if cat is None or cat.storage != "flattened":
                out.append(Problem(*loc, "mapping-selector", f"{m.item}: selector {m.selector!r} on an item of a category that is not flattened"))
            elif m.selector not in cat.selector_values:
                out.append(Problem(*loc, "mapping-selector", f"{m.item}: selector {m.selector!r} is not one of {', '.join(cat.selector_values)}"))
        if m.target_selector is not None:
            for part in m.target_selector.split(";"):
                if "=" not in part:
                    out.append(Problem(*loc, "mapping-selector", f"{m.item}: target_selector {m.target_selector!r} is not name=value pairs"))
                    break
    return out


# ------------------------------------------------------------------------------------------------
# PDBx adoption


@dataclass(frozen=True, slots=True)
class PdbxItem:
    type_code: str | None
    units: str | None
    hard_range: RangeSet | None


def read_pdbx_items(path: Path) -> dict[str, PdbxItem]:
    """Type, units and hard range of every item of a PDBx dictionary."""
    doc = read_document(path)
    out: dict[str, PdbxItem] = {}
    for block in doc:
        for it in block:
            f = it.frame
            if f is None or not f.name.startswith("_"):
                continue
            rows = []
            tab = f.find("_item_range.", ["minimum", "maximum"])
            for r in tab:
                rows.append(tuple(None if gemmi.cif.is_null(v) else float(gemmi.cif.as_string(v)) for v in (r[0], r[1])))
            out[f.name.lower()] = PdbxItem(
                text(f.find_value("_item_type.code")),
                text(f.find_value("_item_units.code")),
                RangeSet.from_rows(rows) if rows else None,
            )
    return out


def is_mmcat_name(name: str) -> bool:
    category, item = name.lstrip("_").split(".", 1)
    return category.startswith("mmcat_") or item.startswith("mmcat_")


def _pdbx_rules(onto: Ontology, pdbx: Path | None) -> list[Problem]:
    out: list[Problem] = []
    adopted = [i for i in onto.items.values() if not is_mmcat_name(i.name)]
    if pdbx is None:
        if adopted:
            out.append(Problem(str(onto.components[0].path), None, "pdbx-missing",
                               f"PDBx dictionary not found: {len(adopted)} adopted items not compared "
                               "(pass --pdbx or set MXCAT_PDBX_DIC)", "warning"))
        return out
    ref = read_pdbx_items(pdbx)
    for item in adopted:
        p = ref.get(item.name.lower())
        if p is None:
            out.append(_p(item, "pdbx-redefined", "outside the mmcat namespace but not a PDBx item: new items need the mmcat prefix"))
            continue
        out.extend(compare_with_pdbx(item, p))
    for item in onto.items.values():
        if is_mmcat_name(item.name) and item.name.lower() in ref:
            out.append(_p(item, "pdbx-redefined", "clashes with a PDBx item of the same name"))
    return out


def compare_with_pdbx(item: ItemDef, p: PdbxItem) -> list[Problem]:
    """Differences between an adopted item and its PDBx definition (type, units, hard range)."""
    out = []
    if p.type_code is not None and p.type_code != item.type_code:
        out.append(_p(item, "pdbx-redefined", f"type {item.type_code!r} differs from PDBx {p.type_code!r}", tag="_item_type.code"))
    # PDBx leaves pure numbers without units: mmCAT says 'none', or 'percent' for the PDBx items named percent_*
    percent_item = "percent" in item.item.lower()
    same_units = item.units == p.units or (p.units is None and (item.units == "none" or (item.units == "percent" and percent_item)))
    if not same_units:
        out.append(_p(item, "pdbx-redefined", f"units {item.units!r} differ from PDBx {p.units!r}", tag="_item_units.code"))
    mine = item.hard_range
    if (mine is None) != (p.hard_range is None) or (
        mine is not None and p.hard_range is not None and not (mine.covers(p.hard_range) and p.hard_range.covers(mine))
    ):
        out.append(_p(item, "pdbx-redefined", f"hard range {mine} differs from PDBx {p.hard_range}", tag="_item_range.minimum"))
    return out
