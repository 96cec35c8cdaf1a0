"""A reference ICAT REST server for the tests: a test fixture written from the published API, not an ICAT.

Written from icat.server (github.com/icatproject/icat.server): ``ICATRest.java`` for the resources
under ``/icat/`` and their form fields, ``EntityBeanManager.java`` for the semantics of writes and
searches, the entity classes for required fields, string lengths and unique constraints, and
``IcatExceptionMapper`` for the error payload ``{"code", "message", "offset"}``. It runs in a thread
(stdlib ``ThreadingHTTPServer``) and keeps its state in the Python object, so that ``stop()`` and
``start()`` bring it back on the same port with its data and sessions, as a restarted ICAT would.

Covers: ``POST session`` (form field ``json`` with ``plugin`` and ``credentials``), ``GET``/``PUT``
(refresh)/``DELETE session/{id}`` with a configurable lifetime, ``GET version`` and ``properties``;
``POST entityManager`` (``sessionId``, ``entities``): a list of ``{"Entity": {...}}``, created when
without ``id`` and updated when with, nested one-to-many children created with their parent,
many-to-one references by ``id`` only, the whole list in ONE transaction (all or nothing), answering
the ids of the top-level entities it CREATED, in order (updates and nested children give none, as
``EntityBeanManager.write`` does), errors carrying the ``offset`` of the failing entity;
``DELETE entityManager`` (with cascade). Entities: Facility, the investigation and dataset types,
Investigation, Sample, Dataset, ParameterType (with PermissibleStringValue), their parameters, and
of the provenance model Application, Job and DataCollection (with DataCollectionDataset). Enforced
as ICAT enforces them: sessions (``SESSION``), unique constraints (``OBJECT_ALREADY_EXISTS``:
Investigation facility+name+visitId, Sample and Dataset investigation+name, ParameterType
facility+name+units, PermissibleStringValue type+value, Dataset/Sample/InvestigationParameter
owner+type, DataCollectionDataset collection+dataset, Application facility+name+version), not null
fields and string lengths (255, 4000 for parameter strings: ``VALIDATION``), parameter
applicability and, for enforced types, range and permissible values (``VALIDATION``), bad field
names, JSON types and dates (``BAD_PARAMETER``, dates as ``yyyy-MM-dd'T'HH:mm:ss.SSSXXX``), unknown
ids (``NO_SUCH_OBJECT_FOUND``), read-only users (``INSUFFICIENT_PRIVILEGES``), and the search cap:
more than ``max_entities`` results without a smaller ``LIMIT`` is a ``VALIDATION`` error, as in ICAT.
Stricter than ICAT on one point: a parameter must carry the value field of its type's valueType
(ICAT checks values only for enforced types). ``GET entityManager`` understands the query subset
``SELECT [DISTINCT] x | x.path[, ...] | COUNT(x) FROM Entity x [WHERE cond AND ...] [ORDER BY path
[ASC|DESC], ...] [LIMIT offset, n] [INCLUDE x.relation, ...]`` with conditions ``path = literal``,
``!=``, ``<``, ``<=``, ``>``, ``>=``, ``path IN (literals)``, ``path IS [NOT] NULL``.

Does not cover: authorisation rules (users are root or read-only), OR/JOIN/subqueries and the
concise query syntax, ``get`` by id, lucene/search, IDS, the entities mxcat does not write (users,
instruments, datafiles, publications...), notification and logging, ``cloner`` and ``port``.

For the tests: ``requests`` counts every HTTP request by route; ``inject()`` makes the next matching
requests fail with an ICAT error; ``lose_responses()`` carries out the next matching requests (a
write commits) and then drops the connection unanswered, as when an answer is lost on the way;
``before_write`` is called with the parsed entities before each write (outside its transaction) to
simulate a concurrent client, and may raise (answered INTERNAL, nothing written) or call
``lose_responses()`` for the write it sees; ``create``, ``rows``, ``count``, ``delete`` and
``expire_sessions`` act on the state directly.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

STATUS = {"BAD_PARAMETER": 400, "INSUFFICIENT_PRIVILEGES": 403, "INTERNAL": 500, "NO_SUCH_OBJECT_FOUND": 404,
          "OBJECT_ALREADY_EXISTS": 400, "SESSION": 403, "VALIDATION": 400, "NOT_IMPLEMENTED": 501}
"""HTTP status of each ICAT error code (IcatException.IcatExceptionType)."""

VALUE_TYPES = ("NUMERIC", "STRING", "DATE_AND_TIME")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2})$")


class IcatFault(Exception):
    """An ICAT error: code, message and the offset of the failing entity in a write (-1 if none)."""

    def __init__(self, code: str, message: str, offset: int = -1) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Kind:
    """One entity type: attributes (field -> type), many-to-one parents, one-to-many children."""

    attrs: dict[str, str]
    parents: dict[str, str] = field(default_factory=dict)
    children: dict[str, tuple[str, str]] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()


_PARAM_ATTRS = {"stringValue": "text", "numericValue": "num", "dateTimeValue": "date", "error": "num", "rangeTop": "num",
                "rangeBottom": "num"}
_APPLICABLE = ("applicableToDataCollection", "applicableToDatafile", "applicableToDataset", "applicableToInvestigation",
               "applicableToSample")

SCHEMA: dict[str, Kind] = {
    "Facility": Kind({"name": "str", "fullName": "str", "description": "str", "url": "str", "daysUntilRelease": "int"},
                     required=("name",), unique=("name",)),
    "InvestigationType": Kind({"name": "str", "description": "str"}, {"facility": "Facility"}, required=("name", "facility"),
                              unique=("name", "facility")),
    "DatasetType": Kind({"name": "str", "description": "str"}, {"facility": "Facility"}, required=("name", "facility"),
                        unique=("facility", "name")),
    "Investigation": Kind({"name": "str", "visitId": "str", "title": "str", "summary": "text", "doi": "str", "startDate": "date",
                           "endDate": "date", "releaseDate": "date"},
                          {"facility": "Facility", "type": "InvestigationType"},
                          {"parameters": ("InvestigationParameter", "investigation"), "samples": ("Sample", "investigation"),
                           "datasets": ("Dataset", "investigation")},
                          required=("facility", "name", "visitId", "title", "type"), unique=("facility", "name", "visitId")),
    "Sample": Kind({"name": "str"}, {"investigation": "Investigation"}, {"parameters": ("SampleParameter", "sample")},
                   required=("investigation", "name"), unique=("investigation", "name")),
    "Dataset": Kind({"name": "str", "description": "str", "location": "str", "doi": "str", "complete": "bool", "startDate": "date",
                     "endDate": "date"},
                    {"investigation": "Investigation", "type": "DatasetType", "sample": "Sample"},
                    {"parameters": ("DatasetParameter", "dataset"), "dataCollectionDatasets": ("DataCollectionDataset", "dataset")},
                    required=("investigation", "name", "type"), unique=("investigation", "name")),
    "ParameterType": Kind({"name": "str", "units": "str", "unitsFullName": "str", "valueType": "vtype", "description": "str",
                           "enforced": "bool", "verified": "bool", "minimumNumericValue": "num", "maximumNumericValue": "num",
                           **{a: "bool" for a in _APPLICABLE}},
                          {"facility": "Facility"}, {"permissibleStringValues": ("PermissibleStringValue", "type")},
                          required=("facility", "name", "units", "valueType"), unique=("facility", "name", "units")),
    "PermissibleStringValue": Kind({"value": "str"}, {"type": "ParameterType"}, required=("type", "value"), unique=("type", "value")),
    "InvestigationParameter": Kind(dict(_PARAM_ATTRS), {"investigation": "Investigation", "type": "ParameterType"},
                                   required=("investigation", "type"), unique=("investigation", "type")),
    "SampleParameter": Kind(dict(_PARAM_ATTRS), {"sample": "Sample", "type": "ParameterType"}, required=("sample", "type"),
                            unique=("sample", "type")),
    "DatasetParameter": Kind(dict(_PARAM_ATTRS), {"dataset": "Dataset", "type": "ParameterType"}, required=("dataset", "type"),
                             unique=("dataset", "type")),
    "DataCollection": Kind({"doi": "str"}, {}, {"dataCollectionDatasets": ("DataCollectionDataset", "dataCollection"),
                                                "jobsAsInput": ("Job", "inputDataCollection"),
                                                "jobsAsOutput": ("Job", "outputDataCollection")}),
    "DataCollectionDataset": Kind({}, {"dataCollection": "DataCollection", "dataset": "Dataset"}, required=("dataCollection", "dataset"),
                                  unique=("dataCollection", "dataset")),
    "Application": Kind({"name": "str", "version": "str"}, {"facility": "Facility"}, {"jobs": ("Job", "application")},
                        required=("facility", "name", "version"), unique=("facility", "name", "version")),
    "Job": Kind({"arguments": "str"}, {"application": "Application", "inputDataCollection": "DataCollection",
                                       "outputDataCollection": "DataCollection"}, required=("application",)),
}
_OWNER = {"InvestigationParameter": ("investigation", "applicableToInvestigation", "Investigation"),
          "SampleParameter": ("sample", "applicableToSample", "Sample"),
          "DatasetParameter": ("dataset", "applicableToDataset", "Dataset")}
_VALUE_FIELD = {"NUMERIC": "numericValue", "STRING": "stringValue", "DATE_AND_TIME": "dateTimeValue"}


def _fmt_date(d: datetime) -> str:
    d = d.astimezone(UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


class Store:
    """Rows by entity and id, unique-key indexes, and an undo log that makes a write all-or-nothing."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in SCHEMA}
        self.index: dict[str, dict[tuple[Any, ...], int]] = {k: {} for k in SCHEMA}
        self.next_id = 1
        self.undo: list[tuple[str, str, int, dict[str, Any] | None]] | None = None

    def key(self, entity: str, row: dict[str, Any]) -> tuple[Any, ...] | None:
        u = SCHEMA[entity].unique
        return tuple(row.get(f) for f in u) if u else None

    def insert(self, entity: str, row: dict[str, Any]) -> int:
        k = self.key(entity, row)
        if k is not None and k in self.index[entity]:
            raise IcatFault("OBJECT_ALREADY_EXISTS", f"{entity} exists with "
                            + ", ".join(f"{f} = '{v}'" for f, v in zip(SCHEMA[entity].unique, k, strict=True)))
        row["id"] = self.next_id
        self.next_id += 1
        self.rows[entity][row["id"]] = row
        if k is not None:
            self.index[entity][k] = row["id"]
        if self.undo is not None:
            self.undo.append(("insert", entity, row["id"], None))
        return row["id"]

    def replace(self, entity: str, new: dict[str, Any]) -> None:
        old = self.rows[entity][new["id"]]
        k_old, k_new = self.key(entity, old), self.key(entity, new)
        if k_new is not None and k_new != k_old and k_new in self.index[entity]:
            raise IcatFault("OBJECT_ALREADY_EXISTS", f"{entity} exists with "
                            + ", ".join(f"{f} = '{v}'" for f, v in zip(SCHEMA[entity].unique, k_new, strict=True)))
        if k_old is not None:
            self.index[entity].pop(k_old, None)
        if k_new is not None:
            self.index[entity][k_new] = new["id"]
        self.rows[entity][new["id"]] = new
        if self.undo is not None:
            self.undo.append(("replace", entity, new["id"], old))

    def remove(self, entity: str, id_: int) -> None:
        old = self.rows[entity].pop(id_)
        k = self.key(entity, old)
        if k is not None:
            self.index[entity].pop(k, None)
        if self.undo is not None:
            self.undo.append(("remove", entity, id_, old))

    def rollback(self) -> None:
        for op, entity, id_, old in reversed(self.undo or []):
            if op == "insert":
                row = self.rows[entity].pop(id_)
                k = self.key(entity, row)
                if k is not None:
                    self.index[entity].pop(k, None)
            else:
                cur = self.rows[entity].get(id_)
                if cur is not None and (k := self.key(entity, cur)) is not None:
                    self.index[entity].pop(k, None)
                if old is not None:
                    self.rows[entity][id_] = old
                    if (k := self.key(entity, old)) is not None:
                        self.index[entity][k] = id_
        self.undo = None


