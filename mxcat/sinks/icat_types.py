"""The ICAT sink's types: its options, the facility's types in ICAT, and how one record's value fits a ParameterType.

:class:`IcatOptions` is the sink's configuration; :func:`key_plans` maps each mmCAT key to its
ParameterType definition and unit (from the ontology export, a pure memoised function);
:class:`FacilityTypes` holds what the sink knows of the facility in ICAT — the Facility id, the
InvestigationType and DatasetType ids, the ParameterTypes (:class:`ParamType`, reloaded at most every
30 s when one is missing) — and creates missing ParameterTypes (``sync``, or on the fly when so
configured); :func:`param_value` turns a record's value into the parameter field ICAT wants, refused
with a reason (:class:`Refuse`) when it does not fit the type: valueType, 4000-character strings,
enforced ranges and permissible values, finite numbers; :func:`where_of` names the ICAT entity of a
subject and :func:`job_plan` how a processed dataset was made (inputs, Application, texts). What no record can fix (no such Facility or
type in ICAT) is :class:`IcatSetupError`. The public names are importable from
:mod:`mxcat.sinks.icat` too.
"""

from __future__ import annotations

import functools
import json
import math
import string
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mxcat.errors import ConfigError, SinkUnavailable, ValidationError
from mxcat.records import Subject
from mxcat.sinks import Receipt
from mxcat.sinks.icat_client import IcatClient, IcatError, quote

STRING_LIMIT = 4000
NAME_LIMIT = 255
NAME_FIELDS = ("proposal", "session", "sample", "dataset", "processing")
PARAMETER_ENTITY = {"Investigation": ("InvestigationParameter", "investigation"), "Sample": ("SampleParameter", "sample"),
                    "Dataset": ("DatasetParameter", "dataset")}
APPLICABLE_FLAG = {"Investigation": "applicableToInvestigation", "Sample": "applicableToSample", "Dataset": "applicableToDataset"}
VALUE_FIELD = {"NUMERIC": "numericValue", "STRING": "stringValue", "DATE_AND_TIME": "dateTimeValue"}
PT_FIELDS = ("name", "units", "unitsFullName", "valueType", "description", "enforced", "verified", "minimumNumericValue",
             "maximumNumericValue", "applicableToInvestigation", "applicableToSample", "applicableToDataset", "applicableToDatafile",
             "applicableToDataCollection")
SYNC_HINT = "run `mxcat icat sync-parameter-types` (or set create_parameter_types: true)"
TYPE_RELOAD_INTERVAL = 30.0

Write = Callable[[list[dict[str, Any]], list[list[str]], Receipt], list[int | None]]
"""The sink's transactional write: entities, the record ids behind each, the receipt that collects refusals; the ids."""


class IcatOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    plugin: str = "simple"
    username: str
    password_env: str | None = None
    password_file: str | None = None
    facility: str
    names: Literal["mmcat", "esrf"] = "mmcat"
    verify: bool | str = True
    timeout: float = Field(30.0, gt=0)
    investigation_type: str = "experiment"
    dataset_type: str = "raw"
    processed_dataset_type: str = "processed"
    dataset_name: str = "{dataset}"
    processed_name: str = "{dataset}_{processing}"
    create_parameter_types: bool = False
    page_size: int = Field(1000, ge=1, le=100_000)


@dataclass(frozen=True, slots=True)
class ParamType:
    """A ParameterType as ICAT has it."""

    id: int
    name: str
    units: str
    value_type: str
    enforced: bool = False
    minimum: float | None = None
    maximum: float | None = None
    applicable: frozenset[str] = frozenset()
    allowed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """How one mmCAT key becomes a parameter: its ParameterType definition and the unit to send values in."""

    key: str
    definition: dict[str, Any]
    unit_from: str | None
    unit_to: str | None


@dataclass(frozen=True, slots=True)
class Conflict:
    name: str
    units: str
    icat_units: str
    reason: str


