"""Read the mmCAT DDL2 dictionaries with gemmi into typed definitions.

A dictionary set is the DDL extension (``mmcat_ddl-ext.dic``: attribute definitions, the type list,
the unit list and its crosswalk, the mapping schemes) plus the component dictionaries. Every
definition remembers its file and line so that lint and validation messages can point at it.
The packaged set is found through :mod:`importlib.resources`; a checkout's ``ontology/`` directory is
used when mxcat runs from source without a build.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import gemmi

from mxcat.errors import OntologyError
from mxcat.ontology.model import (
    CategoryDef,
    Component,
    ItemDef,
    Mapping,
    RangeSet,
    UnitDef,
)

EXTENSION_NAME = "mmcat_ddl-ext.dic"

INT_TYPES = frozenset({"int", "positive_int"})
FLOAT_TYPES = frozenset({"float"})
DATETIME_TYPES = frozenset({"yyyy-mm-dd", "yyyy-mm-dd:hh:mm", "yyyy-mm-dd:hh:mm-flex", "iso8601"})


def default_directory() -> Path:
    """Directory holding the dictionaries: the packaged copy, else the checkout's ``ontology/``."""
    packaged = importlib.resources.files("mxcat") / "_ontology"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "ontology"
    if checkout.is_dir():
        return checkout
    raise OntologyError("no mmCAT dictionaries found: the package was built without ontology/")


def dictionary_files(paths: Iterable[str | Path] | None = None) -> list[Path]:
    """Expand directories to their ``*.dic`` files, extension first; default: the shipped set."""
    if paths is None:
        paths = [default_directory()]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.dic")))
        elif p.is_file():
            files.append(p)
        else:
            raise OntologyError("no such dictionary file or directory", path=p)
    if not files:
        raise OntologyError("no *.dic files given")
    if not any(f.name == EXTENSION_NAME for f in files):
        shipped = default_directory() / EXTENSION_NAME
        if shipped.is_file():
            files.append(shipped)
    files.sort(key=lambda f: (f.name != EXTENSION_NAME, f.name))
    return files


def read_document(path: Path) -> gemmi.cif.Document:
    """Parse one CIF file; syntax errors become :class:`OntologyError` with the line."""
    try:
        return gemmi.cif.read_file(str(path))
    except (RuntimeError, ValueError, OSError) as err:
        msg = str(err)
        m = re.match(rf"^{re.escape(str(path))}:(\d+)(?::\d+)?(?:\(\d+\))?:?\s*(?:in data_\S+:\s*)?(.*)$", msg, re.S)
        line, reason = (int(m.group(1)), m.group(2).strip()) if m else (None, msg)
        raise OntologyError(f"CIF syntax error: {reason}", path=path, line=line) from err


def text(value: str | None) -> str | None:
    """A CIF token as a Python string; ``?`` and ``.`` become None."""
    if value is None or gemmi.cif.is_null(value):
        return None
    return gemmi.cif.as_string(value).strip()


def number(value: str | None, *, path: Path, line: int | None, what: str) -> float | None:
    s = text(value)
    if s is None:
        return None
    try:
        return float(re.sub(r"\(\d+\)$", "", s))
    except ValueError as err:
        raise OntologyError(f"{what}: {s!r} is not a number", path=path, line=line) from err


@dataclass
class RawSet:
    """Everything read from a set of files, before cross-references are resolved."""

    components: list[Component] = field(default_factory=list)
    categories: dict[str, CategoryDef] = field(default_factory=dict)
    items: dict[str, ItemDef] = field(default_factory=dict)
    units: dict[str, UnitDef] = field(default_factory=dict)
    unit_details: dict[str, str] = field(default_factory=dict)
    types: dict[str, tuple[str, str]] = field(default_factory=dict)
    """type code -> (primitive code, regex construct)"""
    schemes: dict[str, str] = field(default_factory=dict)
    loose_mappings: list[Mapping] = field(default_factory=list)
    duplicates: list[tuple[str, str, int | None, str]] = field(default_factory=list)
    """(name, path, line, first location) of definitions that appeared a second time."""
    documents: dict[Path, gemmi.cif.Document] = field(default_factory=dict)