# -- queries -----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<op><>|!=|<=|>=|[=<>(),])"
                    r"|(?P<word>[A-Za-z_][\w.]*))")
_KEYWORDS = {"SELECT", "DISTINCT", "FROM", "WHERE", "AND", "ORDER", "BY", "ASC", "DESC", "LIMIT", "INCLUDE", "IN", "IS", "NOT",
             "NULL", "COUNT"}


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise IcatFault("BAD_PARAMETER", f"unexpected character in query at {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group("str") is not None:
            out.append(("lit", m.group("str")[1:-1].replace("''", "'")))
        elif m.group("num") is not None:
            s = m.group("num")
            out.append(("lit", float(s) if any(c in s for c in ".eE") else int(s)))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            w = m.group("word")
            out.append(("kw", w.upper()) if w.upper() in _KEYWORDS else ("name", w))
    return out


@dataclass
class Query:
    entity: str = ""
    alias: str = ""
    select: list[str] = field(default_factory=list)
    count: bool = False
    distinct: bool = False
    where: list[tuple[str, str, Any]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    limit: tuple[int, int] | None = None
    include: list[str] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str) -> None:
        self.t = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, kind: str | None = None, value: Any = None) -> Any:
        tok = self.peek()
        if tok is None or (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            raise IcatFault("BAD_PARAMETER", f"query not understood near token {self.i} ({tok[1] if tok else 'end'}): expected "
                            f"{value or kind}; the reference server knows only a subset of the ICAT query language")
        self.i += 1
        return tok[1]

    def at(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == kind and (value is None or tok[1] == value)

    def parse(self) -> Query:
        q = Query()
        self.take("kw", "SELECT")
        if self.at("kw", "DISTINCT"):
            self.take()
            q.distinct = True
        while True:
            if self.at("kw", "COUNT"):
                self.take()
                self.take("op", "(")
                q.select.append(self.take("name"))
                self.take("op", ")")
                q.count = True
            else:
                q.select.append(self.take("name"))
            if not self.at("op", ","):
                break
            self.take()
        self.take("kw", "FROM")
        q.entity = self.take("name")
        q.alias = self.take("name")
        if q.entity not in SCHEMA:
            raise IcatFault("BAD_PARAMETER", f"{q.entity} is not an ICAT entity known to the reference server")
        if self.at("kw", "WHERE"):
            self.take()
            while True:
                q.where.append(self.condition())
                if not self.at("kw", "AND"):
                    break
                self.take()
        if self.at("kw", "ORDER"):
            self.take()
            self.take("kw", "BY")
            while True:
                path = self.take("name")
                desc = False
                if self.at("kw", "ASC") or self.at("kw", "DESC"):
                    desc = self.take() == "DESC"
                q.order.append((path, desc))
                if not self.at("op", ","):
                    break
                self.take()
        for _ in range(2):  # INCLUDE and LIMIT in either order, as in ICAT
            if self.at("kw", "LIMIT") and q.limit is None:
                self.take()
                off = self.take("lit")
                self.take("op", ",")
                n = self.take("lit")
                if not isinstance(off, int) or not isinstance(n, int):
                    raise IcatFault("BAD_PARAMETER", "LIMIT takes two integers")
                q.limit = (off, n)
            if self.at("kw", "INCLUDE") and not q.include:
                self.take()
                while True:
                    q.include.append(self.take("name"))
                    if not self.at("op", ","):
                        break
                    self.take()
        if self.peek() is not None:
            raise IcatFault("BAD_PARAMETER", f"unexpected {self.peek()[1]!r} in query")  # type: ignore[index]
        return q

    def condition(self) -> tuple[str, str, Any]:
        path = self.take("name")
        if self.at("kw", "IN"):
            self.take()
            self.take("op", "(")
            values = [self.take("lit")]
            while self.at("op", ","):
                self.take()
                values.append(self.take("lit"))
            self.take("op", ")")
            return (path, "IN", values)
        if self.at("kw", "IS"):
            self.take()
            neg = self.at("kw", "NOT")
            if neg:
                self.take()
            self.take("kw", "NULL")
            return (path, "NOTNULL" if neg else "NULL", None)
        op = self.take("op")
        if op not in ("=", "!=", "<>", "<", "<=", ">", ">="):
            raise IcatFault("BAD_PARAMETER", f"unexpected operator {op!r}")
        return (path, op, self.take("lit"))


_MISSING = object()


# -- the server ----------------------------------------------------------------------------------------

class IcatServer:
    """The reference ICAT; see the module docstring. ``url`` is the server root (the API is under ``/icat``)."""

    def __init__(self, *, users: dict[tuple[str, str], str] | None = None, readonly: Iterable[str] = (), facility: str = "TESTFAC",
                 investigation_types: Iterable[str] = ("experiment",), dataset_types: Iterable[str] = ("raw", "processed"),
                 lifetime: float = 7200.0, max_entities: int = 10_000, host: str = "127.0.0.1", port: int = 0) -> None:
        self.users = dict(users or {("simple", "mxcat"): "secret"})
        self.readonly = set(readonly)
        self.lifetime = lifetime
        self.max_entities = max_entities
        self.host = host
        self.port = port
        self.store = Store()
        self.sessions: dict[str, tuple[str, float]] = {}
        self.requests: Counter[str] = Counter()
        self.logins = 0
        self.before_write: Callable[[list[dict[str, Any]]], None] | None = None
        self._faults: list[dict[str, Any]] = []
        self._losses: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        fid = self.create("Facility", name=facility)
        self.facility_id = fid
        for name in investigation_types:
            self.create("InvestigationType", name=name, facility=fid)
        for name in dataset_types:
            self.create("DatasetType", name=name, facility=fid)

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> IcatServer:
        if self._httpd is not None:
            return self
        httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        httpd.daemon_threads = True
        httpd.icat = self  # type: ignore[attr-defined]
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"icat-server-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections; the state stays for the next start()."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> IcatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())

    def inject(self, code: str, message: str = "injected by the test", *, times: int = 1, method: str | None = None,
               route: str | None = None, status: int | None = None, body: str | None = None, offset: int = -1) -> None:
        """Make the next *times* matching requests fail with ICAT error *code* (or a raw *body* when given)."""
        with self._lock:
            self._faults.append({"code": code, "message": message, "times": times, "method": method, "route": route,
                                 "status": status or STATUS.get(code, 500), "body": body, "offset": offset})

    def lose_responses(self, *, times: int = 1, method: str | None = "POST", route: str | None = "/icat/entityManager") -> None:
        """Carry out the next *times* matching requests, then drop the connection without answering (a committed write
        whose answer is lost: the client sees a connection error). Taken when a request has been carried out, so that
        ``before_write`` may call it for the write it is looking at."""
        with self._lock:
            self._losses.append({"times": times, "method": method, "route": route})

    def create(self, entity: str, **fields: Any) -> int:
        """Insert a row directly (relations given as ids), checking unique constraints."""
        with self._lock:
            row = {"createId": "admin", "modId": "admin", "createTime": datetime.now(UTC), "modTime": datetime.now(UTC)}
            for a, t in SCHEMA[entity].attrs.items():
                row[a] = False if t == "bool" else None
            row.update(fields)
            return self.store.insert(entity, row)

    def rows(self, entity: str, **where: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.store.rows[entity].values() if all(r.get(k) == v for k, v in where.items())]

    def count(self, entity: str, **where: Any) -> int:
        return len(self.rows(entity, **where))

    def delete(self, entity: str, id_: int) -> None:
        with self._lock:
            self._delete(entity, id_)

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions = {k: (u, 0.0) for k, (u, _) in self.sessions.items()}

    # -- request handling -------------------------------------------------------------------------------

    def handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True).items()} if raw else {}
        path = parts.path.rstrip("/")
        route = re.sub(r"^/icat/session/[^/]+$", "/icat/session/{id}", path)
        with self._lock:
            self.requests[f"{method} {route}"] += 1
            fault = self._take_fault(method, route)
        if fault is not None:
            if fault["body"] is not None:
                self._send(req, fault["status"], fault["body"].encode(), "text/html")
            else:
                self._send_error(req, IcatFault(fault["code"], fault["message"], fault["offset"]), fault["status"])
            return
        try:
            result = self._dispatch(method, route, path, query, form)
        except IcatFault as err:
            self._send_error(req, err)
            return
        except _NotIcat:
            raise
        except Exception as err:  # noqa: BLE001 - the fixture answers INTERNAL, as ICAT does for surprises
            self._send_error(req, IcatFault("INTERNAL", f"{type(err).__name__}: {err}"))
            return
        with self._lock:
            lose = self._take(self._losses, method, route) is not None
        if lose:
            req.close_connection = True
            try:
                req.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if result is None:
            self._send(req, 204, b"", None)
        else:
            self._send(req, 200, json.dumps(result).encode(), "application/json")

    def _take_fault(self, method: str, route: str) -> dict[str, Any] | None:
        return self._take(self._faults, method, route)

    @staticmethod
    def _take(pending: list[dict[str, Any]], method: str, route: str) -> dict[str, Any] | None:
        for f in pending:
            if (f["method"] in (None, method)) and (f["route"] in (None, route)):
                f["times"] -= 1
                if f["times"] <= 0:
                    pending.remove(f)
                return f
        return None

    def _send_error(self, req: BaseHTTPRequestHandler, err: IcatFault, status: int | None = None) -> None:
        body: dict[str, Any] = {"code": err.code, "message": err.message}
        if err.offset >= 0:
            body["offset"] = err.offset
        self._send(req, status or STATUS.get(err.code, 500), json.dumps(body).encode(), "application/json")

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str | None) -> None:
        req.send_response(status)
        if ctype:
            req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if body:
            req.wfile.write(body)

    def _dispatch(self, method: str, route: str, path: str, query: dict[str, str], form: dict[str, str]) -> Any:
        if route == "/icat/version" and method == "GET":
            return {"version": "6.0.0"}
        if route == "/icat/properties" and method == "GET":
            return {"maxEntities": self.max_entities, "lifetimeMinutes": self.lifetime / 60.0, "containerType": "reference",
                    "authenticators": [{"mnemonic": p, "keys": [{"name": "username"}, {"name": "password", "hide": True}]}
                                       for p in sorted({p for p, _ in self.users})]}
        if route == "/icat/session" and method == "POST":
            return self._login(form.get("json"))
        if route == "/icat/session/{id}":
            sid = path.rsplit("/", 1)[1]
            with self._lock:
                user = self._user(sid)
                if method == "GET":
                    return {"userName": user, "remainingMinutes": max(0.0, self.sessions[sid][1] - time.time()) / 60.0}
                if method == "PUT":
                    self.sessions[sid] = (user, time.time() + self.lifetime)
                    return None
                if method == "DELETE":
                    del self.sessions[sid]
                    return None
        if route == "/icat/entityManager":
            if method == "GET":
                with self._lock:
                    self._user(query.get("sessionId"))
                    if query.get("query") is None:
                        raise IcatFault("BAD_PARAMETER", "query is not set")
                    if query.get("id") is not None:
                        raise IcatFault("NOT_IMPLEMENTED", "get by id is not implemented by the reference server")
                    return self._search(query["query"])
            if method == "POST":
                return self._write(form.get("sessionId"), form.get("entities"))
            if method == "DELETE":
                with self._lock:
                    user = self._user(query.get("sessionId"))
                    self._writable(user)
                    self._delete_json(query.get("entities"))
                    return None
        raise _NotIcat()

    # -- sessions ----------------------------------------------------------------------------------------

    def _login(self, text: str | None) -> dict[str, str]:
        if text is None:
            raise IcatFault("BAD_PARAMETER", "json must not be null")
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise IcatFault("BAD_PARAMETER", f"login json: {err}") from err
        plugin = doc.get("plugin") if isinstance(doc, dict) else None
        creds: dict[str, str] = {}
        for c in (doc.get("credentials") or []) if isinstance(doc, dict) else []:
            if isinstance(c, dict):
                creds.update({k: v for k, v in c.items() if isinstance(v, str)})
        if plugin not in {p for p, _ in self.users}:
            raise IcatFault("SESSION", f"Authenticator mnemonic {plugin} not recognised")
        if self.users.get((plugin, creds.get("username", ""))) != creds.get("password"):
            raise IcatFault("SESSION", "The username and password do not match")
        sid = str(uuid.uuid4())
        with self._lock:
            self.sessions[sid] = (f"{plugin}/{creds['username']}", time.time() + self.lifetime)
            self.logins += 1
        return {"sessionId": sid}

    def _user(self, sid: str | None) -> str:
        if not sid:
            raise IcatFault("SESSION", "Session Id cannot be null or empty.")
        s = self.sessions.get(sid)
        if s is None:
            raise IcatFault("SESSION", f"Unable to find user by sessionid: {sid}")
        if s[1] < time.time():
            raise IcatFault("SESSION", f"Session id:{sid} has expired")
        return s[0]

    def _writable(self, user: str) -> None:
        if user in self.readonly or user.split("/", 1)[-1] in self.readonly:
            raise IcatFault("INSUFFICIENT_PRIVILEGES", f"CREATE access to this entity is not allowed for {user}")

    # -- writes ------------------------------------------------------------------------------------------

    def _write(self, sid: str | None, text: str | None) -> list[int]:
        with self._lock:
            user = self._user(sid)
            if text is None:
                raise IcatFault("BAD_PARAMETER", "entities is not set")
            try:
                doc = json.loads(text)
            except ValueError as err:
                raise IcatFault("BAD_PARAMETER", f"{err} in json {text[:200]}", 0) from err
            top = doc if isinstance(doc, list) else [doc]
            if self.before_write is not None:
                self.before_write(top)
            self.store.undo = []
            ids: list[int] = []
            offset = 0
            try:
                self._writable(user)
                for obj in top:
                    if not isinstance(obj, dict) or len(obj) != 1:
                        raise IcatFault("BAD_PARAMETER", f"Entity must have one keyword followed by its values in json {obj}")
                    (entity, contents), = obj.items()
                    if entity not in SCHEMA:
                        raise IcatFault("BAD_PARAMETER", f"{entity} is not an ICAT entity")
                    if not isinstance(contents, dict):
                        raise IcatFault("BAD_PARAMETER", f"Unexpected array found in JSON {contents}")
                    if "id" in contents:
                        self._update(user, entity, contents)  # ICAT answers the ids of created entities only
                    else:
                        ids.append(self._create(user, entity, contents, None))
                    offset += 1
            except IcatFault as err:
                self.store.rollback()
                err.offset = offset
                raise
            except Exception:
                self.store.rollback()
                raise
            self.store.undo = None
            return ids

    def _convert(self, entity: str, name: str, value: Any) -> Any:
        t = SCHEMA[entity].attrs[name]
        if value is None:
            return False if t == "bool" else None
        if t in ("str", "text"):
            if not isinstance(value, str):
                raise IcatFault("BAD_PARAMETER", f"Field {name} of {entity} must be a string")
            return value
        if t in ("num", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise IcatFault("BAD_PARAMETER", f"Field {name} of {entity} must be a number")
            return float(value) if t == "num" else int(value)
        if t == "bool":
            if not isinstance(value, bool):
                raise IcatFault("BAD_PARAMETER", f"Field {name} must be true or false in {entity}")
            return value
        if t == "date":
            if not isinstance(value, str) or not DATE_RE.match(value):
                raise IcatFault("BAD_PARAMETER", f"Badly formatted date {json.dumps(value)}")
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        if t == "vtype":
            if not isinstance(value, str) or value.upper() not in VALUE_TYPES:
                raise IcatFault("BAD_PARAMETER", f"Field {name} must be in [NUMERIC, STRING, DATE_AND_TIME] for {entity}")
            return value.upper()
        raise IcatFault("INTERNAL", f"unknown attribute type {t}")

    def _apply(self, user: str, entity: str, row: dict[str, Any], contents: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        kind = SCHEMA[entity]
        children: list[tuple[str, str, dict[str, Any]]] = []
        for name, value in contents.items():
            if name == "id":
                continue
            if name in kind.attrs:
                row[name] = self._convert(entity, name, value)
            elif name in kind.parents:
                if value is None:
                    row[name] = None
                    continue
                if not isinstance(value, dict) or "id" not in value:
                    raise IcatFault("BAD_PARAMETER", f"Many to one related objects should have the id value set: {value}")
                target = kind.parents[name]
                pid = value["id"]
                if not isinstance(pid, int) or pid not in self.store.rows[target]:
                    raise IcatFault("NO_SUCH_OBJECT_FOUND", f"{target}[id:{pid}] not found.")
                row[name] = pid
            elif name in kind.children:
                child_entity, back = kind.children[name]
                if not isinstance(value, list):
                    raise IcatFault("BAD_PARAMETER", f"Field {name} of {entity} must be a list")
                for c in value:
                    if not isinstance(c, dict):
                        raise IcatFault("BAD_PARAMETER", f"Badly formatted relationship object {c}")
                    if "id" in c:
                        raise IcatFault("BAD_PARAMETER", f"One to many related objects should not have the id value set: {c}")
                    children.append((child_entity, back, c))
            else:
                raise IcatFault("BAD_PARAMETER", f"Field {name} not found in {entity}")
        row["modId"] = user
        row["modTime"] = datetime.now(UTC)
        return children

    def _create(self, user: str, entity: str, contents: dict[str, Any], parent: tuple[str, int] | None) -> int:
        kind = SCHEMA[entity]
        row: dict[str, Any] = {a: (False if t == "bool" else None) for a, t in kind.attrs.items()}
        row.update({p: None for p in kind.parents})
        row["createId"] = user
        row["createTime"] = datetime.now(UTC)
        children = self._apply(user, entity, row, contents)
        if parent is not None:
            row[parent[0]] = parent[1]
        self._validate(entity, row)
        new_id = self.store.insert(entity, row)
        for child_entity, back, c in children:
            self._create(user, child_entity, c, (back, new_id))
        return new_id

    def _update(self, user: str, entity: str, contents: dict[str, Any]) -> None:
        id_ = contents["id"]
        if not isinstance(id_, int):
            raise IcatFault("BAD_PARAMETER", f"Badly formatted id: {id_}")
        old = self.store.rows[entity].get(id_)
        if old is None:
            raise IcatFault("NO_SUCH_OBJECT_FOUND", f"{entity}[id:{id_}] not found.")
        row = dict(old)
        children = self._apply(user, entity, row, contents)
        self._validate(entity, row)
        self.store.replace(entity, row)
        for child_entity, back, c in children:
            self._create(user, child_entity, c, (back, id_))

    def _validate(self, entity: str, row: dict[str, Any]) -> None:
        kind = SCHEMA[entity]
        for f in kind.required:
            if row.get(f) is None:
                raise IcatFault("VALIDATION", f"{entity}: {f} cannot be null.")
        for a, t in kind.attrs.items():
            limit = {"str": 255, "text": 4000}.get(t)
            if limit and row.get(a) is not None and len(row[a]) > limit:
                raise IcatFault("VALIDATION", f"{entity}: {a} cannot have length > {limit}")
        if entity in _OWNER:
            self._validate_parameter(entity, row)

    def _validate_parameter(self, entity: str, row: dict[str, Any]) -> None:
        _, flag, owner_name = _OWNER[entity]
        pt = self.store.rows["ParameterType"][row["type"]]
        if not pt[flag]:
            raise IcatFault("VALIDATION", f"Parameter of type {pt['name']} is not applicable to a {owner_name}")
        want = _VALUE_FIELD[pt["valueType"]]
        for vt, f in _VALUE_FIELD.items():
            if f == want and row.get(f) is None:
                raise IcatFault("VALIDATION", f"Parameter of type {pt['name']} ({vt}) has no {f}")
            if f != want and row.get(f) is not None:
                raise IcatFault("VALIDATION", f"Parameter of type {pt['name']} is {pt['valueType']}, not {vt}")
        if not pt["enforced"]:
            return
        v = row.get(want)
        if pt["valueType"] == "NUMERIC":
            if pt["minimumNumericValue"] is not None and v < pt["minimumNumericValue"]:
                raise IcatFault("VALIDATION", f"Parameter of type {pt['name']} has value {v} < {pt['minimumNumericValue']}")
            if pt["maximumNumericValue"] is not None and v > pt["maximumNumericValue"]:
                raise IcatFault("VALIDATION", f"Parameter of type {pt['name']} has value {v} > {pt['maximumNumericValue']}")
        elif pt["valueType"] == "STRING":
            allowed = [r["value"] for r in self.store.rows["PermissibleStringValue"].values() if r["type"] == pt["id"]]
            if allowed and v not in allowed:
                raise IcatFault("VALIDATION", f"Parameter of type {pt['name']} has value {v} not in allowed set {allowed}")

    def _delete_json(self, text: str | None) -> None:
        if text is None:
            raise IcatFault("BAD_PARAMETER", "entities is not set")
        doc = json.loads(text)
        self.store.undo = []
        try:
            for obj in doc if isinstance(doc, list) else [doc]:
                (entity, contents), = obj.items()
                if entity not in SCHEMA or set(contents) != {"id"}:
                    raise IcatFault("BAD_PARAMETER", f"entity must have only the id value specified in json {obj}")
                if contents["id"] not in self.store.rows[entity]:
                    raise IcatFault("NO_SUCH_OBJECT_FOUND", f"{entity}[id:{contents['id']}] not found.")
                self._delete(entity, contents["id"])
        except IcatFault:
            self.store.rollback()
            raise
        self.store.undo = None

    def _delete(self, entity: str, id_: int) -> None:
        if id_ not in self.store.rows[entity]:
            return
        for child, kind in SCHEMA.items():  # cascade, as ICAT's one-to-many relations do
            for pname, target in kind.parents.items():
                if target == entity:
                    for r in [r for r in self.store.rows[child].values() if r.get(pname) == id_]:
                        if pname in kind.required:
                            self._delete(child, r["id"])
                        else:
                            self.store.replace(child, {**r, pname: None})
        self.store.remove(entity, id_)

    # -- searches ----------------------------------------------------------------------------------------

    def _resolve(self, q: Query, row: dict[str, Any], path: str) -> Any:
        parts = path.split(".")
        if parts[0] != q.alias:
            raise IcatFault("BAD_PARAMETER", f"unknown identifier {parts[0]} in query (alias is {q.alias})")
        entity, cur = q.entity, row
        for i, p in enumerate(parts[1:], 1):
            kind = SCHEMA[entity]
            if p == "id":
                return cur["id"]
            if p in kind.attrs:
                if i != len(parts) - 1:
                    raise IcatFault("BAD_PARAMETER", f"{p} of {entity} is not a relationship")
                return cur.get(p)
            if p in kind.parents:
                pid = cur.get(p)
                if pid is None:
                    return _MISSING
                entity, cur = kind.parents[p], self.store.rows[kind.parents[p]][pid]
                continue
            raise IcatFault("BAD_PARAMETER", f"Field {p} not found in {entity}")
        return (entity, cur)

    def _search(self, text: str) -> list[Any]:
        q = _Parser(text).parse()

        def keep(row: dict[str, Any]) -> bool:
            for path, op, val in q.where:
                v = self._resolve(q, row, path)
                if op == "NULL":
                    if v is not _MISSING and v is not None:
                        return False
                    continue
                if v is _MISSING or v is None:
                    return False
                if op == "NOTNULL":
                    continue
                if isinstance(v, tuple):
                    v = v[1]["id"]
                if isinstance(v, datetime):
                    v = _fmt_date(v)
                if op == "IN":
                    if v not in val:
                        return False
                elif op == "=":
                    if v != val:
                        return False
                elif op in ("!=", "<>"):
                    if v == val:
                        return False
                else:
                    try:
                        ok = {"<": v < val, "<=": v <= val, ">": v > val, ">=": v >= val}[op]
                    except TypeError as err:
                        raise IcatFault("BAD_PARAMETER", f"cannot compare {path} with {val!r}") from err
                    if not ok:
                        return False
            return True

        rows = [r for r in self.store.rows[q.entity].values() if keep(r)]
        for path, desc in reversed(q.order):
            def sort_key(r: dict[str, Any], path: str = path) -> tuple[int, Any]:
                v = self._resolve(q, r, path)
                if isinstance(v, tuple):
                    v = v[1]["id"]
                return (0, "") if v is None or v is _MISSING else (1, v)
            rows.sort(key=sort_key, reverse=desc)
        if q.count:
            return [len(rows)]
        results: list[Any] = []
        for r in rows:
            vals = [self._resolve(q, r, p) for p in q.select]
            if any(v is _MISSING for v in vals):
                continue  # an implicit inner join through a null relationship drops the row
            out = [self._jsonise(v[0], v[1], q.include if p == q.alias else ()) if isinstance(v, tuple)
                   else (_fmt_date(v) if isinstance(v, datetime) else v) for p, v in zip(q.select, vals, strict=True)]
            results.append(out[0] if len(out) == 1 else out)
        if q.distinct:
            seen: list[Any] = []
            for x in results:
                if x not in seen:
                    seen.append(x)
            results = seen
        off, n = q.limit if q.limit is not None else (0, None)
        results = results[off:]
        if n is not None and n <= self.max_entities:
            return results[:n]
        if len(results) > self.max_entities:
            raise IcatFault("VALIDATION", f"attempt to process more than {self.max_entities} entitities")
        return results

    def _jsonise(self, entity: str, row: dict[str, Any], include: Iterable[str] = (), wrap: bool = True) -> dict[str, Any]:
        kind = SCHEMA[entity]
        out: dict[str, Any] = {"id": row["id"], "createId": row.get("createId"), "createTime": _fmt_date(row["createTime"]),
                               "modId": row.get("modId"), "modTime": _fmt_date(row["modTime"])}
        for a in kind.attrs:
            v = row.get(a)
            if v is not None:
                out[a] = _fmt_date(v) if isinstance(v, datetime) else v
        for inc in include:
            rel = inc.split(".", 1)[1] if "." in inc else inc
            if rel in kind.parents and row.get(rel) is not None:
                target = kind.parents[rel]
                out[rel] = self._jsonise(target, self.store.rows[target][row[rel]], wrap=False)
            elif rel in kind.children:
                child, back = kind.children[rel]
                out[rel] = [self._jsonise(child, r, wrap=False) for r in self.store.rows[child].values() if r.get(back) == row["id"]]
            elif rel not in kind.parents:
                raise IcatFault("BAD_PARAMETER", f"INCLUDE: {rel} is not a relationship of {entity}")
        return {entity: out} if wrap else out


class _NotIcat(Exception):
    """A path the ICAT REST API does not have: answered like a servlet container, not as ICAT."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "IcatReference/1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body as they come: no delayed-ACK stalls
        icat: IcatServer = self.server.icat  # type: ignore[attr-defined]
        with icat._lock:
            icat._conns.add(self.connection)

    def finish(self) -> None:
        icat: IcatServer = self.server.icat  # type: ignore[attr-defined]
        with icat._lock:
            icat._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _run(self, method: str) -> None:
        icat: IcatServer = self.server.icat  # type: ignore[attr-defined]
        try:
            icat.handle(self, method)
        except _NotIcat:
            body = b"<html><body>404 Not Found</body></html>"
            IcatServer._send(self, 404, body, "text/html")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._run("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._run("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._run("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._run("DELETE")