@dataclass(slots=True)
class SyncReport:
    """What ``sync_parameter_types`` did: types created (or that would be), already there, in conflict (left alone)."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.conflicts


@dataclass(frozen=True, slots=True)
class Where:
    """The ICAT entity that receives a subject's records."""

    kind: str
    inv: tuple[str, str]
    sample: str | None = None
    dataset: str | None = None
    processed: bool = False
    parent: str | None = None
    """For a processed dataset: the name of its raw (parent) dataset."""


@dataclass(frozen=True, slots=True)
class JobPlan:
    """How a processed dataset was made, as ICAT's Job model holds it: inputs, Application (name, version), arguments."""

    inputs: tuple[int, ...]
    app: tuple[str, str]
    arguments: str
    description: str


class Refuse(Exception):
    """One record cannot go to ICAT; the message is the reason given back in the receipt."""


class Lru(OrderedDict[Any, Any]):
    """A bounded id cache: the least recently stored entries go first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def icat_date(value: Any) -> str:
    """An ISO date/time as ICAT wants it (``yyyy-MM-dd'T'HH:mm:ss.SSSXXX``); naive times are this host's local time."""
    if isinstance(value, datetime):
        d = value
    else:
        try:
            d = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as err:
            raise Refuse(f"{value!r} is not an ISO date/time") from err
    if d.tzinfo is None:
        d = d.astimezone()
    return d.isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=4)
def key_plans(onto: Any, names: str) -> dict[str, KeyPlan]:
    """mmCAT key -> KeyPlan for an ontology and a naming (``mmcat``/``esrf``); a pure function, memoised."""
    from mxcat.ontology.export import exported_keys, icat_parameter_types

    units: dict[str, tuple[str | None, str | None]] = {}
    for key, item, selector in exported_keys(onto):
        target = item.units or "none"
        if names == "esrf":
            for m in item.mappings:
                if m.scheme == "esrf_icat" and m.selector == selector and m.relation in ("exact", "close") and m.units:
                    target = m.units
                    break
        units[key] = (item.units or "none", target) if item.is_numeric else (None, None)
    return {pt["key"]: KeyPlan(pt["key"], {k: v for k, v in pt.items() if k != "key"}, *units.get(pt["key"], (None, None)))
            for pt in icat_parameter_types(onto, names=names)}


def param_value(env: dict[str, Any], plan: KeyPlan, pt: ParamType, units: Any) -> tuple[str, Any]:
    """(value field, value) of one record for ParameterType *pt*, converted to the plan's unit; :class:`Refuse` if it does not fit."""
    v = env.get("value")
    if pt.value_type == "NUMERIC":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Refuse(f"ICAT ParameterType {pt.name!r} is NUMERIC; the value is {type(v).__name__}")
        x = float(v)
        src = env.get("unit") or plan.unit_from
        if plan.unit_to and src and src != plan.unit_to:
            try:
                scale, offset = units.factor(src, plan.unit_to)
            except Exception as err:  # noqa: BLE001 - any conversion failure refuses this record only
                raise Refuse(f"cannot convert {src} to {plan.unit_to} for ICAT: {err}") from err
            x = x * scale + offset
        if not math.isfinite(x):
            raise Refuse("ICAT stores finite numbers only")
        if pt.enforced and ((pt.minimum is not None and x < pt.minimum) or (pt.maximum is not None and x > pt.maximum)):
            raise Refuse(f"{x:g} is outside [{pt.minimum}, {pt.maximum}], enforced by ICAT ParameterType {pt.name!r}")
        return VALUE_FIELD["NUMERIC"], x
    if pt.value_type == "STRING":
        s = v if isinstance(v, str) else json.dumps(v)
        if len(s) > STRING_LIMIT:
            raise Refuse(f"a string of {len(s)} characters exceeds ICAT's {STRING_LIMIT}-character limit for parameter values")
        if pt.enforced and pt.allowed and s not in pt.allowed:
            raise Refuse(f"{s!r} is not a permissible value of ICAT ParameterType {pt.name!r}")
        return VALUE_FIELD["STRING"], s
    if pt.value_type == "DATE_AND_TIME":
        return VALUE_FIELD["DATE_AND_TIME"], icat_date(v)
    raise Refuse(f"ICAT ParameterType {pt.name!r} has an unknown valueType {pt.value_type!r}")


