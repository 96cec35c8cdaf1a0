"""Records: one validated key/value with its unit, attached to a subject and to provenance.

Subjects form the hierarchy catalogues share: facility/beamline → proposal → session (visit) →
sample → dataset (a raw data collection) → processing (a derived result, naming its input
datasets) → image range. A subject is identified by its path, so the same path always gives the
same id. Provenance says which program, adapter and source file (with its sha256) produced a
value, and which run: record identity is ``sha256(subject, key, run)``, so ingesting the same
input twice changes nothing, while another processing run of the same dataset is another
processing subject and keeps the earlier results.

Per-image rows and other long loops travel as :class:`Table` objects attached to a subject, never
as thousands of scalar keys. Credentials never enter records: provenance keeps only what is given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from mxcat.errors import ValidationError

LEVELS = ("facility", "beamline", "proposal", "session", "sample", "dataset", "processing", "image_range")
"""Subject levels from the top of the hierarchy down."""

ENTITY_LEVEL = {
    "beamline": "beamline",
    "proposal": "proposal",
    "session": "session",
    "sample": "sample",
    "dataset": "dataset",
    "processing": "processing",
    "image_range": "image_range",
}
"""Which subject level an ontology entity describes."""


_UNSAFE_NAME = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
"""Characters a subject name may not hold: C0 controls (newline, tab, NUL...), DEL, lone surrogates, non-characters."""


def _h(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Subject:
    """A node of the catalogue hierarchy, identified by its path from the facility down."""

    facility: str | None = None
    beamline: str | None = None
    proposal: str | None = None
    session: str | None = None
    sample: str | None = None
    dataset: str | None = None
    processing: str | None = None
    image_range: str | None = None
    inputs: tuple[str, ...] = ()
    """For processing subjects: ids of the input datasets (the primary one is the parent)."""
    _cache: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        for level in LEVELS:
            v = getattr(self, level)
            if v is not None:
                if not isinstance(v, str) or not v.strip() or "/" in v or _UNSAFE_NAME.search(v):
                    raise ValidationError(f"subject.{level}", v, "a subject name is non-empty text without '/', control "
                                          "characters or non-characters (catalogues and XML messages cannot carry them)")
        if self.kind is None:
            raise ValidationError("subject", None, "a subject needs at least a facility or beamline")

    @property
    def kind(self) -> str | None:
        """The deepest level set (``facility`` and ``beamline`` both give ``beamline``)."""
        deepest = None
        for level in LEVELS:
            if getattr(self, level) is not None:
                deepest = level
        return "beamline" if deepest == "facility" else deepest

    @property
    def path(self) -> str:
        """``beamline=ID30A-1/proposal=mx2532/...``: the human-readable identity."""
        p = self._cache.get("path")
        if p is None:
            p = self._cache["path"] = "/".join(f"{lv}={getattr(self, lv)}" for lv in LEVELS if getattr(self, lv) is not None)
        return p

    @property
    def id(self) -> str:
        i = self._cache.get("id")
        if i is None:
            i = self._cache["id"] = _h("subject", self.path)
        return i

    def at(self, level: str) -> Subject | None:
        """This subject cut at *level* (an ancestor or itself), or None when that level is not set."""
        lvl = "beamline" if level == "facility" else level
        if lvl == "beamline":
            if self.facility is None and self.beamline is None:
                return None
            return Subject(facility=self.facility, beamline=self.beamline)
        if getattr(self, lvl) is None:
            return None
        keep = LEVELS[: LEVELS.index(lvl) + 1]
        return Subject(**{k: getattr(self, k) for k in keep}, inputs=self.inputs if lvl == "processing" else ())

    @property
    def parent(self) -> Subject | None:
        levels = [lv for lv in LEVELS if getattr(self, lv) is not None]
        if len(levels) <= 1 or (len(levels) == 2 and levels[0] == "facility"):
            return None
        return self.at(levels[-2])

    def child(self, **levels: str) -> Subject:
        return replace(self, **levels)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {level: getattr(self, level) for level in LEVELS if getattr(self, level) is not None}
        if self.inputs:
            d["inputs"] = list(self.inputs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Subject:
        unknown = set(d) - set(LEVELS) - {"inputs", "id", "kind", "path"}
        if unknown:
            raise ValidationError("subject", dict(d), f"unknown subject fields {sorted(unknown)}; known: {', '.join(LEVELS)}, inputs")
        kw = {level: (str(d[level]) if d.get(level) is not None else None) for level in LEVELS}
        return cls(**kw, inputs=tuple(d.get("inputs") or ()))

    @classmethod
    def parse(cls, text: str) -> Subject:
        """Parse a path such as ``beamline=ID30A-1/proposal=mx2532``."""
        kw: dict[str, str] = {}
        for part in text.strip().strip("/").split("/"):
            level, sep, value = part.partition("=")
            if not sep or level not in LEVELS:
                raise ValidationError("subject", text, f"expected level=name parts with levels {', '.join(LEVELS)}")
            kw[level] = value
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where values came from. ``run`` makes record identity deterministic."""

    run: str
    program: str | None = None
    version: str | None = None
    adapter: str | None = None
    source: str | None = None
    sha256: str | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @property
    def id(self) -> str:
        i = self._cache.get("id")
        if i is None:
            i = self._cache["id"] = _h("provenance", self.run, self.program or "", self.version or "", self.adapter or "",
                                       self.source or "", self.sha256 or "")
        return i

    def to_dict(self) -> dict[str, Any]:
        d = self._cache.get("dict")
        if d is None:
            d = self._cache["dict"] = {f.name: getattr(self, f.name) for f in fields(self)
                                       if not f.name.startswith("_") and getattr(self, f.name) is not None}
        return dict(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(d) - known - {"id"}
        if unknown:
            raise ValidationError("provenance", dict(d), f"unknown provenance fields {sorted(unknown)}")
        if not d.get("run"):
            raise ValidationError("provenance.run", None, "a provenance needs a run identifier")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True, slots=True)
