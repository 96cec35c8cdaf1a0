"""``icatplus``: ESRF ICAT+ through its STOMP message broker (ActiveMQ at ESRF), as pyicat-plus sends it.

Formats follow ESRF's client library pyicat-plus 3.1 (``IcatMetadataClient.send_metadata``,
``store_processed_data``, ``IcatUpdateMetadataClient.send_update_metadata``) and its XSD model of
``http://www.esrf.fr/icat``; the transport is STOMP 1.1 (stomp.github.io) through stomp.py. The
message bodies and the STOMP link are in :mod:`mxcat.sinks.icatplus_messages`; this module decides
what to send and keeps the delivery state.

* A dataset (subject level ``dataset``, or ``processing`` for processed data) becomes ONE XML
  ``<tns:dataset>`` message on ``/queue/icatIngest`` the first time this sink delivers records of it:
  investigation (proposal) and instrument (beamline) in lower case, name, location, start/end dates,
  sample name, and every record of the batch with an ESRF name from the ontology (scheme
  ``esrf_icat``, relations exact and close; values as strings in the ESRF unit) plus the fixed
  parameters pyicat-plus adds. Processed datasets carry ``input_datasets`` (input locations). Without
  ``startDate``/``endDate`` records the dates are the earliest and latest ``provenance.created`` of
  the records; a ``created`` that is not ISO 8601 is left out, and when none is usable the delivery
  time stands in (as pyicat-plus dates a dataset given without dates; logged once).
* Later records of a dataset already sent go as JSON ``icatUpdateDatasetMetadata`` messages (one
  name/value per message, as ICAT+ takes them). Records of a sample, session, proposal or beamline
  are inherited by the datasets below them: included in dataset messages sent later, and sent as
  updates (``datasetPaths`` = every known dataset below) to those already sent.
* Not carried, and acknowledged: tables, image-range records, records without an ESRF name
  (``unmapped: skip``, the default: ICAT+ stores parameters only for ParameterTypes the facility
  registered, and pyicat-plus flags other names as "Unknown ICAT fields"; ``unmapped: send`` sends
  the mmCAT flat key, matching ``icat_parameter_types(onto, names="esrf")``), and names ICAT+ takes
  from the subject (Sample_name, proposal, location, ...). Refused with a reason: datasets without
  proposal, beamline or sample, values over 4000 characters, and records any of whose message texts
  (subject levels and inputs, location, input locations, parameter names and values, update fields)
  holds a character XML 1.0 cannot carry; the reason names the field. No frame ever holds a NUL.

Delivery: messages are persistent (``persistent:true``) and sent with a receipt each; ``put``
returns only when the broker has confirmed every message (RabbitMQ and ActiveMQ confirm persistent
sends once stored). What was confirmed is written to a small SQLite state file (``state_path``):
record ids with their content digest, datasets sent with their location. That file makes the
dataset-versus-update decision and redelivery idempotent: a record delivered again with the same
content is acknowledged without a message. Delivery is nevertheless at-least-once, twice over: a
connection that drops after the broker stored a message but before its receipt arrived, and a
process that dies between the broker's receipts and the commit of the state file, both make the
records come again and their messages (dataset messages included) go again. Every message carries a
stable ``mxcat_message_id`` header (hash of destination, body and, for updates, how often the record
was confirmed before), but ESRF's ICAT+ ingester does not read it: a repeated dataset message reaches
ICAT+ twice. Marking a dataset "sending" before its SEND would not close the gap: after a crash the
mark cannot tell a message the broker stored from one that never left, and an update cannot create
a dataset, so answering with updates would turn a possible repeat into a possible loss. The window is
one SQLite commit after the last receipt. Brokers are tried in the configured order (failover); a
broker that cannot be reached, a lost connection, a missing receipt and refused credentials are all
:class:`~mxcat.errors.SinkUnavailable`: the records wait in the outbox until the cause is fixed.
Frames carry no ``content-length`` (as pyicat-plus's stompest sends them), so ActiveMQ hands the
ingester a TextMessage. The passcode comes from ``passcode_env`` or ``passcode_file`` and is never
logged, not even by stomp.py at DEBUG level (it would print it; a filter masks it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mxcat import __version__
from mxcat.errors import ConfigError, MxcatError, SinkError, SinkUnavailable
from mxcat.records import Subject
from mxcat.sinks import Envelope, Health, Receipt
from mxcat.sinks.icatplus_messages import (
    DATASET_QUEUE,
    MAX_VALUE,
    NAMESPACE,
    UPDATE_QUEUE,
    Link,
    LinkDown,
    Message,
    Names,
    UnsafeText,
    check_text,
    dataset_xml,
    digest,
    host_port,
    instant,
    update_json,
    value_text,
    zulu,
)

__all__ = ["DATASET_QUEUE", "MAX_VALUE", "NAMESPACE", "PROCESSED_TEMPLATE", "RAW_TEMPLATE", "RESERVED", "UPDATE_QUEUE", "IcatPlusOptions",
           "IcatPlusSink", "UnsafeText", "dataset_xml", "update_json"]

log = logging.getLogger(__name__)

RAW_TEMPLATE = "/data/visitor/{proposal_lower}/{beamline_dir}/{session}/RAW_DATA/{sample}/{dataset}"
PROCESSED_TEMPLATE = "/data/visitor/{proposal_lower}/{beamline_dir}/{session}/PROCESSED_DATA/{sample}/{dataset}/{processing}"
"""Default locations, ESRF's layout. Fields: the subject's levels, each also as ``<level>_lower``, and
``beamline_dir`` (lower case without '-', as ESRF names beamline directories: ID30A-1 -> id30a1)."""
_LEVELS = ("facility", "beamline", "proposal", "session", "sample", "dataset", "processing")
RESERVED = frozenset({"Sample_name", "beamlineID", "datasetName", "proposal", "location", "startDate", "endDate", "machine",
                      "software", "complete", "input_datasets", "investigationId"})
"""Parameter names ICAT+ takes from the dataset's identity, never from a record."""
ANCESTORS = ("beamline", "proposal", "session", "sample")
DIRECTORY_KEY = "mmcat_collection.directory"