def _tag_lines(block: gemmi.cif.Block) -> dict[str, int]:
    lines: dict[str, int] = {}
    for it in block:
        if it.pair is not None:
            lines.setdefault(it.pair[0].lower(), it.line_number)
        elif it.loop is not None:
            for tag in it.loop.tags:
                lines.setdefault(tag.lower(), it.line_number)
    return lines


def _table(block: gemmi.cif.Block, prefix: str, tags: list[str]) -> list[dict[str, str | None]]:
    """Rows of a category (pairs or loop) as dicts; tags starting with '?' are optional."""
    tab = block.find(prefix, tags)
    rows: list[dict[str, str | None]] = []
    if not tab:
        return rows
    names = [t.lstrip("?") for t in tags]
    for row in tab:
        rows.append({n: (text(row[i]) if row.has(i) else None) for i, n in enumerate(names)})
    return rows


def read_set(paths: Iterable[str | Path] | None = None) -> RawSet:
    """Read all dictionary files into a :class:`RawSet` (no semantic checks beyond parsing)."""
    raw = RawSet()
    for path in dictionary_files(paths):
        doc = read_document(path)
        raw.documents[path] = doc
        for block in doc:
            _read_block(raw, block, path)
    return raw


def _read_block(raw: RawSet, block: gemmi.cif.Block, path: Path) -> None:
    lines = _tag_lines(block)
    name = text(block.find_value("_dictionary.title")) or block.name
    version = text(block.find_value("_dictionary.version")) or ""
    comp = Component(name=name, title=name, version=version, path=path)
    for row in _table(block, "_dictionary_history.", ["version", "?update", "?revision"]):
        comp.history.append((row["version"] or "", row["update"] or "", row["revision"] or ""))
    raw.components.append(comp)

    for row in _table(block, "_item_type_list.", ["code", "primitive_code", "?construct"]):
        if row["code"]:
            raw.types[row["code"]] = (row["primitive_code"] or "char", row["construct"] or ".*")
    for row in _table(block, "_item_units_list.", ["code", "?detail"]):
        if row["code"]:
            raw.unit_details[row["code"]] = row["detail"] or ""
    for row in _table(
        block, "_mmcat_unit.", ["code", "?pint", "?ucum", "?icat", "?icat_full_name", "?scicat"]
    ):
        if row["code"]:
            raw.units[row["code"]] = UnitDef(
                code=row["code"],
                detail="",
                pint=row["pint"],
                ucum=row["ucum"],
                icat=row["icat"],
                icat_full_name=row["icat_full_name"],
                scicat=row["scicat"],
            )
    for row in _table(block, "_mmcat_mapping_scheme.", ["id", "?description"]):
        if row["id"]:
            raw.schemes[row["id"]] = row["description"] or ""
    raw.loose_mappings.extend(_mappings(block, path, lines, None))
    if path.name == EXTENSION_NAME:
        return  # its save frames define DDL attributes, not data items

    for it in block:
        frame = it.frame
        if frame is None:
            continue
        if frame.name.startswith("_"):
            _read_item(raw, frame, path, it.line_number, comp.name)
        else:
            _read_category(raw, frame, path, it.line_number, comp.name)


def _read_category(raw: RawSet, frame: gemmi.cif.Block, path: Path, line: int, comp: str) -> None:
    cid = text(frame.find_value("_category.id"))
    if cid is None:
        raise OntologyError(f"save frame {frame.name!r} has no _category.id", path=path, line=line)
    keys = tuple(v for v in (text(x) for x in frame.find_values("_category_key.name")) if v)
    cat = CategoryDef(
        id=cid,
        description=text(frame.find_value("_category.description")) or "",
        keys=keys,
        component=comp,
        path=str(path),
        line=line,
    )
    storage = text(frame.find_value("_mmcat_category.storage"))
    if storage:
        cat.storage = storage
    entity = text(frame.find_value("_mmcat_category.entity"))
    if entity:
        cat.entity = entity
    cat.selector_item = text(frame.find_value("_mmcat_category.selector_item"))
    cat.selector_values = tuple(
        v for v in (text(x) for x in frame.find_values("_mmcat_category_selector.value")) if v
    )
    if cid in raw.categories:
        first = raw.categories[cid]
        raw.duplicates.append((cid, str(path), line, f"{first.path}:{first.line}"))
    raw.categories[cid] = cat


