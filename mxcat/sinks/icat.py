"""``icat``: records as ICAT parameters, written over the ICAT REST API in one transaction per batch.

The model mapping (ICAT 4.x/5.x/6.x schema, icat.server entity classes): a session subject is an
``Investigation`` of the configured ``Facility`` (name = proposal, visitId = session, created with
``investigation_type`` when missing); a sample is a ``Sample`` (investigation + name); a raw dataset
is a ``Dataset`` of type ``dataset_type`` named by ``dataset_name`` (ICAT makes dataset names unique
per investigation, not per sample: a name already used by another sample is refused with a hint);
a processing subject is a ``Dataset`` of type ``processed_dataset_type`` named by ``processed_name``
whose inputs (its parent dataset, other input datasets this sink has seen or given as subject paths)
form a ``DataCollection`` created before it and linked through a ``DataCollectionDataset`` created in
the same transaction as the processed dataset, and whose description names the processing, the
program and the inputs. Records of session level become ``InvestigationParameter``, of sample level
``SampleParameter``, of dataset, processing and image-range level ``DatasetParameter`` of the (raw or
processed) dataset. One value per ParameterType per owner: a new value updates the existing parameter.
ParameterTypes are matched by (name, units) as ``mxcat.ontology.export.icat_parameter_types`` names
them (``names`` = ``mmcat`` or ``esrf``), values converted to that unit; a record whose type ICAT
lacks is refused with the hint to run ``mxcat icat sync-parameter-types`` (or created on the fly with
``create_parameter_types``). Refused per record, with the reason: strings over 4000 characters, values
that do not fit the type's valueType (NUMERIC / STRING / DATE_AND_TIME), enforced ranges and
permissible values, non-applicable types. Tables, and beamline- or proposal-level records (ICAT has
no parameters there), are acknowledged without being sent and logged once per category: they stay
in the embedded catalogue. Ids of investigations, samples, datasets, parameter types and parameters
are cached per sink; OBJECT_ALREADY_EXISTS (a concurrent writer, or a retried batch) means "look it
up and update", NO_SUCH_OBJECT_FOUND (something deleted in ICAT) empties the caches and retries once,
and VALIDATION/BAD_PARAMETER at an offset refuses only the records behind that entity. Other errors
map through :data:`mxcat.sinks.icat_client.ICAT_ERRORS`. Requests per batch: a few look-ups (cached
afterwards), one write per entity level created, and one write for all parameters.
"""

from __future__ import annotations

import functools
import json
import logging
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
from mxcat.sinks import Envelope, Health, Receipt
from mxcat.sinks.icat_client import IcatClient, IcatError, quote, sink_error

log = logging.getLogger(__name__)

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
class _Where:
    """The ICAT entity that receives a subject's records."""

    kind: str
    inv: tuple[str, str]
    sample: str | None = None
    dataset: str | None = None
    processed: bool = False
    parent: str | None = None
    """For a processed dataset: the name of its raw (parent) dataset."""


class _Refuse(Exception):
    """One record cannot go to ICAT; the message is the reason given back in the receipt."""


class _Lru(OrderedDict[Any, Any]):
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
            raise _Refuse(f"{value!r} is not an ISO date/time") from err
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


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _check_template(template: str, option: str, sink: str) -> None:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ConfigError(f"not a name template: {err}", key=f"sinks.{sink}.options.{option}") from err
    unknown = names - set(NAME_FIELDS)
    if unknown or "dataset" not in names:
        raise ConfigError(f"template fields must include {{dataset}} and be among {', '.join(NAME_FIELDS)}; got {sorted(names)}",
                          key=f"sinks.{sink}.options.{option}")


