"""``icatplus``: ESRF ICAT+ through its STOMP message broker (ActiveMQ at ESRF), as pyicat-plus sends it.

Formats follow ESRF's client library pyicat-plus 3.1 (``IcatMetadataClient.send_metadata``,
``store_processed_data``, ``IcatUpdateMetadataClient.send_update_metadata``) and its XSD model of
``http://www.esrf.fr/icat``; the transport is STOMP 1.1 (stomp.github.io) through stomp.py.

* A dataset (subject level ``dataset``, or ``processing`` for processed data) becomes ONE XML
  ``<tns:dataset>`` message on ``/queue/icatIngest`` the first time this sink delivers records of it:
  investigation (proposal) and instrument (beamline) in lower case, name, location, start/end dates,
  sample name, and every record of the batch with an ESRF name from the ontology (scheme
  ``esrf_icat``, relations exact and close; values as strings in the ESRF unit) plus the fixed
  parameters pyicat-plus adds. Processed datasets carry ``input_datasets`` (input locations).
* Later records of a dataset already sent go as JSON ``icatUpdateDatasetMetadata`` messages (one
  name/value per message, as ICAT+ takes them). Records of a sample, session, proposal or beamline
  are inherited by the datasets below them: included in dataset messages sent later, and sent as
  updates (``datasetPaths`` = every known dataset below) to those already sent.
* Not carried, and acknowledged: tables, image-range records, records without an ESRF name
  (``unmapped: skip``, the default: ICAT+ stores parameters only for ParameterTypes the facility
  registered, and pyicat-plus flags other names as "Unknown ICAT fields"; ``unmapped: send`` sends
  the mmCAT flat key, matching ``icat_parameter_types(onto, names="esrf")``), and names ICAT+ takes
  from the subject (Sample_name, proposal, location, ...). Refused with a reason: datasets without
  proposal, beamline or sample, values over 4000 characters or with characters XML cannot carry.

Delivery: messages are persistent (``persistent:true``) and sent with a receipt each; ``put``
returns only when the broker has confirmed every message (RabbitMQ and ActiveMQ confirm persistent
sends once stored). What was confirmed is written to a small SQLite state file (``state_path``):
record ids with their content digest, datasets sent with their location. That file makes the
dataset-versus-update decision and redelivery idempotent: a record delivered again with the same
content is acknowledged without a message. STOMP is at-least-once: when a connection drops after the
broker stored a message but before its receipt arrived, the message is sent again on retry; every
message carries a stable ``mxcat_message_id`` header (hash of destination, body and, for updates,
how often the record was confirmed before) so consumers can drop the repeat. Brokers are tried in the configured order (failover); a broker that cannot be
reached, a lost connection, a missing receipt and refused credentials are all
:class:`~mxcat.errors.SinkUnavailable`: the records wait in the outbox until the cause is fixed.
Frames carry no ``content-length`` (as pyicat-plus's stompest sends them), so ActiveMQ hands the
ingester a TextMessage. The passcode comes from ``passcode_env`` or ``passcode_file`` and is never
logged, not even by stomp.py at DEBUG level (it would print it; a filter masks it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import string
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mxcat import __version__
from mxcat.errors import ConfigError, MxcatError, SinkError, SinkUnavailable
from mxcat.records import Subject
from mxcat.sinks import Envelope, Health, Receipt

log = logging.getLogger(__name__)

NAMESPACE = "http://www.esrf.fr/icat"
DATASET_QUEUE = "/queue/icatIngest"
UPDATE_QUEUE = "/queue/icatUpdateDatasetMetadata"
MAX_VALUE = 4000
"""ICAT keeps at most 4000 characters in a string parameter value."""
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
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


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
            _host_port(b)
        return v


def _host_port(text: str) -> tuple[str, int]:
    t = text.strip()
    for scheme in ("tcp://", "stomp://"):
        if t.startswith(scheme):
            t = t[len(scheme):]
    host, sep, port = t.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"broker {text!r} is not host:port")
    return host, int(port)


def _h(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _zulu(value: str) -> str:
    """An ISO 8601 date-time as pyicat-plus writes it (UTC as ``Z``)."""
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    text = dt.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _instant(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# -- names and values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    rank: int  # 0 exact, 1 close; lower wins when two keys give one name
    kind: str
    scale: float = 1.0
    offset: float = 0.0


class _Names:
    """ESRF names of mmCAT keys (scheme ``esrf_icat``), with the unit conversion each needs."""

    def __init__(self, onto: Any, unmapped: str) -> None:
        self.onto = onto
        self.unmapped = unmapped
        self._cache: dict[tuple[str, str | None], tuple[_Target, ...]] = {}

    def targets(self, key: str, unit: str | None) -> tuple[_Target, ...]:
        hit = self._cache.get((key, unit))
        if hit is None:
            hit = self._cache[(key, unit)] = self._targets(key, unit)
        return hit

    def _targets(self, key: str, unit: str | None) -> tuple[_Target, ...]:
        try:
            item, selector = self.onto.lookup(key)
        except MxcatError:
            return (_Target(key, 2, "string"),) if self.unmapped == "send" else ()
        out: list[_Target] = []
        for rank, relation in enumerate(("exact", "close")):
            for m in item.mappings:
                if m.scheme != "esrf_icat" or m.relation != relation or m.selector != selector or any(t.name == m.target for t in out):
                    continue
                scale, offset = 1.0, 0.0
                source = unit or item.units
                if item.is_numeric and m.units and source and m.units != source:
                    try:
                        scale, offset = self.onto.units.factor(source, m.units)
                    except (MxcatError, ValueError, KeyError) as err:
                        log.warning("%s: no conversion from %s to %s for %s (%s); not sent", key, source, m.units, m.target, err)
                        continue
                out.append(_Target(m.target, rank, item.kind, scale, offset))
        if not out and self.unmapped == "send":
            out.append(_Target(key, 2, item.kind))
        return tuple(out)


def _text(value: Any, t: _Target) -> str:
    """A record value as the string ICAT+ stores, formatted as pyicat-plus formats it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and t.kind in ("float", "int"):
        converted = t.scale != 1.0 or t.offset != 0.0
        v = value * t.scale + t.offset if converted else value
        if converted:
            v = float(f"{v:.12g}")
        return str(int(v)) if t.kind == "int" and float(v).is_integer() else str(float(v))
    if t.kind == "datetime":
        try:
            return _zulu(str(value))
        except ValueError:
            return str(value)
    return str(value)


