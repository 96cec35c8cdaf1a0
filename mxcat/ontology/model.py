"""Typed definitions of mmCAT categories, items, ranges and mappings.

These are plain frozen-ish dataclasses built once by :mod:`mxcat.ontology.loader` from the DDL2
dictionaries. Range semantics follow DDL2 (mmcif_ddl.dic, category ITEM_RANGE): the rows of a range
loop are alternatives joined by OR; a row whose minimum equals its maximum admits exactly that value,
any other row is an open interval, and an omitted bound ('.') is unbounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

ENTITIES = ("beamline", "proposal", "session", "sample", "dataset", "processing", "image_range")
"""Subject levels an item can apply to, from the facility down to a range of images."""

RELATIONS = ("exact", "close", "broader", "narrower", "related")
"""How a mapped name relates to the mmCAT item (SKOS-like)."""

STORAGES = ("single", "flattened", "table")
"""How a category travels to catalogues: one row per subject, one row per selector value, or a table."""


@dataclass(frozen=True, slots=True)
class Interval:
    """One interval of permitted values; ``None`` bounds are unbounded."""

    lo: float | None
    hi: float | None
    lo_closed: bool
    hi_closed: bool

    def contains(self, x: float) -> bool:
        if self.lo is not None and (x < self.lo or (x == self.lo and not self.lo_closed)):
            return False
        if self.hi is not None and (x > self.hi or (x == self.hi and not self.hi_closed)):
            return False
        return True

    def __str__(self) -> str:
        if self.lo is not None and self.lo == self.hi:
            return f"= {_fmt(self.lo)}"
        if self.lo is None and self.hi is None:
            return "any"
        if self.lo is None:
            return f"{'≤' if self.hi_closed else '<'} {_fmt(self.hi)}"
        if self.hi is None:
            return f"{'≥' if self.lo_closed else '>'} {_fmt(self.lo)}"
        return f"{'[' if self.lo_closed else '('}{_fmt(self.lo)}, {_fmt(self.hi)}{']' if self.hi_closed else ')'}"


def _fmt(x: float | None) -> str:
    if x is None:
        return "∞"
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True, slots=True)
class RangeSet:
    """A union of intervals, normalised from DDL2 range rows."""

    intervals: tuple[Interval, ...]
    rows: tuple[tuple[float | None, float | None], ...] = ()

    @classmethod
    def from_rows(cls, rows: list[tuple[float | None, float | None]]) -> RangeSet:
        """Build from DDL2 (minimum, maximum) rows: equal bounds admit one value, others are open."""
        parts: list[Interval] = []
        for lo, hi in rows:
            if lo is not None and hi is not None and lo == hi:
                parts.append(Interval(lo, hi, True, True))
            else:
                parts.append(Interval(lo, hi, False, False))
        return cls(_merge(parts), tuple(rows))

    def contains(self, x: float) -> bool:
        return any(iv.contains(x) for iv in self.intervals)

    @property
    def minimum(self) -> float | None:
        """Smallest bound over all intervals (None when unbounded below)."""
        los = [iv.lo for iv in self.intervals]
        return None if any(lo is None for lo in los) else min(lo for lo in los if lo is not None)

    @property
    def maximum(self) -> float | None:
        his = [iv.hi for iv in self.intervals]
        return None if any(hi is None for hi in his) else max(hi for hi in his if hi is not None)

    def covers(self, other: RangeSet) -> bool:
        """True when every value admitted by *other* is admitted here (checked on interval bounds)."""
        for iv in other.intervals:
            if not any(_interval_within(iv, mine) for mine in self.intervals):
                return False
        return True

    def __str__(self) -> str:
        return " or ".join(str(iv) for iv in self.intervals) or "none"


def _interval_within(inner: Interval, outer: Interval) -> bool:
    lo_ok = (
        outer.lo is None
        or (inner.lo is not None and (inner.lo > outer.lo or (inner.lo == outer.lo and (outer.lo_closed or not inner.lo_closed))))
    )
    hi_ok = (
        outer.hi is None
        or (inner.hi is not None and (inner.hi < outer.hi or (inner.hi == outer.hi and (outer.hi_closed or not inner.hi_closed))))
    )
    return lo_ok and hi_ok


def _merge(parts: list[Interval]) -> tuple[Interval, ...]:
    """Union of intervals, joining neighbours that touch where at least one side is closed."""

    def lo_key(iv: Interval) -> tuple[float, int]:
        return (-math.inf if iv.lo is None else iv.lo, 0 if iv.lo_closed else 1)

    out: list[Interval] = []
    for iv in sorted(parts, key=lo_key):
        if not out:
            out.append(iv)
            continue
        last = out[-1]
        last_hi = math.inf if last.hi is None else last.hi
        iv_lo = -math.inf if iv.lo is None else iv.lo
        touches = iv_lo < last_hi or (iv_lo == last_hi and (last.hi_closed or iv.lo_closed))
        if not touches:
            out.append(iv)
            continue
        iv_hi = math.inf if iv.hi is None else iv.hi
        if iv_hi > last_hi or (iv_hi == last_hi and iv.hi_closed and not last.hi_closed):
            hi, hi_closed = iv.hi, iv.hi_closed
        else:
            hi, hi_closed = last.hi, last.hi_closed
        lo_closed = last.lo_closed or (iv.lo == last.lo and iv.lo_closed)
        out[-1] = Interval(last.lo, hi, lo_closed, hi_closed)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Mapping:
    """A name in another vocabulary that corresponds to an mmCAT item (or one flattened row of it)."""

    item: str
    """DDL2 item name, e.g. ``_reflns_shell.pdbx_CC_half``."""
    scheme: str
    """Vocabulary, e.g. ``ispyb``, ``ispyb_dls``, ``esrf_icat``, ``nxmx``, ``dials``, ``crystfel``."""
    target: str
    """The name there, e.g. ``AutoProcScalingStatistics.ccHalf``."""
    selector: str | None
    """mmCAT selector value of the flattened row this mapping addresses (``outer``), if any."""
    target_selector: str | None
    """Condition on the other side that picks the row (``scalingStatisticsType=outerShell``)."""
    units: str | None
    """Unit of the value as the other vocabulary stores it (an mmCAT unit code)."""
    relation: str
    note: str | None = None
    path: str | None = None
    line: int | None = None

    @property
    def key(self) -> str:
        """The flat mmCAT key this mapping resolves to."""
        category, item = self.item[1:].split(".", 1)
        return f"{category}.{self.selector}.{item}" if self.selector else f"{category}.{item}"


@dataclass(slots=True)
class UnitDef:
    """A unit code (PDBx spelling) and how other systems spell it."""

    code: str
    detail: str
    pint: str | None
    ucum: str | None
    icat: str | None
    icat_full_name: str | None
    scicat: str | None


@dataclass(slots=True)
class CategoryDef:
    """A DDL2 category with mmCAT's storage declaration."""

    id: str
    description: str
    keys: tuple[str, ...] = ()
    storage: str = "single"
    entity: str = "dataset"
    selector_item: str | None = None
    selector_values: tuple[str, ...] = ()
    component: str = ""
    path: str | None = None
    line: int | None = None


