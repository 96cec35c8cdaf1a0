"""Exports derived from mmCAT: ICAT ParameterTypes, a JSON Schema for SciCat, and reference docs.

* ICAT: one ParameterType per flat key (name, units, unitsFullName, valueType NUMERIC / STRING /
  DATE_AND_TIME, minimum/maximum numeric value, permissible string values, description,
  applicableTo*). ICAT makes (name, units) unique per facility; lint checks that the export keeps
  it so. Names are mmCAT flat keys by default; ``names="esrf"`` uses the ESRF ICAT names where a
  mapping gives one (exact or close) and the flat key elsewhere.
* SciCat: a JSON Schema (draft 2020-12) for ``scientificMetadata`` where each key is an object
  ``{"value": ..., "unit": ...}`` with a unit string the SciCat backend can convert.
* Docs: a Markdown reference of every category and item with units, ranges and mappings.
"""

from __future__ import annotations

from typing import Any

from mxcat.ontology.core import Ontology
from mxcat.ontology.model import ItemDef

VALUE_TYPES = {"float": "NUMERIC", "int": "NUMERIC", "string": "STRING", "datetime": "DATE_AND_TIME"}
APPLICABLE = {
    "beamline": ("applicableToInvestigation",),
    "proposal": ("applicableToInvestigation",),
    "session": ("applicableToInvestigation",),
    "sample": ("applicableToSample",),
    "dataset": ("applicableToDataset",),
    "processing": ("applicableToDataset",),
    "image_range": ("applicableToDataset", "applicableToDatafile"),
}
ALL_APPLICABLE = (
    "applicableToInvestigation",
    "applicableToSample",
    "applicableToDataset",
    "applicableToDatafile",
    "applicableToDataCollection",
)


def exported_keys(onto: Ontology) -> list[tuple[str, ItemDef, str | None]]:
    """(flat key, item, selector) for every key a catalogue stores as a parameter.

    Table categories travel as tables, not parameters, and key items (row numbers, ids) are internal.
    """
    out = []
    for key in onto.keys():
        item, selector = onto.lookup(key)
        cat = onto.categories.get(item.category)
        if cat is None or cat.storage == "table" or item.name in cat.keys:
            continue
        if cat.storage == "flattened" and (selector is None or item.name == cat.selector_item):
            continue
        out.append((key, item, selector))
    return out


def _esrf_mapping(item: ItemDef, selector: str | None) -> Any:
    for m in item.mappings:
        if m.scheme == "esrf_icat" and m.selector == selector and m.relation in ("exact", "close"):
            return m
    return None


def icat_parameter_types(onto: Ontology, *, names: str = "mmcat", facility: str | None = None) -> list[dict[str, Any]]:
    """ICAT ParameterType entities (as JSON-ready dicts) for every exported key."""
    if names not in ("mmcat", "esrf"):
        raise ValueError(f"names must be 'mmcat' or 'esrf', not {names!r}")
    out = []
    for key, item, selector in exported_keys(onto):
        esrf = _esrf_mapping(item, selector) if names == "esrf" else None
        name = esrf.target if esrf is not None else key
        unit_code = (esrf.units if esrf is not None and esrf.units else None) or item.units or "none"
        units = onto.units.spelling(unit_code, "icat") if item.is_numeric else "N/A"
        full = onto.units.spelling(unit_code, "icat_full_name") if item.is_numeric else "not applicable"
        pt: dict[str, Any] = {
            "key": key,
            "name": name,
            "units": units or "N/A",
            "unitsFullName": full or "",
            "valueType": VALUE_TYPES[item.kind],
            "description": _description(item, selector),
            "enforced": bool(item.enumeration),
            "verified": True,
        }
        for flag in ALL_APPLICABLE:
            pt[flag] = flag in APPLICABLE.get(item.entity, ())
        if item.hard_range is not None and item.is_numeric:
            scale, offset = (1.0, 0.0) if unit_code == (item.units or "none") else onto.units.factor(item.units or "none", unit_code)
            if item.hard_range.minimum is not None:
                pt["minimumNumericValue"] = item.hard_range.minimum * scale + offset
            if item.hard_range.maximum is not None:
                pt["maximumNumericValue"] = item.hard_range.maximum * scale + offset
        if item.enumeration:
            pt["permissibleStringValues"] = [{"value": v} for v in item.enumeration]
        if facility:
            pt["facility"] = {"name": facility}
        out.append(pt)
    return out


def _description(item: ItemDef, selector: str | None) -> str:
    text = " ".join(item.description.split())
    if selector:
        text += f" (row: {selector})"
    return text[:255] if len(text) > 255 else text


def scicat_field_name(key: str) -> str:
    """The ``scientificMetadata`` field name of a flat mmCAT key, as the scicat sink stores it:
    ``reflns.d_resolution_high`` -> ``reflns%2Ed_resolution_high`` (MongoDB, under SciCat, cannot
    address field names with dots; ``%`` and a leading ``$`` are escaped the same way)."""
    out = key.replace("%", "%25").replace(".", "%2E").replace("\x00", "%00")
    return "%24" + out[1:] if out.startswith("$") else out