# -- messages ------------------------------------------------------------------------------------


def dataset_xml(*, investigation: str, instrument: str, name: str, location: str, start: str, end: str, sample: str,
                parameters: Mapping[str, str]) -> str:
    """The ``<tns:dataset>`` message of ESRF's ICAT+ ingester (element order of its XSD)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f'<tns:dataset xmlns:tns="{NAMESPACE}" complete="true">']
    for tag, text in (("investigation", investigation), ("instrument", instrument), ("name", name), ("location", location),
                      ("startDate", start), ("endDate", end)):
        parts.append(f"<tns:{tag}>{escape(text)}</tns:{tag}>")
    parts.append(f"<tns:sample><tns:name>{escape(sample)}</tns:name></tns:sample>")
    for pname, value in parameters.items():
        parts.append(f"<tns:parameter><tns:name>{escape(pname)}</tns:name><tns:value>{escape(value)}</tns:value></tns:parameter>")
    parts.append("</tns:dataset>")
    return "".join(parts)


def update_json(*, proposal: str, beamline: str, paths: Sequence[str], name: str, value: str) -> str:
    """The ``icatUpdateDatasetMetadata`` message (the JSON pyicat-plus's ``send_update_metadata`` writes)."""
    return json.dumps({"proposal": proposal, "beamline": beamline, "datasetPaths": list(paths), "metadataName": name,
                       "metadataValue": value})


@dataclass(slots=True)
class _Message:
    """A STOMP message; its id is stable across retries of the same delivery (destination, body, *salt*)."""

    destination: str
    body: str
    salt: str = ""
    message_id: str = ""

    def __post_init__(self) -> None:
        self.message_id = _h(self.destination, self.body, self.salt)


@dataclass(slots=True)
class _Item:
    """One record and the messages that must be confirmed before it counts as delivered."""

    id: str
    digest: str
    needs: list[int] = field(default_factory=list)
    inherit: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    messages: list[_Message] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)
    datasets: dict[int, tuple[str, str, str, str, tuple[str, ...]]] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    """Locations of the datasets this plan creates, by subject id (inputs of processed datasets in the same batch)."""
    previous: dict[str, tuple[str, int]] = field(default_factory=dict)
    """(digest, deliveries) of each record the broker confirmed before. Updates salt their message id with
    the count, so that a value changed back (A, B, A) is not taken for a repeat of the first A."""

    def salt(self, record_id: str) -> str:
        return f"{record_id}:{self.previous.get(record_id, ('', 0))[1]}"

    def add(self, msg: _Message) -> int:
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


