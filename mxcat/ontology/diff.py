"""Compare two versions of mmCAT and classify the changes for curators.

Breaking changes, which records already stored or programs already written would trip over:
an item or category removed (items are deprecated, never deleted), an item's type kind or units
changed, a hard range narrowed, an enumeration value removed, a flattening selector value removed,
a mapping target now resolving to another key. Everything else (new items, wider ranges, new
mappings, edited descriptions, deprecations) is compatible. A breaking change also needs a new
major version of the component that holds it; the report says so when the version was not bumped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mxcat.ontology.core import Ontology, normalise_selector
from mxcat.ontology.model import Mapping

WIDER_TEXT = {
    "code": {"line", "text", "any", "ucode", "uline"},
    "ucode": {"uline", "text", "any"},
    "line": {"text", "any"},
    "uline": {"text", "any"},
    "text": {"any"},
    "name": {"line", "text", "any"},
    "yyyy-mm-dd": {"yyyy-mm-dd:hh:mm-flex", "iso8601"},
    "positive_int": {"int"},
}
"""Type changes that admit every value the old type admitted (compatible)."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    name: str
    detail: str
    breaking: bool
    item: str | None = None
    """For mapping changes: the item whose definition holds the mapping."""

    def __str__(self) -> str:
        flag = "BREAKING" if self.breaking else "compatible"
        return f"{flag:10} {self.kind:18} {self.name}: {self.detail}"


@dataclass
class DiffReport:
    changes: list[Change] = field(default_factory=list)

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return -1


def diff(old: Ontology, new: Ontology) -> DiffReport:
    """Changes from *old* to *new*, breaking ones flagged."""
    out: list[Change] = []
    add = out.append
    for cid in sorted(old.categories.keys() - new.categories.keys()):
        add(Change("category-removed", cid, "category removed", True))
    for cid in sorted(new.categories.keys() - old.categories.keys()):
        add(Change("category-added", cid, "new category", False))
    for cid in sorted(old.categories.keys() & new.categories.keys()):
        a, b = old.categories[cid], new.categories[cid]
        if a.storage != b.storage:
            add(Change("storage-changed", cid, f"storage {a.storage} -> {b.storage}", True))
        lost = sorted(set(a.selector_values) - set(b.selector_values))
        if lost:
            add(Change("selector-removed", cid, f"selector values removed: {', '.join(lost)}", True))
    for name in sorted(old.items.keys() - new.items.keys()):
        add(Change("item-removed", name, "item removed (deprecate it instead)", True))
    for name in sorted(new.items.keys() - old.items.keys()):
        add(Change("item-added", name, "new item", False))
    for name in sorted(old.items.keys() & new.items.keys()):
        a, b = old.items[name], new.items[name]
        if a.kind != b.kind:
            add(Change("type-changed", name, f"{a.type_code} ({a.kind}) -> {b.type_code} ({b.kind})", True))
        elif a.type_code != b.type_code:
            wider = WIDER_TEXT.get(a.type_code, set())
            add(Change("type-changed", name, f"{a.type_code} -> {b.type_code} (same kind)", b.type_code not in wider))
        if (a.units or "none") != (b.units or "none"):
            add(Change("units-changed", name, f"{a.units} -> {b.units}", True))
        ra, rb = a.hard_range, b.hard_range
        same = (ra is None and rb is None) or (ra is not None and rb is not None and ra.covers(rb) and rb.covers(ra))
        if not same:
            wider = rb is None or (ra is not None and rb.covers(ra))
            add(Change("range-widened" if wider else "range-narrowed", name, f"{ra or 'any'} -> {rb or 'any'}", not wider))
        lost = sorted(set(a.enumeration) - set(b.enumeration))
        if lost and a.enumeration and b.enumeration:
            add(Change("enum-removed", name, f"values removed: {', '.join(lost)}", True))
        if b.enumeration and not a.enumeration:
            add(Change("enum-introduced", name, f"values now restricted to {', '.join(b.enumeration)}", True))
        if a.enumeration and not b.enumeration:
            add(Change("enum-dropped", name, "values no longer restricted", False))
        gained = sorted(set(b.enumeration) - set(a.enumeration))
        if gained and a.enumeration:
            add(Change("enum-added", name, f"values added: {', '.join(gained)}", False))
        if a.status != b.status:
            add(Change("status-changed", name, f"{a.status} -> {b.status}", b.status != "deprecated"))
        if " ".join(a.description.split()) != " ".join(b.description.split()):
            add(Change("description", name, "description edited", False))

    def targets(o: Ontology) -> dict[tuple[str, str, str | None], Mapping]:
        return {(m.scheme, m.target.lower(), normalise_selector(m.target_selector)): m for m in o.mappings()}

    ta, tb = targets(old), targets(new)
    for k in sorted(ta.keys() - tb.keys(), key=str):
        add(Change("mapping-removed", f"{k[0]}:{k[1]}", f"no longer maps to {ta[k].key} (resolving it now fails)", True, ta[k].item))
    for k in sorted(tb.keys() - ta.keys(), key=str):
        add(Change("mapping-added", f"{k[0]}:{k[1]}", f"maps to {tb[k].key}", False, tb[k].item))
    for k in sorted(ta.keys() & tb.keys(), key=str):
        ma, mb = ta[k], tb[k]
        if ma.key != mb.key:
            add(Change("mapping-retargeted", f"{k[0]}:{k[1]}", f"{ma.key} -> {mb.key}", True, mb.item))
        if (ma.units or "") != (mb.units or ""):
            add(Change("mapping-units", f"{k[0]}:{k[1]}", f"stored in {ma.units or 'the canonical unit'} -> {mb.units or 'the canonical unit'}", True, mb.item))
        if ma.relation != mb.relation:
            add(Change("mapping-relation", f"{k[0]}:{k[1]}", f"{ma.relation} -> {mb.relation}", False, mb.item))

    if any(c.breaking for c in out):
        old_versions = {c.name: c.version for c in old.components}
        for comp in new.components:
            prev = old_versions.get(comp.name)
            if prev is not None and _major(comp.version) <= _major(prev):
                touched = _touches(comp.name, out, new, old)
                if touched:
                    add(Change("version", comp.name, f"breaking changes but major version not raised ({prev} -> {comp.version})", True))
    return DiffReport(out)


def _touches(component: str, changes: list[Change], new: Ontology, old: Ontology) -> bool:
    for c in changes:
        if not c.breaking:
            continue
        for o in (new, old):
            item = o.items.get(c.item or c.name)
            cat = o.categories.get(c.name)
            if (item is not None and item.component == component) or (cat is not None and cat.component == component):
                return True
    return False