class IcatPlusOptions(BaseModel):
    """Options of the ``icatplus`` sink (validated by :func:`mxcat.sinks.create`)."""

    model_config = ConfigDict(extra="forbid")
    brokers: list[str] = Field(min_length=1)
    """``host:port`` of each broker, tried in this order (a comma-separated string is accepted)."""
    dataset_queue: str = DATASET_QUEUE
    update_queue: str = UPDATE_QUEUE
    login: str | None = None
    passcode_env: str | None = None
    passcode_file: str | None = None
    vhost: str | None = None
    tls: bool = False
    verify: bool | str = True
    """TLS certificate check: True (system CAs), a CA bundle path, or False (not recommended)."""
    timeout: float = Field(10.0, gt=0, le=600)
    """Seconds for connecting and for the broker's receipts of one batch."""
    state_path: str | None = None
    """Delivery state file; default ``<data dir>/icatplus-<sink name>.sqlite``; ``:memory:`` keeps it per process."""
    location_template: str = RAW_TEMPLATE
    processed_location_template: str = PROCESSED_TEMPLATE
    location_from_directory: bool = True
    """Use a raw dataset's ``mmcat_collection.directory`` record as its location when the first batch has one."""
    unmapped: Literal["skip", "send"] = "skip"
    machine: str | None = None
    """The ``machine`` parameter (default: this host's fully qualified name)."""
    max_paths: int = Field(100, ge=1, le=10_000)
    """Dataset paths per update message for records inherited by many datasets."""

    @field_validator("brokers", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("verify", mode="before")
    @classmethod
    def _flag(cls, v: Any) -> Any:
        flags = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        return flags.get(v.strip().lower(), v) if isinstance(v, str) else v

    @field_validator("brokers")
    @classmethod
    def _check(cls, v: list[str]) -> list[str]:
        for b in v:
            host_port(b)
        return v

    @field_validator("machine", "location_template", "processed_location_template")
    @classmethod
    def _carried(cls, v: str | None) -> str | None:
        return None if v is None else check_text("the text", v)  # it goes into every dataset message


@dataclass(slots=True)
class _Item:
    """One record and the messages that must be confirmed before it counts as delivered."""

    id: str
    digest: str
    needs: list[int] = field(default_factory=list)
    inherit: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    messages: list[Message] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)
    datasets: dict[int, tuple[str, str, str, str, tuple[str, ...]]] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    """Locations of the datasets this plan creates, by subject id (inputs of processed datasets in the same batch)."""
    previous: dict[str, tuple[str, int]] = field(default_factory=dict)
    """(digest, deliveries) of each record the broker confirmed before. Updates salt their message id with
    the count, so that a value changed back (A, B, A) is not taken for a repeat of the first A."""

    def salt(self, record_id: str) -> str:
        return f"{record_id}:{self.previous.get(record_id, ('', 0))[1]}"

    def add(self, msg: Message) -> int:
        self.messages.append(msg)
        return len(self.messages) - 1