class Record:
    """One validated value of a canonical mmCAT key, in the key's canonical unit."""

    subject: Subject
    key: str
    value: float | int | str
    unit: str | None
    provenance: Provenance
    warnings: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return _h("record", self.subject.id, self.key, self.provenance.run)

    def to_envelope(self) -> dict[str, Any]:
        return {
            "type": "record",
            "id": self.id,
            "subject": self.subject.to_dict(),
            "subject_id": self.subject.id,
            "key": self.key,
            "value": self.value,
            "unit": self.unit,
            "provenance": self.provenance.to_dict(),
            "provenance_id": self.provenance.id,
        }


@dataclass(frozen=True, slots=True)
class Table:
    """A long loop (per-image rows, all resolution shells, a radial profile) attached to a subject."""

    subject: Subject
    category: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    provenance: Provenance

    @property
    def id(self) -> str:
        return _h("table", self.subject.id, self.category, self.provenance.run)

    def to_envelope(self) -> dict[str, Any]:
        return {
            "type": "table",
            "id": self.id,
            "subject": self.subject.to_dict(),
            "subject_id": self.subject.id,
            "category": self.category,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
            "provenance": self.provenance.to_dict(),
            "provenance_id": self.provenance.id,
        }


@dataclass(slots=True)
class Observation:
    """An unvalidated value as an adapter or a client states it."""

    key: str
    value: Any
    unit: str | None = None
    subject: Subject | None = None
    """Set when the value belongs elsewhere than the batch subject (for example another shell's result)."""
    scheme: str | None = None
    """Vocabulary of *key* when it is a mapped name (``ispyb``, ``esrf_icat``...); its unit applies when *unit* is None."""
    selector: str | None = None
    """Row condition of a mapped name, such as ``scalingStatisticsType=outerShell``."""


@dataclass(slots=True)
class Batch:
    """What one ingest call stores: observations and tables for a subject, under one provenance."""

    subject: Subject
    provenance: Provenance
    observations: list[Observation] = field(default_factory=list)
    tables: list[tuple[Subject | None, str, list[Mapping[str, Any]]]] = field(default_factory=list)

    def add(self, key: str, value: Any, unit: str | None = None, *, subject: Subject | None = None,
            scheme: str | None = None, selector: str | None = None) -> Batch:
        """Add a value of a canonical key, or of a name in another vocabulary (give its *scheme*)."""
        self.observations.append(Observation(key, value, unit, subject, scheme, selector))
        return self

    def add_many(self, values: Mapping[str, Any] | Iterable[tuple[str, Any, str | None]]) -> Batch:
        items = values.items() if isinstance(values, Mapping) else values
        for entry in items:
            if isinstance(values, Mapping):
                key, v = entry
                if isinstance(v, Mapping):
                    self.add(key, v.get("value"), v.get("unit"))
                else:
                    self.add(key, v)
            else:
                self.add(*entry)
        return self

    def add_table(self, category: str, rows: Iterable[Mapping[str, Any]], *, subject: Subject | None = None) -> Batch:
        self.tables.append((subject, category, list(rows)))
        return self


def batch_from_json(doc: Mapping[str, Any]) -> Batch:
    """A batch from mxcat's JSON push format.

    ``{"subject": {...levels...}, "provenance": {"run": ..., "program": ...},
    "values": {"key": value | {"value": v, "unit": u}}, "tables": {"category": [{column: value}, ...]}}``
    """
    if not isinstance(doc, Mapping):
        raise ValidationError("document", type(doc).__name__, "expected a JSON object")
    unknown = set(doc) - {"subject", "provenance", "values", "tables", "format"}
    if unknown:
        raise ValidationError("document", sorted(unknown), "unknown top-level fields; expected subject, provenance, values, tables")
    subject = Subject.from_dict(doc.get("subject") or {})
    provenance = Provenance.from_dict(doc.get("provenance") or {"run": "default"})
    batch = Batch(subject, provenance)
    values = doc.get("values") or {}
    if not isinstance(values, Mapping):
        raise ValidationError("values", type(values).__name__, "expected an object of key: value")
    batch.add_many(values)
    tables = doc.get("tables") or {}
    if not isinstance(tables, Mapping):
        raise ValidationError("tables", type(tables).__name__, "expected an object of category: rows")
    for category, rows in tables.items():
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise ValidationError(f"tables.{category}", None, "expected a list of objects")
        batch.add_table(category, rows)
    return batch


def dumps(envelope: Mapping[str, Any]) -> str:
    """Canonical JSON of an envelope (sorted keys, no spaces): equal content gives equal text."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