def _read_item(raw: RawSet, frame: gemmi.cif.Block, path: Path, line: int, comp: str) -> None:
    lines = _tag_lines(frame)
    names = [text(x) for x in frame.find_values("_item.name")]
    name = next((n for n in names if n and n.lower() == frame.name.lower()), None) or frame.name
    cat = text(frame.find_value("_item.category_id")) or name[1:].split(".", 1)[0]
    type_code = text(frame.find_value("_item_type.code")) or ""

    def rng(prefix: str) -> RangeSet | None:
        rows = _table(frame, prefix, ["minimum", "maximum"])
        if not rows:
            return None
        ln = lines.get(prefix + "minimum")
        return RangeSet.from_rows(
            [
                (
                    number(r["minimum"], path=path, line=ln, what=f"{name} range minimum"),
                    number(r["maximum"], path=path, line=ln, what=f"{name} range maximum"),
                )
                for r in rows
            ]
        )

    enum_rows = _table(frame, "_item_enumeration.", ["value", "?detail"])
    item = ItemDef(
        name=name,
        category=cat,
        type_code=type_code,
        kind="string",
        units=text(frame.find_value("_item_units.code")),
        description=text(frame.find_value("_item_description.description")) or "",
        hard_range=rng("_item_range."),
        advisory_range=rng("_pdbx_item_range."),
        enumeration=tuple(r["value"] for r in enum_rows if r["value"] is not None),
        enumeration_detail={r["value"]: r["detail"] or "" for r in enum_rows if r["value"] is not None},
        mandatory=(text(frame.find_value("_item.mandatory_code")) or "no") == "yes",
        aliases=tuple(v for v in (text(x) for x in frame.find_values("_item_aliases.alias_name")) if v),
        component=comp,
        path=str(path),
        line=line,
        tag_lines=lines,
    )
    for attr in ("entity", "label", "status", "replaced_by"):
        value = text(frame.find_value(f"_mmcat_item.{attr}"))
        if value:
            setattr(item, attr, value)
            if attr == "entity":
                item.entity_explicit = True
    item.mappings.extend(_mappings(frame, path, lines, name))
    if name in raw.items:
        first = raw.items[name]
        raw.duplicates.append((name, str(path), line, f"{first.path}:{first.line}"))
    raw.items[name] = item


def _mappings(
    block: gemmi.cif.Block, path: Path, lines: dict[str, int], default_item: str | None
) -> list[Mapping]:
    tags = ["scheme", "target", "?name", "?selector", "?target_selector", "?units", "?relation", "?note"]
    rows = _table(block, "_mmcat_item_mapping.", tags)
    first = lines.get("_mmcat_item_mapping.scheme")
    loop_header = sum(1 for t in lines if t.startswith("_mmcat_item_mapping."))
    out: list[Mapping] = []
    for i, r in enumerate(rows):
        item = r["name"] or default_item
        row_line = (first + loop_header + 1 + i) if (first and len(rows) > 1) else first
        if item is None:
            raise OntologyError(
                "_mmcat_item_mapping outside a save frame needs _mmcat_item_mapping.name", path=path, line=row_line
            )
        out.append(
            Mapping(
                item=item,
                scheme=r["scheme"] or "",
                target=r["target"] or "",
                selector=r["selector"],
                target_selector=r["target_selector"],
                units=r["units"],
                relation=r["relation"] or "exact",
                note=r["note"],
                path=str(path),
                line=row_line,
            )
        )
    return out


def kind_of(type_code: str, types: dict[str, tuple[str, str]]) -> str:
    """``float``, ``int``, ``datetime`` or ``string`` for a DDL2 type code."""
    if type_code in INT_TYPES:
        return "int"
    if type_code in FLOAT_TYPES:
        return "float"
    if type_code in DATETIME_TYPES:
        return "datetime"
    return "string"