@dataclass(slots=True)
class ItemDef:
    """One data item: everything needed to validate, convert, export and document a value."""

    name: str
    category: str
    type_code: str
    kind: str
    """``float``, ``int``, ``string`` or ``datetime``."""
    units: str | None
    description: str
    hard_range: RangeSet | None = None
    advisory_range: RangeSet | None = None
    enumeration: tuple[str, ...] = ()
    enumeration_detail: dict[str, str] = field(default_factory=dict)
    regex: str | None = None
    entity: str = "dataset"
    entity_explicit: bool = False
    """True when the item states its entity; otherwise it inherits its category's."""
    label: str | None = None
    status: str = "current"
    replaced_by: str | None = None
    mandatory: bool = False
    mappings: list[Mapping] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    component: str = ""
    path: str | None = None
    line: int | None = None
    tag_lines: dict[str, int] = field(default_factory=dict, repr=False)
    """Line of each attribute tag in the definition, for messages that point at one attribute."""

    def line_of(self, tag: str) -> int | None:
        """Line of an attribute (``_item_units.code``) in the definition, else of the definition."""
        return self.tag_lines.get(tag.lower(), self.line)

    @property
    def item(self) -> str:
        """The part after the dot: ``d_resolution_high``."""
        return self.name.split(".", 1)[1]

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("float", "int")

    @property
    def deprecated(self) -> bool:
        return self.status == "deprecated"


@dataclass(slots=True)
class Component:
    """One dictionary file of mmCAT."""

    name: str
    title: str
    version: str
    path: Path
    history: list[tuple[str, str, str]] = field(default_factory=list)
    """(version, date, revision text) rows of ``_dictionary_history``."""
