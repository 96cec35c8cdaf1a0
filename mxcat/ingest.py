"""Turn a :class:`~mxcat.records.Batch` into validated records and tables, one value at a time.

Every observation is resolved to its canonical key (mapped names are accepted), validated and
converted to the canonical unit. An invalid value is rejected alone, with its key, value and
reason; the rest of the batch is kept. A value whose key describes a higher level of the hierarchy
than the batch subject (a wavelength found in a processing log belongs to the dataset) is attached
to that ancestor; a key that describes a deeper level than the subject is rejected with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mxcat.errors import ValidationError
from mxcat.ontology import Ontology
from mxcat.records import LEVELS, Batch, Record, Subject, Table


@dataclass(frozen=True, slots=True)
class Rejection:
    """A value that was not stored, and why."""

    key: str
    value: Any
    reason: str
    subject: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.reason}"


@dataclass(slots=True)
class Prepared:
    records: list[Record] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def warnings(self) -> list[tuple[str, str]]:
        return [(r.key, w) for r in self.records for w in r.warnings]


def _level_index(level: str) -> int:
    return LEVELS.index("beamline" if level == "facility" else level)


def route(subject: Subject, entity: str) -> Subject:
    """The subject a key of *entity* belongs to, starting from *subject*; raises when it cannot."""
    kind = subject.kind or "beamline"
    if entity == kind:
        return subject
    if _level_index(entity) < _level_index(kind):
        target = subject.at(entity)
        if target is None:
            raise ValueError(f"the key describes a {entity}, and the subject path names no {entity}")
        return target
    raise ValueError(f"the key describes a {entity}; attach it to a {entity} subject, not a {kind}")


def prepare(batch: Batch, onto: Ontology) -> Prepared:
    """Validate a batch against mmCAT: records and tables to store, rejections to report."""
    out = Prepared()
    source = batch.provenance.source
    validator = onto.validator
    for obs in batch.observations:
        subject = obs.subject or batch.subject
        try:
            unit = obs.unit
            if obs.scheme is not None or obs.selector is not None:
                mapping = onto.resolve_mapping(obs.key, scheme=obs.scheme, selector=obs.selector)
                key = mapping.key
                if unit is None:
                    unit = mapping.units
            else:
                key = onto.resolve(obs.key)
            item, selector = onto.lookup(key)
            _scalar_storage(onto, item, selector)
            n = validator.validate(key, obs.value, unit)
            target = route(subject, item.entity)
        except ValidationError as err:
            out.rejected.append(Rejection(obs.key, obs.value, err.reason, subject.path, source))
            continue
        except ValueError as err:
            out.rejected.append(Rejection(obs.key, obs.value, str(err), subject.path, source))
            continue
        out.records.append(Record(target, n.key, n.value, n.unit, batch.provenance, n.warnings))
    for tsubject, category, rows in batch.tables:
        subject = tsubject or batch.subject
        table = _table(onto, subject, category, rows, batch, out)
        if table is not None:
            out.tables.append(table)
    return out


def _scalar_storage(onto: Ontology, item: Any, selector: str | None) -> None:
    """Refuse scalar values of keys that only travel in tables or need a row selector."""
    cat = onto.categories.get(item.category)
    if cat is None:
        return
    if cat.storage == "table":
        raise ValidationError(item.name, None, f"{cat.id} travels as a table: send rows with add_table, not single values")
    if cat.storage == "flattened" and selector is None:
        raise ValidationError(item.name, None, f"{cat.id} needs a row selector: {', '.join(f'{cat.id}.{v}.{item.item}' for v in cat.selector_values)}")


def _table(onto: Ontology, subject: Subject, category: str, rows: list[Any], batch: Batch, out: Prepared) -> Table | None:
    source = batch.provenance.source
    cat = onto.categories.get(category)
    if cat is None:
        out.rejected.append(Rejection(category, f"{len(rows)} rows", "unknown category", subject.path, source))
        return None
    try:
        target = route(subject, cat.entity)
    except ValueError as err:
        out.rejected.append(Rejection(category, f"{len(rows)} rows", str(err), subject.path, source))
        return None
    columns: list[str] = []
    for row in rows:
        for col in row:
            if col not in columns:
                columns.append(col)
    good_cols = []
    for col in columns:
        if f"{category}.{col}" in onto and onto.item(f"{category}.{col}").category == category:
            good_cols.append(col)
        else:
            out.rejected.append(Rejection(f"{category}.{col}", None, "not an item of the category; column dropped", subject.path, source))
    validator = onto.validator
    clean_rows = []
    for i, row in enumerate(rows):
        clean = []
        for col in good_cols:
            v = row.get(col)
            if v is None:
                clean.append(None)
                continue
            unit = None
            if isinstance(v, dict):
                v, unit = v.get("value"), v.get("unit")
            try:
                clean.append(validator.validate(f"{category}.{col}", v, unit).value)
            except ValidationError as err:
                out.rejected.append(Rejection(f"{category}.{col}", v, f"row {i}: {err.reason}; cell left empty", subject.path, source))
                clean.append(None)
        clean_rows.append(tuple(clean))
    return Table(target, category, tuple(good_cols), tuple(clean_rows), batch.provenance)