def _name(text: str, what: str) -> str:
    if len(text) > NAME_LIMIT:
        raise Refuse(f"the ICAT {what} name would be {len(text)} characters; ICAT allows {NAME_LIMIT}")
    return text


def where_of(s: Subject, dataset_name: str, processed_name: str) -> Where | None:
    """The ICAT entity that receives a subject's records; None for the levels ICAT has no parameters at (beamline,
    proposal) and for image ranges (their values would overwrite the dataset's own); :class:`Refuse` if it cannot be named."""
    kind = s.kind
    if kind in ("beamline", "proposal", "image_range"):
        return None
    missing = [lv for lv in ("proposal", "session") if getattr(s, lv) is None]
    if missing:
        raise Refuse(f"ICAT finds the Investigation by proposal (name) and session (visitId); this {kind} subject has no "
                     f"{' and no '.join(missing)}")
    inv = (_name(str(s.proposal), "investigation"), _name(str(s.session), "visitId"))
    if kind == "session":
        return Where("Investigation", inv)
    if kind == "sample":
        return Where("Sample", inv, _name(str(s.sample), "sample"))
    if s.dataset is None:
        raise Refuse(f"a {kind} subject without a dataset has no ICAT Dataset")
    fields = {f: getattr(s, f) or "" for f in NAME_FIELDS}
    sample = _name(s.sample, "sample") if s.sample else None
    raw = _name(dataset_name.format(**fields), "dataset")
    if s.processing is None:
        return Where("Dataset", inv, sample, raw)
    return Where("Dataset", inv, sample, _name(processed_name.format(**fields), "processed dataset"), True, raw)


def job_plan(s: Subject, prov: dict[str, Any], raw: Where, raw_id: int, known: Any) -> JobPlan:
    """How processing subject *s* was made: its inputs (the parent dataset first, then those of ``s.inputs`` that *known*,
    subject id -> dataset id, has), its Application (the provenance's program and version) and the texts for ICAT."""
    inputs: list[int] = [raw_id]
    unresolved: list[str] = []
    parent_subject = s.at("dataset")
    for ref in s.inputs:
        if parent_subject is not None and ref in (parent_subject.id, parent_subject.path):
            continue
        found = known.get(ref)
        if found is None and "=" in ref:
            try:
                found = known.get(Subject.parse(ref).id)
            except ValidationError:
                found = None
        if found is None:
            unresolved.append(ref[:12])
        elif found not in inputs:
            inputs.append(found)
    program, version = prov.get("program"), prov.get("version")
    what = f"mxcat processing {s.processing} of dataset {raw.dataset}"
    desc = what + (f" by {program}" + (f" {version}" if version else "") if program else "")
    if len(inputs) > 1:
        desc += f"; {len(inputs)} input datasets (ids {', '.join(map(str, inputs))})"
    if unresolved:
        desc += f"; inputs not found in ICAT: {', '.join(unresolved)}"
        what += f"; inputs not found in ICAT: {', '.join(unresolved)}"
    app = (str(program or f"mxcat {s.processing}")[:NAME_LIMIT], str(version or "unspecified")[:NAME_LIMIT])
    return JobPlan(tuple(inputs), app, what[:NAME_LIMIT], desc[:NAME_LIMIT])


def chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def check_template(template: str, option: str, sink: str) -> None:
    """A dataset name template must use ``{dataset}`` and only the subject's name fields."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ConfigError(f"not a name template: {err}", key=f"sinks.{sink}.options.{option}") from err
    unknown = names - set(NAME_FIELDS)
    if unknown or "dataset" not in names:
        raise ConfigError(f"template fields must include {{dataset}} and be among {', '.join(NAME_FIELDS)}; got {sorted(names)}",
                          key=f"sinks.{sink}.options.{option}")



class IcatSetupError(SinkUnavailable):
    """Something in ICAT that no record can fix (no such Facility or type): records wait, and the sink's health() says it."""