def scicat_key_of(name: str) -> str:
    """The flat key behind a field name written by :func:`scicat_field_name` (or by SciCat's own encoding)."""
    return name.replace("%2E", ".").replace("%2e", ".").replace("%24", "$").replace("%00", "\x00").replace("%25", "%")


def scicat_schema(onto: Ontology) -> dict[str, Any]:
    """JSON Schema for SciCat ``scientificMetadata`` built from mmCAT, keyed by the field names the
    scicat sink writes (:func:`scicat_field_name`); each property names its mmCAT key in ``x-mmcat-key``."""
    props: dict[str, Any] = {}
    for key, item, selector in exported_keys(onto):
        value: dict[str, Any]
        if item.kind == "float":
            value = {"type": "number"}
        elif item.kind == "int":
            value = {"type": "integer"}
        elif item.kind == "datetime":
            value = {"type": "string", "format": "date-time" if item.type_code == "iso8601" else "date"}
        else:
            value = {"type": "string"}
            if item.enumeration:
                value["enum"] = list(item.enumeration)
        if item.is_numeric and item.hard_range is not None:
            rng = item.hard_range
            if rng.minimum is not None:
                lo_closed = any(iv.lo == rng.minimum and iv.lo_closed for iv in rng.intervals)
                value["minimum" if lo_closed else "exclusiveMinimum"] = rng.minimum
            if rng.maximum is not None:
                hi_closed = any(iv.hi == rng.maximum and iv.hi_closed for iv in rng.intervals)
                value["maximum" if hi_closed else "exclusiveMaximum"] = rng.maximum
        entry: dict[str, Any] = {
            "type": "object",
            "x-mmcat-key": key,
            "title": item.label or key,
            "description": _description(item, selector),
            "properties": {"value": value},
            "required": ["value"],
        }
        if item.is_numeric:
            entry["properties"]["unit"] = {"type": "string", "const": onto.units.spelling(item.units or "none", "scicat")}
        props[scicat_field_name(key)] = entry
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://mxcat.invalid/schemas/mmcat-scientific-metadata.json",
        "title": "mmCAT scientific metadata for SciCat",
        "description": f"Generated by mxcat from mmCAT ({onto.version}).",
        "type": "object",
        "properties": props,
        "additionalProperties": True,
    }


def markdown_reference(onto: Ontology) -> str:
    """A Markdown reference of every category and item, with units, ranges and mappings."""
    lines = ["# mmCAT reference", "", f"Dictionaries: {', '.join(f'{c.name} {c.version}' for c in onto.components)}", ""]
    lines.append("## Categories")
    lines.append("")
    for cid in sorted(onto.categories):
        lines.append(f"- [{cid}](#{cid.replace('_', '-')}) — {onto.categories[cid].storage}, {onto.categories[cid].entity}")
    lines.append("")
    by_cat: dict[str, list[ItemDef]] = {}
    for item in onto.items.values():
        by_cat.setdefault(item.category, []).append(item)
    for cid in sorted(onto.categories):
        cat = onto.categories[cid]
        lines += [f"## {cid}", "", " ".join(cat.description.split()), ""]
        lines.append(f"Storage: **{cat.storage}**; entity: **{cat.entity}**; defined in `{cat.component}`.")
        if cat.storage == "flattened":
            lines.append(f"Rows are selected by `{cat.selector_item}`: {', '.join(cat.selector_values)}.")
        lines.append("")
        for item in sorted(by_cat.get(cid, []), key=lambda i: i.name):
            lines.append(f"### `{item.name}`")
            lines.append("")
            lines.append(" ".join(item.description.split()))
            lines.append("")
            facts = [f"type `{item.type_code}` ({item.kind})"]
            if item.units:
                facts.append(f"units `{item.units}`")
            if item.hard_range:
                facts.append(f"range {item.hard_range}")
            if item.advisory_range:
                facts.append(f"usual {item.advisory_range}")
            if item.enumeration:
                facts.append("values " + ", ".join(f"`{v}`" for v in item.enumeration))
            if item.deprecated:
                facts.append(f"**deprecated**, use `{item.replaced_by}`")
            lines.append("- " + "; ".join(facts))
            if item.mappings:
                lines.append("- mappings:")
                for m in item.mappings:
                    sel = f" [{m.target_selector}]" if m.target_selector else ""
                    row = f" → row `{m.selector}`" if m.selector else ""
                    unit = f", in `{m.units}`" if m.units else ""
                    note = f" — {m.note}" if m.note else ""
                    lines.append(f"  - {m.scheme}: `{m.target}`{sel}{row} ({m.relation}{unit}){note}")
            lines.append("")
    return "\n".join(lines) + "\n"