# -- delivery state ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (subject_id TEXT PRIMARY KEY, location TEXT NOT NULL, proposal TEXT NOT NULL,
                                     beamline TEXT NOT NULL, message_id TEXT NOT NULL, sent REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lineage (ancestor_id TEXT NOT NULL, subject_id TEXT NOT NULL,
                                    PRIMARY KEY (ancestor_id, subject_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sent (record_id TEXT PRIMARY KEY, digest TEXT NOT NULL, message_id TEXT NOT NULL,
                                 deliveries INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inherited (ancestor_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
                                      PRIMARY KEY (ancestor_id, name)) WITHOUT ROWID;
"""


class _State:
    """What the broker confirmed: records (id, digest) and datasets (location), in SQLite."""

    def __init__(self, path: str) -> None:
        try:
            if path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path if path == ":memory:" else str(Path(path).expanduser()), timeout=30,
                                      isolation_level=None, check_same_thread=False)
            if path != ":memory:":
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"cannot open the ICAT+ delivery state: {err}", key="state_path", path=path) from err

    def dataset(self, subject_id: str) -> tuple[str, str, str] | None:
        return self.db.execute("SELECT location, proposal, beamline FROM datasets WHERE subject_id=?", (subject_id,)).fetchone()

    def descendants(self, ancestor_id: str) -> list[tuple[str, str, str]]:
        return self.db.execute("SELECT d.location, d.proposal, d.beamline FROM lineage l JOIN datasets d USING (subject_id) "
                               "WHERE l.ancestor_id=? ORDER BY d.location", (ancestor_id,)).fetchall()

    def inherited(self, ancestor_id: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, value FROM inherited WHERE ancestor_id=?", (ancestor_id,)).fetchall())

    def digests(self, record_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """(content digest, confirmed deliveries) of the records the broker confirmed before."""
        ids = list(record_ids)
        out: dict[str, tuple[str, int]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            q = f"SELECT record_id, digest, deliveries FROM sent WHERE record_id IN ({','.join('?' * len(part))})"
            out.update((r, (d, n)) for r, d, n in self.db.execute(q, part))
        return out

    def commit(self, plan: _Plan, confirmed: set[int], items: list[_Item]) -> None:
        if not items and not confirmed:
            return
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for idx, (sid, location, proposal, beamline, ancestors) in plan.datasets.items():
                if idx in confirmed:
                    self.db.execute("INSERT OR REPLACE INTO datasets VALUES (?,?,?,?,?,?)",
                                    (sid, location, proposal, beamline, plan.messages[idx].message_id, now))
                    self.db.executemany("INSERT OR IGNORE INTO lineage VALUES (?,?)", [(a, sid) for a in ancestors])
            for it in items:
                mid = plan.messages[it.needs[-1]].message_id if it.needs else ""
                self.db.execute("INSERT INTO sent VALUES (?,?,?,1) ON CONFLICT (record_id) DO UPDATE SET digest=excluded.digest, "
                                "message_id=excluded.message_id, deliveries=deliveries+1", (it.id, it.digest, mid))
                self.db.executemany("INSERT OR REPLACE INTO inherited VALUES (?,?,?)", it.inherit)

    def close(self) -> None:
        self.db.close()


# -- the sink ------------------------------------------------------------------------------------


class IcatPlusSink:
    """Delivers envelopes to ESRF ICAT+ as STOMP messages (options: :class:`IcatPlusOptions`).

    ``passcode`` arrives resolved from ``passcode_env`` / ``passcode_file``; ``onto`` defaults to the
    shipped mmCAT ontology.
    """

    Options = IcatPlusOptions

    def __init__(self, name: str = "icatplus", *, passcode: str | None = None, onto: Any = None, **options: Any) -> None:
        if any(k.endswith(("_env", "_file")) for k in options):
            from mxcat.config import secret_from

            resolved = secret_from({k: v for k, v in options.items() if k.startswith("passcode_")}, where=f"sinks.{name}.options")
            passcode = resolved.get("passcode", passcode)
            options = {k: v for k, v in options.items() if not k.startswith("passcode_")}
        try:
            self.options = opts = IcatPlusOptions.model_validate(options)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ConfigError(first["msg"], key=f"sinks.{name}.options.{key}") from err
        try:
            import stomp  # noqa: F401
        except ImportError as err:
            raise ConfigError("the icatplus sink needs stomp.py: pip install 'mxcat[icatplus]'", key=f"sinks.{name}") from err
        if onto is None:
            from mxcat.ontology import load

            onto = load()
        self.name = name
        for tpl_name in ("location_template", "processed_location_template"):
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(getattr(opts, tpl_name)) if f}
            except ValueError as err:
                raise ConfigError(f"malformed template: {err}", key=f"sinks.{name}.options.{tpl_name}") from err
            unknown = fields - set(_LEVELS) - {f"{lv}_lower" for lv in _LEVELS} - {"beamline_dir"}
            if unknown:
                raise ConfigError(f"unknown template field(s) {sorted(unknown)}; known: the subject levels, <level>_lower, beamline_dir",
                                  key=f"sinks.{name}.options.{tpl_name}")
        if opts.tls and opts.verify is False:
            log.warning("sink %s: TLS certificate verification is OFF", name)
        self.machine = opts.machine or socket.getfqdn()
        self.software = f"mxcat_v{__version__}"
        self._names = Names(onto, opts.unmapped)
        if opts.state_path is None:
            from mxcat.config import data_dir

            state = str(data_dir() / f"icatplus-{name}.sqlite")
        else:
            state = opts.state_path
        self._state = _State(state)
        self._link = Link(name, [host_port(b) for b in opts.brokers], opts.login, passcode, opts.vhost, opts.tls, opts.verify,
                           opts.timeout)
        self._skipped: set[str] = set()
        self._bad_created = False

    def __repr__(self) -> str:
        return f"IcatPlusSink(name={self.name!r}, brokers={self.options.brokers!r})"

    # -- Sink protocol ----------------------------------------------------------------------------

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        receipt = Receipt()
        try:
            plan = self._plan(envelopes, receipt)
            confirmed: set[int] = set()
            failure: LinkDown | None = None
            if plan.messages:
                try:
                    confirmed = self._link.send_all(plan.messages)
                except LinkDown as err:
                    confirmed, failure = err.confirmed, err
            done = [it for it in plan.items if all(i in confirmed for i in it.needs)]
            self._state.commit(plan, confirmed, done)
        except sqlite3.Error as err:
            raise _error(err, self.name) from err
        receipt.stored.extend(it.id for it in done)
        if failure is not None:
            raise _error(failure, self.name) from failure
        return receipt

    def health(self) -> Health:
        try:
            self._link.ensure()
        except LinkDown as err:
            return Health(False, err.reason)
        return Health(True, f"connected to {self._link.where}")

    def close(self) -> None:
        self._link.close()
        self._state.close()

    # -- planning ---------------------------------------------------------------------------------

    def _plan(self, envelopes: Sequence[Envelope], receipt: Receipt) -> _Plan:
        plan = _Plan()
        groups: dict[str, tuple[Subject, list[Envelope]]] = {}
        for env in envelopes:
            if env.get("type") == "table":
                receipt.stored.append(env["id"])  # tables are not ICAT+ parameters
                continue
            if env.get("type") != "record":
                receipt.rejected[env["id"]] = f"unknown envelope type {env.get('type')!r}"
                continue
            sid = env["subject_id"]
            if sid not in groups:
                try:
                    groups[sid] = (Subject.from_dict(env["subject"]), [])
                except MxcatError as err:
                    receipt.rejected[env["id"]] = f"malformed subject: {err}"
                    continue
            groups[sid][1].append(env)
        digests = plan.previous = self._state.digests(env["id"] for _, envs in groups.values() for env in envs)
        fresh: dict[str, tuple[Subject, list[tuple[Envelope, str, dict[str, tuple[int, str]]]]]] = {}
        for sid, (subject, envs) in groups.items():
            if subject.kind == "image_range":
                receipt.stored.extend(e["id"] for e in envs)  # ICAT+ has no image-range entity
                continue
            unsafe = _unsafe_subject(subject)
            if unsafe is not None:
                receipt.rejected.update((e["id"], unsafe) for e in envs)
                continue
            rows = []
            for env in envs:
                content = digest(str(env["key"]), json.dumps(env["value"], default=str), str(env.get("unit")))
                if digests.get(env["id"], ("", 0))[0] == content:
                    receipt.stored.append(env["id"])  # confirmed by the broker before: a redelivery
                    continue
                params = self._params(env, receipt)
                if params is None:
                    continue
                rows.append((env, content, params))
            if rows:
                fresh[sid] = (subject, rows)
        ancestors = {sid: v for sid, v in fresh.items() if v[0].kind in ANCESTORS}
        for sid, (_, rows) in ancestors.items():
            self._plan_ancestor(plan, sid, rows, receipt)
        for sid, (subject, rows) in fresh.items():
            if sid not in ancestors:
                self._plan_dataset(plan, subject, rows, ancestors, receipt)
        return plan

    def _params(self, env: Envelope, receipt: Receipt) -> dict[str, tuple[int, str]] | None:
        targets = self._names.targets(env["key"], env.get("unit"))
        if not targets:
            if env["key"] not in self._skipped:
                if not self._skipped:
                    log.info("sink %s: keys without an ESRF name are not sent to ICAT+ (first: %s)", self.name, env["key"])
                self._skipped.add(env["key"])
            receipt.stored.append(env["id"])
            return None
        params: dict[str, tuple[int, str]] = {}
        for t in targets:
            text = value_text(env["value"], t)
            if len(text) > MAX_VALUE:
                receipt.rejected[env["id"]] = f"value of {len(text)} characters; ICAT keeps at most {MAX_VALUE}"
                return None
            if not text.strip():
                receipt.rejected[env["id"]] = "empty value; ICAT+ refuses empty parameter values"
                return None
            try:
                check_text("parameter name", t.name)
                check_text(f"value of {t.name}", text)
            except UnsafeText as err:
                receipt.rejected[env["id"]] = str(err)
                return None
            params[t.name] = (t.rank, text)
        return params

    def _plan_ancestor(self, plan: _Plan, sid: str, rows: list[tuple[Envelope, str, dict[str, tuple[int, str]]]],
                       receipt: Receipt) -> None:
        below = self._state.descendants(sid)
        by_investigation: dict[tuple[str, str], list[str]] = {}
        for location, proposal, beamline in below:
            by_investigation.setdefault((proposal, beamline), []).append(location)
        step = self.options.max_paths
        for env, content, params in rows:
            item = _Item(env["id"], content)
            updates = []
            for pname, (_, value) in sorted(params.items()):
                if pname in RESERVED:
                    continue
                item.inherit.append((sid, pname, value))
                updates += [(proposal, beamline, paths[i:i + step], pname, value)
                            for (proposal, beamline), paths in sorted(by_investigation.items()) for i in range(0, len(paths), step)]
            self._add_updates(plan, item, env, updates, receipt)

    def _add_updates(self, plan: _Plan, item: _Item, env: Envelope, updates: list[tuple[str, str, list[str], str, str]],
                     receipt: Receipt) -> None:
        """Plan a record's update messages, all or none: a text no message can carry refuses the record."""
        try:
            messages = [Message(self.options.update_queue, update_json(proposal=proposal, beamline=beamline, paths=paths, name=name,
                                                                       value=value), plan.salt(env["id"]))
                        for proposal, beamline, paths, name, value in updates]
        except UnsafeText as err:
            receipt.rejected[item.id] = str(err)
            return
        item.needs.extend(plan.add(m) for m in messages)
        plan.items.append(item)

    def _plan_dataset(self, plan: _Plan, subject: Subject, rows: list[tuple[Envelope, str, dict[str, tuple[int, str]]]],
                      batch_ancestors: Mapping[str, tuple[Subject, list[Any]]], receipt: Receipt) -> None:
        ids = [env["id"] for env, _, _ in rows]
        missing = [lv for lv in ("proposal", "beamline", "sample") if getattr(subject, lv) is None]
        if missing:
            for i in ids:
                receipt.rejected[i] = f"ICAT+ datasets need {', '.join(missing)} in the subject ({subject.path})"
            return
        proposal, beamline = str(subject.proposal).lower(), str(subject.beamline).lower()
        known = self._state.dataset(subject.id)
        if known is not None:  # sent before: every new record is an update of that dataset
            location, sent_proposal, sent_beamline = known
            for env, content, params in rows:
                updates = [(sent_proposal, sent_beamline, [location], pname, value)
                           for pname, (_, value) in sorted(params.items()) if pname not in RESERVED]
                self._add_updates(plan, _Item(env["id"], content), env, updates, receipt)
            return
        processed = subject.kind == "processing"
        location = self._location(subject, rows)
        inputs = self._inputs(subject, plan.locations) if processed else []
        if location is None or (processed and not inputs):
            what = "its input dataset's location" if location is not None else "the location template"
            for i in ids:
                receipt.rejected[i] = f"cannot build {what} from the subject {subject.path}"
            return
        ancestor_ids = tuple(s.id for s in (subject.at(lv) for lv in ANCESTORS) if s is not None)
        merged: dict[str, tuple[int, str]] = {}
        for aid in ancestor_ids:  # deeper levels last, so they win
            merged.update({n: (3, v) for n, v in self._state.inherited(aid).items()})
            for _, _, params in batch_ancestors.get(aid, (None, []))[1]:
                merged.update({n: (3, v) for n, (_, v) in params.items() if n not in RESERVED})
        own: dict[str, tuple[int, str]] = {}
        for _, _, params in rows:
            for pname, (rank, value) in params.items():
                if pname not in own or rank <= own[pname][0]:
                    own[pname] = (rank, value)
        merged.update(own)
        if "startDate" in merged and "endDate" in merged:
            start, end = merged["startDate"][1], merged["endDate"][1]
        else:
            first, last = self._created(rows)
            start = merged["startDate"][1] if "startDate" in merged else zulu(first.isoformat())
            end = merged["endDate"][1] if "endDate" in merged else zulu(last.isoformat())
        try:
            if instant(end) < instant(start):
                end = start
        except ValueError:
            pass
        name = str(subject.processing if processed else subject.dataset)
        fixed = {"Sample_name": str(subject.sample), "beamlineID": beamline, "datasetName": name, "proposal": proposal,
                 "location": location, "startDate": start, "endDate": end, "machine": self.machine, "software": self.software,
                 "complete": "true"}
        if processed:
            fixed["input_datasets"] = ",".join(inputs)
        parameters = {n: v for n, (_, v) in sorted(merged.items()) if n not in RESERVED}
        parameters.update(fixed)
        try:
            message = Message(self.options.dataset_queue, dataset_xml(
                investigation=proposal, instrument=beamline, name=name, location=location, start=start, end=end,
                sample=str(subject.sample), parameters=dict(sorted(parameters.items()))))
        except UnsafeText as err:
            receipt.rejected.update((i, f"dataset {subject.path}: {err}") for i in ids)
            return
        idx = plan.add(message)
        plan.datasets[idx] = (subject.id, location, proposal, beamline, ancestor_ids)
        plan.locations[subject.id] = location
        plan.items.extend(_Item(env["id"], content, [idx]) for env, content, _ in rows)

    def _created(self, rows: Sequence[tuple[Envelope, str, Any]]) -> tuple[datetime, datetime]:
        """Earliest and latest ``provenance.created`` of a dataset's records, the default start and end dates.

        A ``created`` that is missing or not ISO 8601 is left out; when no record has a usable one, the
        delivery time stands in, as pyicat-plus dates a dataset given without dates (logged once per sink).
        """
        stamps: list[datetime] = []
        for env, _, _ in rows:
            text = str(env["provenance"].get("created") or "")
            try:
                stamps.append(instant(text))
            except ValueError:
                if not self._bad_created:
                    log.warning("sink %s: provenance.created %r is not an ISO 8601 date-time; ICAT+ dataset dates come from the "
                                "other records of the dataset, or the delivery time (logged once)", self.name, text)
                self._bad_created = True
        if not stamps:
            stamps.append(datetime.now(UTC))
        return min(stamps), max(stamps)

    def _location(self, subject: Subject, rows: Sequence[tuple[Envelope, str, Any]]) -> str | None:
        if subject.kind == "dataset" and self.options.location_from_directory:
            for env, _, _ in rows:
                if env["key"] == DIRECTORY_KEY and isinstance(env["value"], str) and os.path.isabs(env["value"]):
                    return os.path.normpath(env["value"])
        return _fill(self.options.processed_location_template if subject.kind == "processing" else self.options.location_template,
                     subject)

    def _inputs(self, subject: Subject, planned: Mapping[str, str]) -> list[str]:
        """Locations of a processed dataset's inputs: its parent dataset first, then ``subject.inputs``.

        An input is a dataset subject id, a subject path (``beamline=.../dataset=...``) or an absolute
        path; a dataset this sink sent keeps the location it was sent with, others get the template's.
        """

        def known(sid: str) -> str | None:
            row = self._state.dataset(sid)
            return planned.get(sid) or (row[0] if row else None)

        out: list[str] = []
        parent = subject.at("dataset")
        refs: list[Subject | str] = [parent] if parent is not None else []
        refs += list(subject.inputs)
        for ref in refs:
            loc: str | None = None
            if isinstance(ref, Subject):
                loc = known(ref.id) or _fill(self.options.location_template, ref)
            elif ref.startswith("/"):
                loc = os.path.normpath(ref)
            elif "=" in ref:
                try:
                    s: Subject | None = Subject.parse(ref)
                except MxcatError:
                    s = None
                if s is not None:
                    loc = known(s.id) or _fill(self.options.location_template, s)
            else:
                loc = known(ref)
            if loc is None:
                log.warning("sink %s: input dataset %s of %s has no known location; left out of input_datasets", self.name, ref,
                            subject.path)
            elif loc not in out:
                out.append(loc)
        return out


def _unsafe_subject(subject: Subject) -> str | None:
    """Why no ICAT+ message can name *subject* (a level or input holding a character XML 1.0 cannot carry), else None."""
    try:
        for lv in _LEVELS:
            value = getattr(subject, lv)
            if value is not None:
                check_text(f"subject {lv}", str(value))
        for ref in subject.inputs:
            check_text("subject input", str(ref))
    except UnsafeText as err:
        return str(err)
    return None


def _fill(template: str, subject: Subject) -> str | None:
    values = {lv: getattr(subject, lv) for lv in _LEVELS if getattr(subject, lv) is not None}
    values.update({f"{k}_lower": v.lower() for k, v in list(values.items())})
    if subject.beamline is not None:
        values["beamline_dir"] = subject.beamline.lower().replace("-", "")
    try:
        text = template.format(**values)
    except (KeyError, IndexError):
        return None
    return os.path.normpath(text)


_ERRORS: tuple[tuple[type[BaseException], type[SinkError], str], ...] = (
    (LinkDown, SinkUnavailable, "ICAT+ broker: {err}; records wait in the outbox"),
    (sqlite3.Error, SinkUnavailable, "ICAT+ delivery state file: {err}"),
)
"""How failures map onto the outbox's decisions (credentials refused is retried too: fixing them loses nothing)."""


def _error(err: BaseException, sink: str) -> SinkError:
    for kind, cls, text in _ERRORS:
        if isinstance(err, kind):
            return cls(text.format(err=err), sink=sink)
    return SinkUnavailable(f"{type(err).__name__}: {err}", sink=sink)