class IcatSink:
    """Delivers records to ICAT as Investigation/Sample/Dataset parameters (see the module docstring)."""

    Options = IcatOptions

    def __init__(self, name: str = "icat", url: str | None = None, plugin: str = "simple", username: str | None = None,
                 password: str | None = None, facility: str | None = None, names: str = "mmcat", verify: bool | str = True,
                 timeout: float = 30.0, investigation_type: str = "experiment", dataset_type: str = "raw",
                 processed_dataset_type: str = "processed", dataset_name: str = "{dataset}", processed_name: str = "{dataset}_{processing}",
                 create_parameter_types: bool = False, page_size: int = 1000, ontology: Any = None) -> None:
        for opt, value in (("url", url), ("username", username), ("facility", facility)):
            if not value:
                raise ConfigError(f"the icat sink needs {opt}", key=f"sinks.{name}.options.{opt}")
        if password is None:
            raise ConfigError("no ICAT password (set password_env or password_file)", key=f"sinks.{name}.options.password_env")
        if names not in ("mmcat", "esrf"):
            raise ConfigError(f"names must be mmcat or esrf, not {names!r}", key=f"sinks.{name}.options.names")
        _check_template(dataset_name, "dataset_name", name)
        _check_template(processed_name, "processed_name", name)
        if "processing" not in processed_name:
            raise ConfigError("processed_name must include {processing}", key=f"sinks.{name}.options.processed_name")
        self.name = name
        self.facility = str(facility)
        self.names = names
        self.investigation_type = investigation_type
        self.dataset_type = dataset_type
        self.processed_dataset_type = processed_dataset_type
        self.dataset_name = dataset_name
        self.processed_name = processed_name
        self.create_parameter_types = create_parameter_types
        self.page_size = page_size
        if isinstance(verify, str) and verify.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            verify = verify.strip().lower() in ("true", "yes", "1")  # from MXCAT_SINK_<NAME>_VERIFY; any other text is a CA bundle
        self.client = IcatClient(str(url), plugin=plugin, username=str(username), password=password, verify=verify, timeout=timeout,
                                 sink=name)
        self._onto = ontology
        self._plans: dict[str, KeyPlan] | None = None
        self._noted: set[str] = set()
        self._forget()

    def _forget(self) -> None:
        """Empty every id cache (after ICAT said an id we cached does not exist)."""
        self._facility_id: int | None = None
        self._type_ids: dict[tuple[str, str], int] = {}
        self._pts: dict[tuple[str, str], ParamType] = {}
        self._pts_by_name: dict[str, list[ParamType]] = {}
        self._pts_loaded = -math.inf
        self._inv = _Lru(2_000)
        self._samples = _Lru(20_000)
        self._datasets = _Lru(50_000)
        self._params = _Lru(5_000)
        self._subject_ds = _Lru(50_000)

    # -- protocol --------------------------------------------------------------------------------------

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        base = Receipt()
        work: list[tuple[Envelope, Subject, _Where]] = []
        for env in envelopes:
            kind = env.get("type")
            if kind == "table":
                self._note(f"table {env.get('category')}", f"ICAT has no table model: tables of category {env.get('category')} "
                           "stay in the embedded catalogue and are not sent to ICAT")
                base.stored.append(env["id"])
                continue
            if kind != "record":
                base.rejected[env["id"]] = f"unknown envelope type {kind!r}"
                continue
            try:
                subject = Subject.from_dict(env["subject"])
                where = self._where(subject)
            except (ValidationError, _Refuse) as err:
                base.rejected[env["id"]] = str(err)
                continue
            if where is None:
                self._note(f"level {subject.kind}", f"ICAT has no parameters for {subject.kind}-level records (such as "
                           f"{env.get('key')}): they stay in the embedded catalogue and are not sent to ICAT")
                base.stored.append(env["id"])
                continue
            work.append((env, subject, where))
        if not work:
            return base
        try:
            for attempt in (1, 2):
                receipt = Receipt(stored=list(base.stored), rejected=dict(base.rejected))
                try:
                    self._deliver(work, receipt)
                    return receipt
                except IcatError as err:
                    if err.code != "NO_SUCH_OBJECT_FOUND" or attempt == 2:
                        raise
                    log.info("ICAT no longer has an entity mxcat cached (%s); looking everything up again", err.message[:200])
                    self._forget()
        except IcatError as err:
            raise sink_error(err, self.name) from err
        return base  # not reached

    def health(self) -> Health:
        try:
            v = self.client.version()
        except (SinkUnavailable, IcatError) as err:
            return Health(False, str(err))
        return Health(True, f"ICAT {v} at {self.client.base}")

    def close(self) -> None:
        self.client.close()

    def _note(self, what: str, message: str) -> None:
        if what not in self._noted:
            self._noted.add(what)
            log.warning("sink %s: %s (logged once)", self.name, message)

    # -- subjects to ICAT entities ------------------------------------------------------------------------

    def _where(self, s: Subject) -> _Where | None:
        kind = s.kind
        if kind in ("beamline", "proposal"):
            return None
        missing = [lv for lv in ("proposal", "session") if getattr(s, lv) is None]
        if missing:
            raise _Refuse(f"ICAT finds the Investigation by proposal (name) and session (visitId); this {kind} subject has no "
                          f"{' and no '.join(missing)}")
        inv = (self._name(str(s.proposal), "investigation"), self._name(str(s.session), "visitId"))
        if kind == "session":
            return _Where("Investigation", inv)
        if kind == "sample":
            return _Where("Sample", inv, self._name(str(s.sample), "sample"))
        if s.dataset is None:
            raise _Refuse(f"a {kind} subject without a dataset has no ICAT Dataset")
        fields = {f: getattr(s, f) or "" for f in NAME_FIELDS}
        sample = self._name(s.sample, "sample") if s.sample else None
        raw = self._name(self.dataset_name.format(**fields), "dataset")
        if s.processing is None:
            return _Where("Dataset", inv, sample, raw)
        return _Where("Dataset", inv, sample, self._name(self.processed_name.format(**fields), "processed dataset"), True, raw)

    @staticmethod
    def _name(text: str, what: str) -> str:
        if len(text) > NAME_LIMIT:
            raise _Refuse(f"the ICAT {what} name would be {len(text)} characters; ICAT allows {NAME_LIMIT}")
        return text

    # -- parameter types ------------------------------------------------------------------------------------

    def plans(self) -> dict[str, KeyPlan]:
        """mmCAT key -> its ParameterType definition (from the ontology export) and unit conversion."""
        if self._plans is None:
            if self._onto is None:
                from mxcat.ontology import load

                self._onto = load()
            self._plans = key_plans(self._onto, self.names)
        return self._plans

    def _ensure_static(self) -> int:
        if self._facility_id is None:
            rows = self.client.search(f"SELECT f FROM Facility f WHERE f.name = {quote(self.facility)}")
            if not rows:
                raise SinkUnavailable(f"ICAT has no Facility named {self.facility!r} (option facility)", sink=self.name)
            self._facility_id = int(rows[0]["Facility"]["id"])
            self._type_ids = {}
            for entity, wanted in (("InvestigationType", [self.investigation_type]),
                                   ("DatasetType", [self.dataset_type, self.processed_dataset_type])):
                q = (f"SELECT t FROM {entity} t WHERE t.facility.id = {self._facility_id} AND t.name IN "
                     f"({', '.join(quote(n) for n in wanted)})")
                for row in self.client.search(q):
                    self._type_ids[(entity, row[entity]["name"])] = int(row[entity]["id"])
        if self._pts_loaded == -math.inf:
            self._load_types()
        return self._facility_id

    def _type_id(self, entity: str, name: str) -> int:
        tid = self._type_ids.get((entity, name))
        if tid is None:
            raise SinkUnavailable(f"ICAT facility {self.facility!r} has no {entity} named {name!r}: create it or set the "
                                  f"sink's {'investigation_type' if entity == 'InvestigationType' else 'dataset types'} option",
                                  sink=self.name)
        return tid

    def _load_types(self) -> None:
        fid = self._facility_id
        rows = self.client.search_all(f"SELECT pt FROM ParameterType pt WHERE pt.facility.id = {fid} ORDER BY pt.id", self.page_size)
        raw = [r["ParameterType"] for r in rows]
        allowed: dict[int, set[str]] = {}
        if any(r.get("enforced") and r.get("valueType") == "STRING" for r in raw):
            for tid, value in self.client.search_all(f"SELECT v.type.id, v.value FROM PermissibleStringValue v WHERE "
                                                     f"v.type.facility.id = {fid} ORDER BY v.id", self.page_size):
                allowed.setdefault(int(tid), set()).add(value)
        self._pts, self._pts_by_name = {}, {}
        for r in raw:
            pt = ParamType(int(r["id"]), r["name"], r["units"], r["valueType"], bool(r.get("enforced")), r.get("minimumNumericValue"),
                           r.get("maximumNumericValue"), frozenset(k for k, f in APPLICABLE_FLAG.items() if r.get(f)),
                           frozenset(allowed.get(int(r["id"]), ())))
            self._pts[(pt.name, pt.units)] = pt
            self._pts_by_name.setdefault(pt.name, []).append(pt)
        self._pts_loaded = time.monotonic()

    def _pt_entity(self, definition: dict[str, Any]) -> dict[str, Any]:
        body = {k: definition[k] for k in PT_FIELDS if definition.get(k) is not None}
        body["facility"] = {"id": self._facility_id}
        if definition.get("permissibleStringValues"):
            body["permissibleStringValues"] = [{"value": v["value"]} for v in definition["permissibleStringValues"]]
        return {"ParameterType": body}

    def _param_type(self, plan: KeyPlan) -> ParamType:
        d = plan.definition
        pt = self._pts.get((d["name"], d["units"]))
        if pt is not None:
            return pt
        others = self._pts_by_name.get(d["name"])
        if others:
            raise _Refuse(f"ICAT ParameterType {d['name']!r} exists with units {', '.join(repr(o.units) for o in others)}, mxcat sends "
                          f"{d['units']!r}: a conflict to settle by hand (see `mxcat icat sync-parameter-types --dry-run`)")
        raise _Refuse(f"ICAT has no ParameterType {d['name']!r} ({d['units']}) in facility {self.facility!r}: {SYNC_HINT}")

    def sync_parameter_types(self, *, dry_run: bool = False) -> SyncReport:
        """Create the ParameterTypes of the ontology export that ICAT lacks; report conflicts without changing them."""
        report = SyncReport(dry_run=dry_run)
        try:
            self._ensure_static()
            for attempt in (1, 2, 3):
                self._load_types()
                report = SyncReport(dry_run=dry_run)
                todo: list[dict[str, Any]] = []
                for plan in sorted(self.plans().values(), key=lambda p: p.definition["name"]):
                    d = plan.definition
                    exact = self._pts.get((d["name"], d["units"]))
                    if exact is not None:
                        if exact.value_type != d["valueType"]:
                            report.conflicts.append(Conflict(d["name"], d["units"], exact.units, f"ICAT valueType is {exact.value_type}, "
                                                             f"mxcat's is {d['valueType']}; left unchanged"))
                        else:
                            report.existing.append(d["name"])
                    elif self._pts_by_name.get(d["name"]):
                        icat_units = ", ".join(sorted(p.units for p in self._pts_by_name[d["name"]]))
                        report.conflicts.append(Conflict(d["name"], d["units"], icat_units,
                                                         "ICAT has this name with other units; left unchanged, not created"))
                    else:
                        todo.append(d)
                if dry_run or not todo:
                    report.created = [d["name"] for d in todo]
                    return report
                failed = Receipt()
                try:
                    ids = self._write([self._pt_entity(d) for d in todo], [[d["name"]] for d in todo], failed)
                except IcatError as err:
                    if err.code == "OBJECT_ALREADY_EXISTS" and attempt < 3:
                        continue  # another process created some meanwhile: look again
                    raise
                report.created = [d["name"] for d, i in zip(todo, ids, strict=True) if i is not None]
                for d in todo:
                    if d["name"] in failed.rejected:
                        report.conflicts.append(Conflict(d["name"], d["units"], "", f"ICAT refused it: {failed.rejected[d['name']]}"))
                self._load_types()
                return report
        except IcatError as err:
            raise sink_error(err, self.name) from err
        return report

    # -- one batch ------------------------------------------------------------------------------------------

    def _deliver(self, work: list[tuple[Envelope, Subject, _Where]], receipt: Receipt) -> None:
        self._ensure_static()
        plans = self.plans()
        items: list[tuple[Envelope, Subject, _Where, KeyPlan]] = []
        for env, subject, where in work:
            plan = plans.get(env["key"])
            if plan is None:
                receipt.rejected[env["id"]] = f"{env['key']} has no ICAT ParameterType in the mmCAT export (a table or internal key)"
            else:
                items.append((env, subject, where, plan))
        self._ensure_types([p for _, _, _, p in items])
        values: dict[tuple[_Where, int], tuple[str, Any, list[str]]] = {}
        subjects: dict[_Where, Subject] = {}
        provenance: dict[_Where, dict[str, Any]] = {}
        for env, subject, where, plan in items:
            try:
                pt = self._param_type(plan)
                if where.kind not in pt.applicable:
                    raise _Refuse(f"ICAT ParameterType {pt.name!r} is not applicable to a {where.kind}")
                fld, value = self._value(env, plan, pt)
            except _Refuse as err:
                receipt.rejected[env["id"]] = str(err)
                continue
            prev = values.get((where, pt.id))
            values[(where, pt.id)] = (fld, value, (prev[2] if prev else []) + [env["id"]])  # the last value of a batch wins
            subjects.setdefault(where, subject)
            provenance.setdefault(where, dict(env.get("provenance") or {}))
        if values:
            ids = self._resolve(subjects, values, provenance, receipt)
            self._write_parameters(values, ids, receipt)
        done = set(receipt.rejected)
        receipt.stored.extend(env["id"] for env, _, _ in work if env["id"] not in done)

    def _ensure_types(self, plans: list[KeyPlan]) -> None:
        """Reload the types when some are missing (at most every 30 s); create them when so configured."""
        missing = [p for p in plans if (p.definition["name"], p.definition["units"]) not in self._pts]
        if not missing:
            return
        if time.monotonic() - self._pts_loaded > TYPE_RELOAD_INTERVAL:
            self._load_types()
            missing = [p for p in missing if (p.definition["name"], p.definition["units"]) not in self._pts]
        if not missing or not self.create_parameter_types:
            return
        todo = {p.definition["name"]: p.definition for p in missing if not self._pts_by_name.get(p.definition["name"])}
        if todo:
            try:
                self._write([self._pt_entity(d) for d in todo.values()], [[] for _ in todo], Receipt())
            except IcatError as err:
                if err.code != "OBJECT_ALREADY_EXISTS":
                    raise
            self._load_types()

    def _value(self, env: Envelope, plan: KeyPlan, pt: ParamType) -> tuple[str, Any]:
        v = env.get("value")
        if pt.value_type == "NUMERIC":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _Refuse(f"ICAT ParameterType {pt.name!r} is NUMERIC; the value is {type(v).__name__}")
            x = float(v)
            src = env.get("unit") or plan.unit_from
            if plan.unit_to and src and src != plan.unit_to:
                try:
                    scale, offset = self._onto.units.factor(src, plan.unit_to)
                except Exception as err:  # noqa: BLE001 - any conversion failure refuses this record only
                    raise _Refuse(f"cannot convert {src} to {plan.unit_to} for ICAT: {err}") from err
                x = x * scale + offset
            if not math.isfinite(x):
                raise _Refuse("ICAT stores finite numbers only")
            if pt.enforced and ((pt.minimum is not None and x < pt.minimum) or (pt.maximum is not None and x > pt.maximum)):
                raise _Refuse(f"{x:g} is outside [{pt.minimum}, {pt.maximum}], enforced by ICAT ParameterType {pt.name!r}")
            return VALUE_FIELD["NUMERIC"], x
        if pt.value_type == "STRING":
            s = v if isinstance(v, str) else json.dumps(v)
            if len(s) > STRING_LIMIT:
                raise _Refuse(f"a string of {len(s)} characters exceeds ICAT's {STRING_LIMIT}-character limit for parameter values")
            if pt.enforced and pt.allowed and s not in pt.allowed:
                raise _Refuse(f"{s!r} is not a permissible value of ICAT ParameterType {pt.name!r}")
            return VALUE_FIELD["STRING"], s
        if pt.value_type == "DATE_AND_TIME":
            return VALUE_FIELD["DATE_AND_TIME"], icat_date(v)
        raise _Refuse(f"ICAT ParameterType {pt.name!r} has an unknown valueType {pt.value_type!r}")

    # -- investigations, samples, datasets ------------------------------------------------------------------

    def _resolve(self, subjects: dict[_Where, Subject], values: dict[tuple[_Where, int], tuple[str, Any, list[str]]],
                 provenance: dict[_Where, dict[str, Any]], receipt: Receipt) -> dict[_Where, int]:
        """ICAT ids of every entity that receives parameters, found or created level by level."""
        owners: dict[Any, list[str]] = {}

        def own(key: Any, envs: list[str]) -> None:
            owners.setdefault(key, []).extend(envs)

        raw_for: dict[_Where, _Where] = {}
        for (w, _), (_, _, envs) in values.items():
            own(w.inv, envs)
            if w.sample is not None:
                own((w.inv, w.sample), envs)
            if w.kind == "Dataset":
                own(w, envs)
                if w.processed:
                    raw_for[w] = _Where("Dataset", w.inv, w.sample, w.parent)
                    own(raw_for[w], envs)
        fid = self._facility_id
        # investigations
        inv_ids = self._found_or_created(
            "Investigation", sorted({w.inv for w in subjects}), owners, receipt, cache=self._inv, cache_key=lambda k: k,
            query=lambda ks: (f"SELECT x FROM Investigation x WHERE x.facility.id = {fid} AND x.name IN "
                              f"({', '.join(quote(k[0]) for k in ks)}) ORDER BY x.id"),
            key_of=lambda row: (row["name"], row["visitId"]),
            make=lambda k: {"Investigation": {"facility": {"id": fid}, "name": k[0], "visitId": k[1], "title": f"{k[0]} {k[1]}"[:NAME_LIMIT],
                                              "type": {"id": self._type_id("InvestigationType", self.investigation_type)}}})
        out: dict[_Where, int] = {w: inv_ids[w.inv] for w in subjects if w.kind == "Investigation" and w.inv in inv_ids}
        # samples
        sample_keys = sorted({(w.inv, w.sample) for w in subjects if w.sample is not None and w.inv in inv_ids})
        sample_ids: dict[Any, int] = {}
        for inv in sorted({k[0] for k in sample_keys}):
            iid = inv_ids[inv]
            keys = [k for k in sample_keys if k[0] == inv]
            sample_ids.update(self._found_or_created(
                "Sample", keys, owners, receipt, cache=self._samples, cache_key=lambda k, iid=iid: (iid, k[1]),
                query=lambda ks, iid=iid: (f"SELECT x FROM Sample x WHERE x.investigation.id = {iid} AND x.name IN "
                                           f"({', '.join(quote(k[1]) for k in ks)}) ORDER BY x.id"),
                key_of=lambda row, inv=inv: (inv, row["name"]),
                make=lambda k, iid=iid: {"Sample": {"investigation": {"id": iid}, "name": k[1]}}))
        out.update({w: sample_ids[(w.inv, w.sample)] for w in subjects if w.kind == "Sample" and (w.inv, w.sample) in sample_ids})
        # raw datasets (including the parents of processed ones), then processed datasets with their input collection
        raw = sorted({w for w in subjects if w.kind == "Dataset" and not w.processed} | set(raw_for.values()), key=repr)
        raw_ids = self._datasets_of(raw, inv_ids, sample_ids, owners, receipt, None)
        out.update({w: i for w, i in raw_ids.items() if w in subjects})
        processed = sorted((w for w in subjects if w.processed and raw_for.get(w) in raw_ids), key=repr)
        out.update(self._datasets_of(processed, inv_ids, sample_ids, owners, receipt, (raw_for, raw_ids, subjects, provenance)))
        for w, s in subjects.items():  # remember subject -> dataset, so that later processings can name them as inputs
            if w.kind == "Dataset" and (ds := s.at("dataset")) is not None and raw_for.get(w, w) in raw_ids:
                self._subject_ds.put(ds.id, raw_ids[raw_for.get(w, w)])
            if w.processed and w in out and (proc := s.at("processing")) is not None:
                self._subject_ds.put(proc.id, out[w])
        return out

    def _datasets_of(self, wheres: list[_Where], inv_ids: dict[Any, int], sample_ids: dict[Any, int], owners: dict[Any, list[str]],
                     receipt: Receipt, processed: tuple[Any, ...] | None) -> dict[_Where, int]:
        out: dict[_Where, int] = {}
        for inv in sorted({w.inv for w in wheres if w.inv in inv_ids}):
            iid = inv_ids[inv]
            keys = [w for w in wheres if w.inv == inv and (w.sample is None or (inv, w.sample) in sample_ids)]
            if not keys:
                continue
            type_name = self.processed_dataset_type if processed else self.dataset_type

            def make(w: _Where, iid: int = iid, type_name: str = type_name) -> dict[str, Any]:
                body: dict[str, Any] = {"investigation": {"id": iid}, "name": w.dataset, "type": {"id": self._type_id("DatasetType", type_name)}}
                if w.sample is not None:
                    body["sample"] = {"id": sample_ids[(w.inv, w.sample)]}
                return {"Dataset": body}

            found = self._found_or_created(
                "Dataset", keys, owners, receipt, cache=self._datasets, cache_key=lambda w, iid=iid: (iid, w.dataset),
                query=lambda ks, iid=iid: (f"SELECT x FROM Dataset x WHERE x.investigation.id = {iid} AND x.name IN "
                                           f"({', '.join(quote(str(w.dataset)) for w in ks)}) ORDER BY x.id INCLUDE x.sample"),
                key_of=lambda row, keys=keys: next((w for w in keys if w.dataset == row["name"]), None),
                make=make, sample_of=lambda w: sample_ids.get((w.inv, w.sample)) if w.sample is not None else None,
                before_create=(lambda ws, ents: self._link_inputs(ws, ents, processed)) if processed else None)
            out.update(found)
        return out

    def _link_inputs(self, wheres: list[_Where], entities: list[dict[str, Any]], processed: tuple[Any, ...] | None) -> None:
        """Create one DataCollection of inputs per new processed dataset; link it in the dataset's own creation."""
        if processed is None:
            return
        raw_for, raw_ids, subjects, provenance = processed
        collections: list[dict[str, Any]] = []
        for w, ent in zip(wheres, entities, strict=True):
            s: Subject = subjects[w]
            inputs: list[int] = [raw_ids[raw_for[w]]]
            unresolved: list[str] = []
            parent_subject = s.at("dataset")
            for ref in s.inputs:
                if parent_subject is not None and ref in (parent_subject.id, parent_subject.path):
                    continue
                found = self._subject_ds.get(ref)
                if found is None and "=" in ref:
                    try:
                        found = self._subject_ds.get(Subject.parse(ref).id)
                    except ValidationError:
                        found = None
                if found is None:
                    unresolved.append(ref[:12])
                elif found not in inputs:
                    inputs.append(found)
            prov = provenance.get(w, {})
            desc = f"mxcat processing {s.processing} of dataset {raw_for[w].dataset}"
            if prov.get("program"):
                desc += f" by {prov['program']}" + (f" {prov['version']}" if prov.get("version") else "")
            if len(inputs) > 1:
                desc += f"; {len(inputs)} input datasets (ids {', '.join(map(str, inputs))})"
            if unresolved:
                desc += f"; inputs not found in ICAT: {', '.join(unresolved)}"
            ent["Dataset"]["description"] = desc[:NAME_LIMIT]
            collections.append({"DataCollection": {"dataCollectionDatasets": [{"dataset": {"id": i}} for i in inputs]}})
        ids = self.client.write(collections)
        for ent, dc in zip(entities, ids, strict=True):
            ent["Dataset"]["dataCollectionDatasets"] = [{"dataCollection": {"id": dc}}]

    def _found_or_created(self, entity: str, keys: Sequence[Any], owners: dict[Any, list[str]], receipt: Receipt, *, cache: _Lru,
                          cache_key: Callable[[Any], Any], query: Callable[[Sequence[Any]], str], key_of: Callable[[dict[str, Any]], Any],
                          make: Callable[[Any], dict[str, Any]], sample_of: Callable[[Any], int | None] | None = None,
                          before_create: Callable[[list[Any], list[dict[str, Any]]], None] | None = None) -> dict[Any, int]:
        """Ids of *keys*: from the cache, else looked up (in IN-list chunks), else created in one write.

        OBJECT_ALREADY_EXISTS on creation means another writer was faster: look up again (three rounds)."""
        out: dict[Any, int] = {}
        for k in keys:  # cached as (id, sample id): a dataset name met again under another sample is refused, not reused
            hit = cache.get(cache_key(k))
            if hit is not None and (sample_of is None or self._sample_ok(k, {"sample": {"id": hit[1]}}, sample_of(k), owners, receipt)):
                out[k] = hit[0]
        for attempt in (1, 2, 3):
            missing = [k for k in keys if k not in out and not all(e in receipt.rejected for e in owners.get(k, ["?"]))]
            for chunk in _chunks(missing, 50):
                for item in self.client.search_all(query(chunk), self.page_size):
                    row = item[entity]
                    k = key_of(row)
                    if k is None or k not in chunk:
                        continue
                    if sample_of is not None and not self._sample_ok(k, row, sample_of(k), owners, receipt):
                        continue
                    out[k] = int(row["id"])
                    cache.put(cache_key(k), (out[k], (row.get("sample") or {}).get("id")))
            missing = [k for k in missing if k not in out and not all(e in receipt.rejected for e in owners.get(k, ["?"]))]
            if not missing:
                break
            entities = [make(k) for k in missing]
            if before_create is not None:
                before_create(missing, entities)
            try:
                ids = self._write(entities, [owners.get(k, []) for k in missing], receipt)
            except IcatError as err:
                if err.code == "OBJECT_ALREADY_EXISTS" and attempt < 3:
                    continue
                raise
            for k, i in zip(missing, ids, strict=True):
                if i is not None:
                    out[k] = i
                    cache.put(cache_key(k), (i, sample_of(k) if sample_of is not None else None))
                    if entity in PARAMETER_ENTITY:
                        self._params.put((PARAMETER_ENTITY[entity][0], i), {})  # new: no parameters yet
            break
        return {k: i for k, i in out.items() if not all(e in receipt.rejected for e in owners.get(k, ["?"]))}

    @staticmethod
    def _sample_ok(w: _Where, row: dict[str, Any], sample_id: int | None, owners: dict[Any, list[str]], receipt: Receipt) -> bool:
        have = (row.get("sample") or {}).get("id")
        if sample_id is None or have is None or int(have) == sample_id:
            return True
        reason = (f"ICAT dataset names are unique per investigation, and {w.dataset!r} in {w.inv[0]}/{w.inv[1]} belongs to another "
                  "sample; put the sample in the sink's dataset_name (e.g. '{sample}_{dataset}')")
        for e in owners.get(w, []):
            receipt.rejected.setdefault(e, reason)
        return False

    # -- parameters ------------------------------------------------------------------------------------------

    def _known_parameters(self, entity: str, owner_field: str, owner_ids: list[int]) -> dict[int, dict[int, int]]:
        known: dict[int, dict[int, int]] = {}
        todo = []
        for oid in owner_ids:
            hit = self._params.get((entity, oid))
            if hit is None:
                todo.append(oid)
            else:
                known[oid] = hit
        for chunk in _chunks(sorted(todo), 100):
            for oid in chunk:
                known[oid] = {}
            q = (f"SELECT p.id, p.{owner_field}.id, p.type.id FROM {entity} p WHERE p.{owner_field}.id IN "
                 f"({', '.join(map(str, chunk))}) ORDER BY p.id")
            for pid, oid, tid in self.client.search_all(q, self.page_size):
                known[int(oid)][int(tid)] = int(pid)
        for oid, params in known.items():
            self._params.put((entity, oid), params)
        return known

    def _write_parameters(self, values: dict[tuple[_Where, int], tuple[str, Any, list[str]]], ids: dict[_Where, int],
                          receipt: Receipt) -> None:
        for attempt in (1, 2, 3):
            live = [(w, tid, v) for (w, tid), v in values.items() if w in ids and not all(e in receipt.rejected for e in v[2])]
            by_entity: dict[str, set[int]] = {}
            for w, _, _ in live:
                by_entity.setdefault(PARAMETER_ENTITY[w.kind][0], set()).add(ids[w])
            known = {pe: self._known_parameters(pe, dict(PARAMETER_ENTITY.values())[pe], sorted(oids)) for pe, oids in by_entity.items()}
            entities, owners, meta = [], [], []
            for w, tid, (fld, value, envs) in live:
                pe, of = PARAMETER_ENTITY[w.kind]
                oid = ids[w]
                pid = known[pe][oid].get(tid)
                body = {"id": pid, fld: value} if pid is not None else {of: {"id": oid}, "type": {"id": tid}, fld: value}
                entities.append({pe: body})
                owners.append([e for e in envs if e not in receipt.rejected])
                meta.append((pe, oid, tid))
            if not entities:
                return
            try:
                got = self._write(entities, owners, receipt)
            except IcatError as err:
                if err.code == "OBJECT_ALREADY_EXISTS" and attempt < 3:
                    for pe, oid, _ in meta:  # another writer added some: look again, then update them
                        self._params.pop((pe, oid), None)
                    continue
                raise
            for (pe, oid, tid), pid in zip(meta, got, strict=True):
                if pid is not None:
                    known[pe][oid][tid] = pid
            return

    def _write(self, entities: list[dict[str, Any]], owners: list[list[str]], receipt: Receipt) -> list[int | None]:
        """One transactional write; an entity ICAT refuses (VALIDATION/BAD_PARAMETER at an offset) refuses its owners' records.

        The rest is written again without it. Without an offset the error goes up (the whole batch is refused)."""
        alive = list(range(len(entities)))
        out: list[int | None] = [None] * len(entities)
        while alive:
            try:
                ids = self.client.write([entities[i] for i in alive])
            except IcatError as err:
                if err.code in ("VALIDATION", "BAD_PARAMETER") and err.offset is not None and 0 <= err.offset < len(alive):
                    bad = alive.pop(err.offset)
                    for e in owners[bad]:
                        receipt.rejected.setdefault(e, f"ICAT refused it: {err.code}: {err.message[:300]}")
                    continue
                raise
            for i, new in zip(alive, ids, strict=True):
                out[i] = new
            break
        return out