# -- the broker link -----------------------------------------------------------------------------


class _LinkDown(Exception):
    def __init__(self, reason: str, confirmed: set[int] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.confirmed = confirmed or set()


class _Listener:
    """Collects CONNECTED, RECEIPT and ERROR frames and disconnections from stomp.py's thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.connected = False
        self.lost = False
        self.error: str | None = None
        self.receipts: set[str] = set()

    def on_connected(self, frame: Any) -> None:
        with self.cond:
            self.connected = True
            self.cond.notify_all()

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id", ""))
            self.cond.notify_all()

    def on_error(self, frame: Any) -> None:
        with self.cond:
            detail = " - ".join(p for p in (frame.headers.get("message"), str(frame.body or "").strip()) if p)
            self.error = " ".join(detail.split())[:300]
            self.cond.notify_all()

    def on_disconnected(self) -> None:
        with self.cond:
            self.lost = True
            self.connected = False
            self.cond.notify_all()

    def wait(self, done: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done() and not self.lost and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return bool(done())


_REFUSED = ("access refused", "login", "authenticat", "passcode", "credential", "not authori", "security")


class _Redact(logging.Filter):
    """Masks the passcode in stomp.py's own log records (stomp.py 9.0 logs CONNECT frames unmasked at DEBUG)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.secret in text:
            record.msg, record.args = text.replace(self.secret, "********"), None
        return True


class _Link:
    """One STOMP 1.1 connection to the first broker of the list that answers."""

    def __init__(self, sink: str, brokers: list[tuple[str, int]], login: str | None, passcode: str | None, vhost: str | None,
                 tls: bool, verify: bool | str, timeout: float) -> None:
        self.sink = sink
        self.brokers = brokers
        self.login = login
        self._passcode = passcode
        self.vhost = vhost
        self.tls = tls
        self.verify = verify
        self.timeout = timeout
        self.conn: Any = None
        self.listener: _Listener | None = None
        self.where: str | None = None
        self._n = 0
        self._redact = _Redact(passcode) if passcode else None
        if self._redact is not None:
            logging.getLogger("stomp.py").addFilter(self._redact)

    def close(self) -> None:
        self.drop()
        if self._redact is not None:
            logging.getLogger("stomp.py").removeFilter(self._redact)

    def ensure(self) -> None:
        if self.conn is not None and self.listener is not None and self.listener.connected and not self.listener.lost:
            return
        self.drop()
        import stomp
        from stomp.exception import StompException

        conn = stomp.Connection11(host_and_ports=self.brokers, prefer_localhost=False, try_loopback_connect=False,
                                  reconnect_sleep_initial=0.1, reconnect_sleep_increase=0.5, reconnect_sleep_jitter=0.1,
                                  reconnect_sleep_max=1.0, reconnect_attempts_max=len(self.brokers), timeout=self.timeout,
                                  keepalive=True, vhost=self.vhost, auto_content_length=False)
        if self.tls:
            conn.set_ssl(for_hosts=self.brokers, ca_certs=self.verify if isinstance(self.verify, str) else None,
                         verify=bool(self.verify))
        listener = _Listener()
        conn.set_listener("mxcat", listener)
        try:
            conn.connect(username=self.login, passcode=self._passcode, wait=False)
        except (StompException, OSError) as err:
            raise _LinkDown(f"no broker answered ({', '.join(f'{h}:{p}' for h, p in self.brokers)})") from err
        if not listener.wait(lambda: listener.connected, self.timeout):
            _close(conn)
            if listener.error is not None:
                refused = any(w in listener.error.lower() for w in _REFUSED)
                raise _LinkDown(("the broker refused the credentials: " if refused else "the broker refused the connection: ")
                                + listener.error)
            if listener.lost:
                raise _LinkDown("the broker closed the connection before CONNECTED")
            raise _LinkDown(f"no CONNECTED frame within {self.timeout:g} s")
        self.conn, self.listener = conn, listener
        host, port = conn.transport.current_host_and_port
        self.where = f"{host}:{port}"
        _send_timeout(conn, self.timeout)
        log.info("sink %s: connected to STOMP broker %s%s", self.sink, self.where, f" as {self.login}" if self.login else "")

    def send_all(self, messages: Sequence[_Message]) -> set[int]:
        """Send every message with a receipt; return when all are confirmed, else raise _LinkDown with those that were."""
        from stomp.exception import StompException

        self.ensure()
        listener = self.listener
        if listener is None or self.conn is None:
            raise _LinkDown("not connected")
        ids: dict[str, int] = {}
        try:
            for i, m in enumerate(messages):
                self._n += 1
                rid = f"{m.message_id[:12]}-{self._n}"
                ids[rid] = i
                self.conn.send(m.destination, m.body, headers={"persistent": "true", "mxcat_message_id": m.message_id, "receipt": rid})
        except (StompException, OSError) as err:
            with listener.cond:
                confirmed = {ids[r] for r in listener.receipts & ids.keys()}
            self.drop()
            raise _LinkDown(f"connection to {self.where or 'the broker'} lost while sending ({type(err).__name__})", confirmed) from err
        ok = listener.wait(lambda: ids.keys() <= listener.receipts, self.timeout)
        with listener.cond:
            confirmed = {ids[r] for r in listener.receipts & ids.keys()}
            listener.receipts -= ids.keys()
            error, lost = listener.error, listener.lost
        if ok:
            return confirmed
        where = self.where or "the broker"
        self.drop()
        if error is not None:
            raise _LinkDown(f"{where} answered with an error: {error}", confirmed)
        if lost:
            raise _LinkDown(f"connection to {where} lost before {len(ids) - len(confirmed)} receipt(s)", confirmed)
        raise _LinkDown(f"{len(ids) - len(confirmed)} receipt(s) from {where} missing after {self.timeout:g} s", confirmed)

    def drop(self) -> None:
        if self.conn is not None:
            _close(self.conn, self.listener if self.listener and self.listener.connected and not self.listener.lost else None)
        self.conn, self.listener, self.where = None, None, None


def _close(conn: Any, listener: _Listener | None = None) -> None:
    """Close a connection: DISCONNECT and wait a moment for its receipt when it is alive, then the socket."""
    try:
        if listener is not None:
            conn.disconnect()
            listener.wait(lambda: listener.lost, 1.0)
    except Exception:  # noqa: BLE001 - closing a dead connection must not mask the reason it died
        pass
    try:
        conn.transport.disconnect_socket()
    except Exception:  # noqa: BLE001
        pass


def _send_timeout(conn: Any, seconds: float) -> None:
    """Bound blocking sends (stomp.py keeps the socket blocking without a timeout for its reader thread)."""
    sock = getattr(conn.transport, "socket", None)
    if sock is None:
        return
    try:
        sec = int(seconds)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, int((seconds - sec) * 1e6)))
    except (OSError, struct.error):
        log.debug("SO_SNDTIMEO not available; sends rely on TCP keepalive")


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
        self._names = _Names(onto, opts.unmapped)
        if opts.state_path is None:
            from mxcat.config import data_dir

            state = str(data_dir() / f"icatplus-{name}.sqlite")
        else:
            state = opts.state_path
        self._state = _State(state)
        self._link = _Link(name, [_host_port(b) for b in opts.brokers], opts.login, passcode, opts.vhost, opts.tls, opts.verify,
                           opts.timeout)
        self._skipped: set[str] = set()

    def __repr__(self) -> str:
        return f"IcatPlusSink(name={self.name!r}, brokers={self.options.brokers!r})"

    # -- Sink protocol ----------------------------------------------------------------------------

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        receipt = Receipt()
        try:
            plan = self._plan(envelopes, receipt)
            confirmed: set[int] = set()
            failure: _LinkDown | None = None
            if plan.messages:
                try:
                    confirmed = self._link.send_all(plan.messages)
                except _LinkDown as err:
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
        except _LinkDown as err:
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
            rows = []
            for env in envs:
                digest = _h(str(env["key"]), json.dumps(env["value"], default=str), str(env.get("unit")))
                if digests.get(env["id"], ("", 0))[0] == digest:
                    receipt.stored.append(env["id"])  # confirmed by the broker before: a redelivery
                    continue
                params = self._params(env, receipt)
                if params is None:
                    continue
                rows.append((env, digest, params))
            if rows:
                fresh[sid] = (subject, rows)
        ancestors = {sid: v for sid, v in fresh.items() if v[0].kind in ANCESTORS}
        for sid, (_, rows) in ancestors.items():
            self._plan_ancestor(plan, sid, rows)
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
            text = _text(env["value"], t)
            if len(text) > MAX_VALUE:
                receipt.rejected[env["id"]] = f"value of {len(text)} characters; ICAT keeps at most {MAX_VALUE}"
                return None
            if not text.strip():
                receipt.rejected[env["id"]] = "empty value; ICAT+ refuses empty parameter values"
                return None
            if _BAD_XML.search(text):
                receipt.rejected[env["id"]] = "the value holds control characters that XML 1.0 cannot carry"
                return None
            params[t.name] = (t.rank, text)
        return params

    def _plan_ancestor(self, plan: _Plan, sid: str, rows: list[tuple[Envelope, str, dict[str, tuple[int, str]]]]) -> None:
        below = self._state.descendants(sid)
        by_investigation: dict[tuple[str, str], list[str]] = {}
        for location, proposal, beamline in below:
            by_investigation.setdefault((proposal, beamline), []).append(location)
        for env, digest, params in rows:
            item = _Item(env["id"], digest)
            for pname, (_, value) in sorted(params.items()):
                if pname in RESERVED:
                    continue
                item.inherit.append((sid, pname, value))
                for (proposal, beamline), paths in sorted(by_investigation.items()):
                    for i in range(0, len(paths), self.options.max_paths):
                        body = update_json(proposal=proposal, beamline=beamline, paths=paths[i:i + self.options.max_paths],
                                           name=pname, value=value)
                        item.needs.append(plan.add(_Message(self.options.update_queue, body, plan.salt(env["id"]))))
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
            location = known[0]
            for env, digest, params in rows:
                item = _Item(env["id"], digest)
                for pname, (_, value) in sorted(params.items()):
                    if pname not in RESERVED:
                        body = update_json(proposal=known[1], beamline=known[2], paths=[location], name=pname, value=value)
                        item.needs.append(plan.add(_Message(self.options.update_queue, body, plan.salt(env["id"]))))
                plan.items.append(item)
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
        created = sorted(_instant(str(env["provenance"].get("created") or "1970-01-01T00:00:00+00:00")) for env, _, _ in rows)
        start = merged["startDate"][1] if "startDate" in merged else _zulu(created[0].isoformat())
        end = merged["endDate"][1] if "endDate" in merged else _zulu(created[-1].isoformat())
        try:
            if _instant(end) < _instant(start):
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
        body = dataset_xml(investigation=proposal, instrument=beamline, name=name, location=location, start=start, end=end,
                           sample=str(subject.sample), parameters=dict(sorted(parameters.items())))
        idx = plan.add(_Message(self.options.dataset_queue, body))
        plan.datasets[idx] = (subject.id, location, proposal, beamline, ancestor_ids)
        plan.locations[subject.id] = location
        plan.items.extend(_Item(env["id"], digest, [idx]) for env, digest, _ in rows)

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
    (_LinkDown, SinkUnavailable, "ICAT+ broker: {err}; records wait in the outbox"),
    (sqlite3.Error, SinkUnavailable, "ICAT+ delivery state file: {err}"),
)
"""How failures map onto the outbox's decisions (credentials refused is retried too: fixing them loses nothing)."""


def _error(err: BaseException, sink: str) -> SinkError:
    for kind, cls, text in _ERRORS:
        if isinstance(err, kind):
            return cls(text.format(err=err), sink=sink)
    return SinkUnavailable(f"{type(err).__name__}: {err}", sink=sink)