class FacilityTypes:
    """The facility of an ICAT sink and its types there: Facility id, InvestigationType/DatasetType ids, ParameterTypes."""

    def __init__(self, client: IcatClient, *, sink: str, facility: str, names: str, ontology: Any, page_size: int,
                 create: bool, investigation_type: str, dataset_types: tuple[str, str]) -> None:
        self.client = client
        self.sink = sink
        self.facility = facility
        self.names = names
        self.page_size = page_size
        self.create = create
        self.investigation_type = investigation_type
        self.dataset_types = dataset_types
        self._onto = ontology
        self._plans: dict[str, KeyPlan] | None = None
        self.forget()

    def forget(self) -> None:
        """Look everything up again next time (ICAT said an id we cached does not exist)."""
        self.facility_id: int | None = None
        self._type_ids: dict[tuple[str, str], int] = {}
        self.pts: dict[tuple[str, str], ParamType] = {}
        self.pts_by_name: dict[str, list[ParamType]] = {}
        self._loaded = -math.inf

    @property
    def onto(self) -> Any:
        if self._onto is None:
            from mxcat.ontology import load

            self._onto = load()
        return self._onto

    def plans(self) -> dict[str, KeyPlan]:
        """mmCAT key -> its ParameterType definition (from the ontology export) and unit conversion."""
        if self._plans is None:
            self._plans = key_plans(self.onto, self.names)
        return self._plans

    def ensure(self) -> int:
        """The Facility id, with the type ids and ParameterTypes loaded once."""
        if self.facility_id is None:
            rows = self.client.search(f"SELECT f FROM Facility f WHERE f.name = {quote(self.facility)}")
            if not rows:
                raise IcatSetupError(f"ICAT has no Facility named {self.facility!r} (option facility)", sink=self.sink)
            self.facility_id = int(rows[0]["Facility"]["id"])
            self._type_ids = {}
            for entity, wanted in (("InvestigationType", [self.investigation_type]), ("DatasetType", list(self.dataset_types))):
                q = (f"SELECT t FROM {entity} t WHERE t.facility.id = {self.facility_id} AND t.name IN "
                     f"({', '.join(quote(n) for n in wanted)})")
                for row in self.client.search(q):
                    self._type_ids[(entity, row[entity]["name"])] = int(row[entity]["id"])
        if self._loaded == -math.inf:
            self.load()
        return self.facility_id

    def type_id(self, entity: str, name: str) -> int:
        tid = self._type_ids.get((entity, name))
        if tid is None:
            raise IcatSetupError(f"ICAT facility {self.facility!r} has no {entity} named {name!r}: create it or set the "
                                 f"sink's {'investigation_type' if entity == 'InvestigationType' else 'dataset types'} option",
                                 sink=self.sink)
        return tid

    def load(self) -> None:
        """Read the facility's ParameterTypes (and the permissible values of enforced string types)."""
        fid = self.facility_id
        rows = self.client.search_all(f"SELECT pt FROM ParameterType pt WHERE pt.facility.id = {fid} ORDER BY pt.id", self.page_size)
        raw = [r["ParameterType"] for r in rows]
        allowed: dict[int, set[str]] = {}
        if any(r.get("enforced") and r.get("valueType") == "STRING" for r in raw):
            for tid, value in self.client.search_all(f"SELECT v.type.id, v.value FROM PermissibleStringValue v WHERE "
                                                     f"v.type.facility.id = {fid} ORDER BY v.id", self.page_size):
                allowed.setdefault(int(tid), set()).add(value)
        self.pts, self.pts_by_name = {}, {}
        for r in raw:
            pt = ParamType(int(r["id"]), r["name"], r["units"], r["valueType"], bool(r.get("enforced")), r.get("minimumNumericValue"),
                           r.get("maximumNumericValue"), frozenset(k for k, f in APPLICABLE_FLAG.items() if r.get(f)),
                           frozenset(allowed.get(int(r["id"]), ())))
            self.pts[(pt.name, pt.units)] = pt
            self.pts_by_name.setdefault(pt.name, []).append(pt)
        self._loaded = time.monotonic()

    def entity(self, definition: dict[str, Any]) -> dict[str, Any]:
        """The ParameterType entity (with its permissible values) to create for a definition of the export."""
        body = {k: definition[k] for k in PT_FIELDS if definition.get(k) is not None}
        body["facility"] = {"id": self.facility_id}
        if definition.get("permissibleStringValues"):
            body["permissibleStringValues"] = [{"value": v["value"]} for v in definition["permissibleStringValues"]]
        return {"ParameterType": body}

    def param_type(self, plan: KeyPlan) -> ParamType:
        """The ParameterType a key's values go to; :class:`Refuse` (with the way out) when ICAT lacks it or has other units."""
        d = plan.definition
        pt = self.pts.get((d["name"], d["units"]))
        if pt is not None:
            return pt
        others = self.pts_by_name.get(d["name"])
        if others:
            raise Refuse(f"ICAT ParameterType {d['name']!r} exists with units {', '.join(repr(o.units) for o in others)}, mxcat sends "
                         f"{d['units']!r}: a conflict to settle by hand (see `mxcat icat sync-parameter-types --dry-run`)")
        raise Refuse(f"ICAT has no ParameterType {d['name']!r} ({d['units']}) in facility {self.facility!r}: {SYNC_HINT}")

    def ensure_types(self, plans: list[KeyPlan], write: Write) -> None:
        """Reload the types when some are missing (at most every 30 s); create them when so configured."""
        missing = [p for p in plans if (p.definition["name"], p.definition["units"]) not in self.pts]
        if not missing:
            return
        if time.monotonic() - self._loaded > TYPE_RELOAD_INTERVAL:
            self.load()
            missing = [p for p in missing if (p.definition["name"], p.definition["units"]) not in self.pts]
        if not missing or not self.create:
            return
        todo = {p.definition["name"]: p.definition for p in missing if not self.pts_by_name.get(p.definition["name"])}
        if todo:
            try:
                write([self.entity(d) for d in todo.values()], [[] for _ in todo], Receipt())
            except IcatError as err:
                if err.code != "OBJECT_ALREADY_EXISTS":
                    raise
            self.load()

    def sync(self, write: Write, *, dry_run: bool = False) -> SyncReport:
        """Create the ParameterTypes of the ontology export that ICAT lacks; report conflicts without changing them."""
        self.ensure()
        report = SyncReport(dry_run=dry_run)
        for attempt in (1, 2, 3):
            self.load()
            report = SyncReport(dry_run=dry_run)
            todo: list[dict[str, Any]] = []
            for plan in sorted(self.plans().values(), key=lambda p: p.definition["name"]):
                d = plan.definition
                exact = self.pts.get((d["name"], d["units"]))
                if exact is not None:
                    if exact.value_type != d["valueType"]:
                        report.conflicts.append(Conflict(d["name"], d["units"], exact.units, f"ICAT valueType is {exact.value_type}, "
                                                         f"mxcat's is {d['valueType']}; left unchanged"))
                    else:
                        report.existing.append(d["name"])
                elif self.pts_by_name.get(d["name"]):
                    icat_units = ", ".join(sorted(p.units for p in self.pts_by_name[d["name"]]))
                    report.conflicts.append(Conflict(d["name"], d["units"], icat_units,
                                                     "ICAT has this name with other units; left unchanged, not created"))
                else:
                    todo.append(d)
            if dry_run or not todo:
                report.created = [d["name"] for d in todo]
                return report
            failed = Receipt()
            try:
                ids = write([self.entity(d) for d in todo], [[d["name"]] for d in todo], failed)
            except IcatError as err:
                if err.code == "OBJECT_ALREADY_EXISTS" and attempt < 3:
                    continue  # another process created some meanwhile: look again
                raise
            report.created = [d["name"] for d, i in zip(todo, ids, strict=True) if i is not None]
            for d in todo:
                if d["name"] in failed.rejected:
                    report.conflicts.append(Conflict(d["name"], d["units"], "", f"ICAT refused it: {failed.rejected[d['name']]}"))
            self.load()
            return report
        return report
