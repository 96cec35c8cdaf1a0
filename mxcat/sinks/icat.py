"""``icat``: records as ICAT parameters, written over the ICAT REST API in one transaction per batch.

The model mapping (ICAT 4.7+/5.x/6.x schema, icat.server entity classes): a session subject is an
``Investigation`` of the configured ``Facility`` (name = proposal, visitId = session, created with
``investigation_type`` when missing); a sample is a ``Sample`` (investigation + name); a raw dataset
is a ``Dataset`` of type ``dataset_type`` named by ``dataset_name`` (ICAT makes dataset names unique
per investigation, not per sample: a name already used by another sample is refused with a hint);
a processing subject is a ``Dataset`` of type ``processed_dataset_type`` named by ``processed_name``,
whose description names the processing, the program and the inputs. How it was made is ICAT's own
provenance model: a ``Job`` of an ``Application`` (the provenance's program and version, found or
created per facility) whose ``inputDataCollection`` holds the inputs (the parent dataset, and the
other input datasets this sink has seen or that are given as subject paths) and whose
``outputDataCollection`` holds the processed dataset alone, so that inputs and output are never
mixed. ICAT refers to existing entities by id only, so this takes three writes after the processed
dataset's: its output collection, then the inputs collection with the Job nested in it (one
transaction). Each step is found again after a failure or a lost answer (the processed dataset by
name; an output collection as a collection holding only it and used by no Job; a finished link as a
Job whose output holds it), so that redelivery neither duplicates nor orphans anything. The account
needs CREATE on Application, Job, DataCollection and DataCollectionDataset for this.
Records of session level become ``InvestigationParameter``, of sample level ``SampleParameter``, of
dataset and processing level ``DatasetParameter`` of the (raw or processed) dataset. One value per
ParameterType per owner: a new value updates the existing parameter. ParameterTypes are matched by
(name, units) as ``mxcat.ontology.export.icat_parameter_types`` names them (``names`` = ``mmcat`` or
``esrf``), values converted to that unit; a record whose type ICAT lacks is refused with the hint to
run ``mxcat icat sync-parameter-types`` (or created on the fly with ``create_parameter_types``).
Refused per record, with the reason: what :func:`mxcat.sinks.icat_types.param_value` refuses, and
non-applicable types. Tables, image-range records (an image range has no ICAT entity, and sharing its
dataset's ParameterType would overwrite the dataset's own value), and beamline- or proposal-level
records (ICAT has no parameters there) are acknowledged without being sent and logged once per
category: they stay in the embedded catalogue. Ids of investigations, samples, datasets, parameter
types, parameters and applications are cached per sink; OBJECT_ALREADY_EXISTS (a concurrent writer,
or a retried batch) means "look it up and update", NO_SUCH_OBJECT_FOUND (something deleted in ICAT)
empties the caches and retries once, and VALIDATION/BAD_PARAMETER at an offset refuses only the
records behind that entity. Other errors map through :data:`mxcat.sinks.icat_client.ICAT_ERRORS`:
what no record can fix (the account's permissions, a server too old, a refused query) keeps the
records in the outbox and is reported by :meth:`IcatSink.health` until a batch goes through. The
look-ups select several attributes (``SELECT p.id, p.dataset.id, p.type.id ...``), which ICAT's REST
search allows since icat.server 4.7.0, the release that brought the REST write this sink needs.
Requests per batch: a few look-ups (cached afterwards), one write per entity level created, and one
write for all parameters.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mxcat.errors import ConfigError, SinkUnavailable, ValidationError
from mxcat.records import Subject
from mxcat.sinks import Envelope, Health, Receipt
from mxcat.sinks.icat_client import CONFIGURATION_CODES, IcatClient, IcatError, quote, sink_error
from mxcat.sinks.icat_types import (
    APPLICABLE_FLAG,
    NAME_FIELDS,
    NAME_LIMIT,
    PARAMETER_ENTITY,
    PT_FIELDS,
    STRING_LIMIT,
    SYNC_HINT,
    TYPE_RELOAD_INTERVAL,
    VALUE_FIELD,
    Conflict,
    FacilityTypes,
    IcatOptions,
    IcatSetupError,
    JobPlan,
    KeyPlan,
    Lru,
    ParamType,
    Refuse,
    SyncReport,
    Where,
    check_template,
    chunks,
    icat_date,
    job_plan,
    key_plans,
    param_value,
    where_of,
)

__all__ = ["IcatOptions", "IcatSink", "ParamType", "KeyPlan", "Conflict", "SyncReport", "JobPlan", "FacilityTypes", "IcatSetupError",
           "icat_date", "key_plans", "STRING_LIMIT", "NAME_LIMIT", "NAME_FIELDS", "PARAMETER_ENTITY", "APPLICABLE_FLAG", "VALUE_FIELD",
           "PT_FIELDS", "SYNC_HINT", "TYPE_RELOAD_INTERVAL"]

log = logging.getLogger(__name__)


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
        check_template(dataset_name, "dataset_name", name)
        check_template(processed_name, "processed_name", name)
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
        self.types = FacilityTypes(self.client, sink=name, facility=self.facility, names=names, ontology=ontology, page_size=page_size,
                                   create=create_parameter_types, investigation_type=investigation_type,
                                   dataset_types=(dataset_type, processed_dataset_type))
        self._noted: set[str] = set()
        self._problem: str | None = None
        """A configuration problem the last batch met (permissions, server, facility): reported by health() until a batch passes."""
        self._forget()

    def _forget(self) -> None:
        """Empty every id cache (after ICAT said an id we cached does not exist)."""
        self.types.forget()
        self._inv = Lru(2_000)
        self._samples = Lru(20_000)
        self._datasets = Lru(50_000)
        self._params = Lru(5_000)
        self._subject_ds = Lru(50_000)
        self._apps = Lru(1_000)
        self._linked = Lru(50_000)
        """Processed dataset ids known to have their Job (inputs and output collections)."""

    # -- protocol --------------------------------------------------------------------------------------

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        base = Receipt()
        work: list[tuple[Envelope, Subject, Where]] = []
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
            except (ValidationError, Refuse) as err:
                base.rejected[env["id"]] = str(err)
                continue
            if where is None:
                if subject.kind == "image_range":
                    self._note("level image_range", f"ICAT has no entity for an image range, and its values (such as {env.get('key')}) "
                               "would overwrite the dataset's own value of the same ParameterType: image-range records stay in the "
                               "embedded catalogue and are not sent to ICAT")
                else:
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
                    self._problem = None
                    return receipt
                except IcatError as err:
                    if err.code != "NO_SUCH_OBJECT_FOUND" or attempt == 2:
                        raise
                    log.info("ICAT no longer has an entity mxcat cached (%s); looking everything up again", err.message[:200])
                    self._forget()
        except IcatSetupError as err:
            self._problem = str(err)
            raise
        except IcatError as err:
            raise self._sink_error(err) from err
        return base  # not reached

    def health(self) -> Health:
        """ICAT answers, the account logs in, and the last batch met no configuration problem (permissions, server, facility)."""
        try:
            v = self.client.version()
            self.client.ensure_session()
        except (SinkUnavailable, IcatError) as err:
            return Health(False, str(err))
        if self._problem is not None:
            return Health(False, self._problem)
        return Health(True, f"ICAT {v} at {self.client.base} as {self.client.account}")

    def close(self) -> None:
        self.client.close()

    def _note(self, what: str, message: str) -> None:
        if what not in self._noted:
            self._noted.add(what)
            log.warning("sink %s: %s (logged once)", self.name, message)

    def _sink_error(self, err: IcatError) -> Exception:
        """The outbox's exception for an ICAT error; one that no record can fix is remembered for health()."""
        mapped = sink_error(err, self.name, self.client.account)
        if isinstance(mapped, SinkUnavailable) and (err.code in CONFIGURATION_CODES or err.call == "search"):
            self._problem = str(mapped)
        return mapped

    # -- subjects to ICAT entities ------------------------------------------------------------------------

    def _where(self, s: Subject) -> Where | None:
        return where_of(s, self.dataset_name, self.processed_name)

    # -- parameter types ------------------------------------------------------------------------------------

    def plans(self) -> dict[str, KeyPlan]:
        """mmCAT key -> its ParameterType definition (from the ontology export) and unit conversion."""
        return self.types.plans()

    def sync_parameter_types(self, *, dry_run: bool = False) -> SyncReport:
        """Create the ParameterTypes of the ontology export that ICAT lacks; report conflicts without changing them."""
        try:
            return self.types.sync(self._write, dry_run=dry_run)
        except IcatSetupError as err:
            self._problem = str(err)
            raise
        except IcatError as err:
            raise self._sink_error(err) from err

    # -- one batch ------------------------------------------------------------------------------------------

    def _deliver(self, work: list[tuple[Envelope, Subject, Where]], receipt: Receipt) -> None:
        self.types.ensure()
        plans = self.plans()
        items: list[tuple[Envelope, Subject, Where, KeyPlan]] = []
        for env, subject, where in work:
            plan = plans.get(env["key"])
            if plan is None:
                receipt.rejected[env["id"]] = f"{env['key']} has no ICAT ParameterType in the mmCAT export (a table or internal key)"
            else:
                items.append((env, subject, where, plan))
        self.types.ensure_types([p for _, _, _, p in items], self._write)
        values: dict[tuple[Where, int], tuple[str, Any, list[str]]] = {}
        subjects: dict[Where, Subject] = {}
        provenance: dict[Where, dict[str, Any]] = {}
        for env, subject, where, plan in items:
            try:
                pt = self.types.param_type(plan)
                if where.kind not in pt.applicable:
                    raise Refuse(f"ICAT ParameterType {pt.name!r} is not applicable to a {where.kind}")
                fld, value = param_value(env, plan, pt, self.types.onto.units)
            except Refuse as err:
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

    # -- investigations, samples, datasets ------------------------------------------------------------------

    def _resolve(self, subjects: dict[Where, Subject], values: dict[tuple[Where, int], tuple[str, Any, list[str]]],
                 provenance: dict[Where, dict[str, Any]], receipt: Receipt) -> dict[Where, int]:
        """ICAT ids of every entity that receives parameters, found or created level by level."""
        owners: dict[Any, list[str]] = {}

        def own(key: Any, envs: list[str]) -> None:
            owners.setdefault(key, []).extend(envs)

        raw_for: dict[Where, Where] = {}
        for (w, _), (_, _, envs) in values.items():
            own(w.inv, envs)
            if w.sample is not None:
                own((w.inv, w.sample), envs)
            if w.kind == "Dataset":
                own(w, envs)
                if w.processed:
                    raw_for[w] = Where("Dataset", w.inv, w.sample, w.parent)
                    own(raw_for[w], envs)
        fid = self.types.facility_id
        # investigations
        inv_ids = self._found_or_created(
            "Investigation", sorted({w.inv for w in subjects}), owners, receipt, cache=self._inv, cache_key=lambda k: k,
            query=lambda ks: (f"SELECT x FROM Investigation x WHERE x.facility.id = {fid} AND x.name IN "
                              f"({', '.join(quote(k[0]) for k in ks)}) ORDER BY x.id"),
            key_of=lambda row: (row["name"], row["visitId"]),
            make=lambda k: {"Investigation": {"facility": {"id": fid}, "name": k[0], "visitId": k[1], "title": f"{k[0]} {k[1]}"[:NAME_LIMIT],
                                              "type": {"id": self.types.type_id("InvestigationType", self.investigation_type)}}})
        out: dict[Where, int] = {w: inv_ids[w.inv] for w in subjects if w.kind == "Investigation" and w.inv in inv_ids}
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
        # raw datasets (including the parents of processed ones), then processed datasets, then how each was made
        raw = sorted({w for w in subjects if w.kind == "Dataset" and not w.processed} | set(raw_for.values()), key=repr)
        raw_ids = self._datasets_of(raw, inv_ids, sample_ids, owners, receipt)
        out.update({w: i for w, i in raw_ids.items() if w in subjects})
        for w, s in subjects.items():  # remember subject -> dataset, so that processings can name them as inputs
            if w.kind == "Dataset" and (ds := s.at("dataset")) is not None and raw_for.get(w, w) in raw_ids:
                self._subject_ds.put(ds.id, raw_ids[raw_for.get(w, w)])
        processed = sorted((w for w in subjects if w.processed and raw_for.get(w) in raw_ids), key=repr)
        jobs = {w: job_plan(subjects[w], provenance.get(w, {}), raw_for[w], raw_ids[raw_for[w]], self._subject_ds) for w in processed}
        created: set[int] = set()
        done = self._datasets_of(processed, inv_ids, sample_ids, owners, receipt, jobs, created)
        out.update(done)
        for w in done:
            if (proc := subjects[w].at("processing")) is not None:
                self._subject_ds.put(proc.id, done[w])
        self._link_processed({w: (i, jobs[w]) for w, i in done.items()}, created, owners, receipt)
        return out

    def _datasets_of(self, wheres: list[Where], inv_ids: dict[Any, int], sample_ids: dict[Any, int], owners: dict[Any, list[str]],
                     receipt: Receipt, jobs: dict[Where, JobPlan] | None = None, created: set[int] | None = None) -> dict[Where, int]:
        """Raw datasets, or (with *jobs*) processed ones described by their JobPlan; ids created now are added to *created*."""
        out: dict[Where, int] = {}
        for inv in sorted({w.inv for w in wheres if w.inv in inv_ids}):
            iid = inv_ids[inv]
            keys = [w for w in wheres if w.inv == inv and (w.sample is None or (inv, w.sample) in sample_ids)]
            if not keys:
                continue
            type_name = self.processed_dataset_type if jobs is not None else self.dataset_type

            def make(w: Where, iid: int = iid, type_name: str = type_name) -> dict[str, Any]:
                body: dict[str, Any] = {"investigation": {"id": iid}, "name": w.dataset, "type": {"id": self.types.type_id("DatasetType", type_name)}}
                if w.sample is not None:
                    body["sample"] = {"id": sample_ids[(w.inv, w.sample)]}
                if jobs is not None:
                    body["description"] = jobs[w].description
                return {"Dataset": body}

            found = self._found_or_created(
                "Dataset", keys, owners, receipt, cache=self._datasets, cache_key=lambda w, iid=iid: (iid, w.dataset),
                query=lambda ks, iid=iid: (f"SELECT x FROM Dataset x WHERE x.investigation.id = {iid} AND x.name IN "
                                           f"({', '.join(quote(str(w.dataset)) for w in ks)}) ORDER BY x.id INCLUDE x.sample"),
                key_of=lambda row, keys=keys: next((w for w in keys if w.dataset == row["name"]), None),
                make=make, sample_of=lambda w: sample_ids.get((w.inv, w.sample)) if w.sample is not None else None, created=created)
            out.update(found)
        return out

    # -- how a processed dataset was made: Application, Job, input and output DataCollections ---------------------

    def _link_processed(self, done: dict[Where, tuple[int, JobPlan]], created: set[int], owners: dict[Any, list[str]],
                        receipt: Receipt) -> None:
        """Give each processed dataset without one a Job: inputs collection -> Job (Application) -> output collection.

        Two writes for the whole batch: the Applications ICAT lacks with the output collections (the
        processed dataset alone), then the inputs collections with their Job nested. A dataset not
        created in this batch is looked up first, so that a step done before a failure or a lost
        answer is found, not repeated."""
        todo = {w: v for w, v in done.items() if v[0] not in self._linked and not self._all_refused(owners.get(w), receipt)}
        if not todo:
            return
        linked, out_dc = self._link_state(sorted({pid for pid, _ in todo.values()} - created))
        for pid in linked:
            self._linked.put(pid, True)
        todo = {w: v for w, v in todo.items() if v[0] not in linked}
        app_owners: dict[tuple[str, str], list[str]] = {}
        for w, (_, plan) in todo.items():
            app_owners.setdefault(plan.app, []).extend(owners.get(w, []))
        apps: dict[tuple[str, str], int] = {}
        for attempt in (1, 2, 3):
            apps = self._applications(sorted(app_owners))
            new_apps = [k for k in sorted(app_owners) if k not in apps and not self._all_refused(app_owners[k], receipt)]
            need = [w for w, (pid, _) in todo.items() if pid not in out_dc and not self._all_refused(owners.get(w), receipt)]
            if not new_apps and not need:
                break
            fid = self.types.facility_id
            entities = ([{"Application": {"facility": {"id": fid}, "name": k[0], "version": k[1]}} for k in new_apps]
                        + [{"DataCollection": {"dataCollectionDatasets": [{"dataset": {"id": todo[w][0]}}]}} for w in need])
            try:
                got = self._write(entities, [app_owners[k] for k in new_apps] + [owners.get(w, []) for w in need], receipt)
            except IcatError as err:
                if err.code == "OBJECT_ALREADY_EXISTS" and attempt < 3:
                    continue  # another client created an Application meanwhile: look again
                raise
            for k, i in zip(new_apps, got[:len(new_apps)], strict=True):
                if i is not None:
                    apps[k] = i
                    self._apps.put(k, i)
            out_dc.update({todo[w][0]: i for w, i in zip(need, got[len(new_apps):], strict=True) if i is not None})
            break
        ready = [w for w, (pid, plan) in todo.items() if pid in out_dc and plan.app in apps and not self._all_refused(owners.get(w), receipt)]
        if not ready:
            return
        entities = [{"DataCollection": {"dataCollectionDatasets": [{"dataset": {"id": i}} for i in todo[w][1].inputs],
                                        "jobsAsInput": [{"application": {"id": apps[todo[w][1].app]}, "arguments": todo[w][1].arguments,
                                                         "outputDataCollection": {"id": out_dc[todo[w][0]]}}]}} for w in ready]
        got = self._write(entities, [owners.get(w, []) for w in ready], receipt)
        for w, i in zip(ready, got, strict=True):
            if i is not None:
                self._linked.put(todo[w][0], True)

    def _applications(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Ids of the Applications (name, version) of the facility that ICAT has: cached, else looked up."""
        out = {k: self._apps[k] for k in keys if k in self._apps}
        want = [k for k in keys if k not in out]
        for chunk in chunks(want, 50):
            q = (f"SELECT a FROM Application a WHERE a.facility.id = {self.types.facility_id} AND a.name IN "
                 f"({', '.join(quote(k[0]) for k in chunk)}) ORDER BY a.id")
            for item in self.client.search_all(q, self.page_size):
                row = item["Application"]
                k = (row["name"], row["version"])
                if k in chunk:
                    out[k] = int(row["id"])
                    self._apps.put(k, out[k])
        return out

    def _link_state(self, pids: list[int]) -> tuple[set[int], dict[int, int]]:
        """Of processed datasets ICAT already had: those with a Job (their collection is a Job's output), and an output
        collection left without its Job (holding the dataset alone, used by no Job) for the others."""
        colls: dict[int, list[int]] = {}
        for chunk in chunks(pids, 100):
            q = (f"SELECT d.dataset.id, d.dataCollection.id FROM DataCollectionDataset d WHERE d.dataset.id IN "
                 f"({', '.join(map(str, chunk))}) ORDER BY d.id")
            for pid, dc in self.client.search_all(q, self.page_size):
                colls.setdefault(int(pid), []).append(int(dc))
        dcs = sorted({dc for v in colls.values() for dc in v})
        as_output: set[int] = set()
        as_input: set[int] = set()
        members: Counter[int] = Counter()
        for chunk in chunks(dcs, 100):
            ids = ", ".join(map(str, chunk))
            as_output.update(int(x) for x in self.client.search_all(
                f"SELECT j.outputDataCollection.id FROM Job j WHERE j.outputDataCollection.id IN ({ids}) ORDER BY j.id", self.page_size))
            as_input.update(int(x) for x in self.client.search_all(
                f"SELECT j.inputDataCollection.id FROM Job j WHERE j.inputDataCollection.id IN ({ids}) ORDER BY j.id", self.page_size))
            members.update(int(x) for x in self.client.search_all(
                f"SELECT d.dataCollection.id FROM DataCollectionDataset d WHERE d.dataCollection.id IN ({ids}) ORDER BY d.id",
                self.page_size))
        linked = {pid for pid, v in colls.items() if any(dc in as_output for dc in v)}
        left: dict[int, int] = {}
        for pid, v in colls.items():
            spare = [dc for dc in v if members[dc] == 1 and dc not in as_input and dc not in as_output]
            if pid not in linked and spare:
                left[pid] = spare[0]
        return linked, left

    @staticmethod
    def _all_refused(envs: list[str] | None, receipt: Receipt) -> bool:
        return all(e in receipt.rejected for e in envs or ["?"])

    def _found_or_created(self, entity: str, keys: Sequence[Any], owners: dict[Any, list[str]], receipt: Receipt, *, cache: Lru,
                          cache_key: Callable[[Any], Any], query: Callable[[Sequence[Any]], str], key_of: Callable[[dict[str, Any]], Any],
                          make: Callable[[Any], dict[str, Any]], sample_of: Callable[[Any], int | None] | None = None,
                          created: set[int] | None = None) -> dict[Any, int]:
        """Ids of *keys*: from the cache, else looked up (in IN-list chunks), else created in one write (ids added to *created*).

        OBJECT_ALREADY_EXISTS on creation means another writer was faster: look up again (three rounds)."""
        out: dict[Any, int] = {}
        for k in keys:  # cached as (id, sample id): a dataset name met again under another sample is refused, not reused
            hit = cache.get(cache_key(k))
            if hit is not None and (sample_of is None or self._sample_ok(k, {"sample": {"id": hit[1]}}, sample_of(k), owners, receipt)):
                out[k] = hit[0]
        for attempt in (1, 2, 3):
            missing = [k for k in keys if k not in out and not self._all_refused(owners.get(k), receipt)]
            for chunk in chunks(missing, 50):
                for item in self.client.search_all(query(chunk), self.page_size):
                    row = item[entity]
                    k = key_of(row)
                    if k is None or k not in chunk:
                        continue
                    if sample_of is not None and not self._sample_ok(k, row, sample_of(k), owners, receipt):
                        continue
                    out[k] = int(row["id"])
                    cache.put(cache_key(k), (out[k], (row.get("sample") or {}).get("id")))
            missing = [k for k in missing if k not in out and not self._all_refused(owners.get(k), receipt)]
            if not missing:
                break
            try:
                ids = self._write([make(k) for k in missing], [owners.get(k, []) for k in missing], receipt)
            except IcatError as err:
                if err.code == "OBJECT_ALREADY_EXISTS" and attempt < 3:
                    continue
                raise
            for k, i in zip(missing, ids, strict=True):
                if i is not None:
                    out[k] = i
                    cache.put(cache_key(k), (i, sample_of(k) if sample_of is not None else None))
                    if created is not None:
                        created.add(i)
                    if entity in PARAMETER_ENTITY:
                        self._params.put((PARAMETER_ENTITY[entity][0], i), {})  # new: no parameters yet
            break
        return {k: i for k, i in out.items() if not self._all_refused(owners.get(k), receipt)}

    @staticmethod
    def _sample_ok(w: Where, row: dict[str, Any], sample_id: int | None, owners: dict[Any, list[str]], receipt: Receipt) -> bool:
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
        for chunk in chunks(sorted(todo), 100):
            for oid in chunk:
                known[oid] = {}
            q = (f"SELECT p.id, p.{owner_field}.id, p.type.id FROM {entity} p WHERE p.{owner_field}.id IN "
                 f"({', '.join(map(str, chunk))}) ORDER BY p.id")
            for pid, oid, tid in self.client.search_all(q, self.page_size):
                known[int(oid)][int(tid)] = int(pid)
        for oid, params in known.items():
            self._params.put((entity, oid), params)
        return known

    def _write_parameters(self, values: dict[tuple[Where, int], tuple[str, Any, list[str]]], ids: dict[Where, int],
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
