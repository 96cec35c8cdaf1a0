"""``scicat``: mmCAT records as ``scientificMetadata`` of SciCat datasets, over the REST API v3 or v4.

Protocol, from the SciCat backend (SciCatProject/scicat-backend-next: auth controller, dataset DTOs,
``datasets.v4.controller``) and its clients (pyscicat, scicat-ingestor): ``POST /api/v3/auth/login``
``{username, password}`` answers ``{access_token, expires_in, ...}`` for both API versions (the auth
controller is not versioned); requests carry ``Authorization: Bearer``. Datasets are created one per
``POST`` (``/api/v3/Datasets`` with the v3 fields ``principalInvestigator``, ``proposalId``,
``sampleId``, ``investigator``; ``/api/v4/datasets`` with ``principalInvestigators``, ``proposalIds``,
``sampleIds``); a client-chosen ``pid`` that exists answers 409. A v4 ``PATCH`` with
``application/merge-patch+json`` merges (RFC 7386); a plain JSON ``PATCH`` (all of v3) replaces
``scientificMetadata`` whole, so v3 updates read, merge and write back. The body limit is 16 MB.

Choices: one dataset per mxcat ``dataset`` subject (type ``raw``) and per ``processing`` subject
(``derived``, ``inputDatasets`` = the parent dataset and ``subject.inputs``, ``usedSoftware`` from
provenance), pid ``{pid_prefix}/{uuid5(subject id)}``. Each record becomes ``{value, unit}`` (plus
``human_name`` with ``names: human``) with the unit spelled as SciCat's mathjs converter reads it
(the ``scicat`` column of the ``_mmcat_unit`` crosswalk, ``""`` when dimensionless). Keys are the
flat mmCAT keys percent-encoded (``.`` -> ``%2E``, ``%`` -> ``%25``, leading ``$`` -> ``%24``):
MongoDB cannot query field names with dots and older servers cannot store them, and current
SciCat stores dotted keys in this same encoding. Image-range records go to their dataset under
``image_range.<name>.<key>``; records above dataset level (beamline, proposal, session, sample)
are acknowledged without a request (they stay in the embedded catalogue); tables up to
``max_table_bytes`` become one entry ``{value: {columns, rows}, unit: ""}`` named by the category,
larger ones and values that cannot fit one request are refused with the reason. A refused login or
token (401, even after one re-login) keeps records waiting in the outbox; 400/403/413/422 refuse,
narrowed down to the culprit records; 5xx, 429, time-outs and connection errors are retried. A v3
read-modify-write is not atomic: two writers updating the same dataset at once can lose keys (v4
merge patches cannot), so run one deliverer per SciCat v3 sink.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from mxcat.errors import ConfigError, SinkError, SinkRejected, SinkUnavailable, ValidationError
from mxcat.records import Subject
from mxcat.sinks import Envelope, Health, Receipt

log = logging.getLogger(__name__)

BODY_LIMIT = 16 * 1024 * 1024
"""The SciCat backend's JSON body limit (``json({limit: "16mb"})``)."""
DEFAULT_MAX_BODY = BODY_LIMIT - 256 * 1024
PID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://mxcat.invalid/sinks/scicat/dataset")
MERGE_PATCH = "application/merge-patch+json"
KNOWN_PIDS = 200_000
"""How many dataset pids known to exist are remembered (to skip the create-then-409 round trip)."""

STATUS_ERRORS: dict[int, type[SinkError]] = {
    400: SinkRejected,  # validation (NestJS class-validator, schema check)
    401: SinkUnavailable,  # credentials refused even after a re-login: fix the secret, records wait
    403: SinkRejected,  # not allowed for this owner group / pid
    404: SinkRejected,
    408: SinkUnavailable,
    409: SinkRejected,
    413: SinkRejected,  # body too large: isolated down to the record
    422: SinkRejected,  # validation (loopback v3)
    425: SinkUnavailable,
    429: SinkUnavailable,
}
"""The one table from a SciCat status to what the outbox should do; other 5xx retry, other 4xx refuse."""


def error_class(status: int) -> type[SinkError]:
    """SinkUnavailable (retry later) or SinkRejected (dead-letter) for an HTTP status."""
    return STATUS_ERRORS.get(status) or (SinkUnavailable if status >= 500 else SinkRejected)


def encode_key(key: str) -> str:
    """A scientificMetadata field name for a flat mmCAT key: ``reflns.d_resolution_high`` -> ``reflns%2Ed_resolution_high``."""
    out = key.replace("%", "%25").replace(".", "%2E")
    return "%24" + out[1:] if out.startswith("$") else out


def decode_key(name: str) -> str:
    """The flat key behind a field name written by :func:`encode_key` (or by SciCat's own encoding)."""
    return name.replace("%2E", ".").replace("%2e", ".").replace("%24", "$").replace("%25", "%")


def dataset_pid(subject: Subject | str, prefix: str = "mxcat") -> str:
    """The deterministic pid of the SciCat dataset of a subject (or subject id)."""
    sid = subject.id if isinstance(subject, Subject) else subject
    return f"{prefix}/{uuid.uuid5(PID_NAMESPACE, sid)}"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class SciCatOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    api: Literal["v3", "v4"] = "v4"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    owner_group: str = Field(min_length=1)
    access_groups: list[str] = Field(default_factory=list)
    contact_email: str = Field(min_length=3)
    owner: str | None = None
    principal_investigator: str | None = None
    pid_prefix: str = Field("mxcat", min_length=1, pattern=r"^\S+$")
    names: Literal["mmcat", "human"] = "mmcat"
    schema_url: str | None = None
    verify: bool | str = True
    timeout: float = Field(10.0, gt=0)
    max_body: int = Field(DEFAULT_MAX_BODY, ge=64 * 1024, le=BODY_LIMIT)
    max_table_bytes: int = Field(2 * 1024 * 1024, ge=0)
    login_path: str = "/api/v3/auth/login"


@dataclass(slots=True)
class _Item:
    """One scientificMetadata entry and the envelopes it carries (same key: the last one wins)."""

    key: str
    entry: dict[str, Any]
    ids: list[str]
    size: int


@dataclass(slots=True)
class _Target:
    """One SciCat dataset and what a batch writes into it."""

    subject: Subject
    derived: bool
    pid: str
    items: dict[str, _Item] = field(default_factory=dict)
    provenance: list[Mapping[str, Any]] = field(default_factory=list)


class SciCatSink:
    """Delivers envelopes to a SciCat backend; the password or token come from ``*_env`` / ``*_file`` only."""

    Options = SciCatOptions

    def __init__(self, name: str = "scicat", url: str = "", api: str = "v4", username: str | None = None, password: str | None = None,
                 token: str | None = None, owner_group: str = "", access_groups: Iterable[str] = (), contact_email: str = "",
                 owner: str | None = None, principal_investigator: str | None = None, pid_prefix: str = "mxcat", names: str = "mmcat",
                 schema_url: str | None = None, verify: bool | str = True, timeout: float = 10.0, max_body: int = DEFAULT_MAX_BODY,
                 max_table_bytes: int = 2 * 1024 * 1024, login_path: str = "/api/v3/auth/login") -> None:
        try:
            import requests
        except ImportError as err:
            raise ConfigError("the scicat sink needs requests: pip install 'mxcat[scicat]'", key=f"sinks.{name}") from err
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"url must start with http:// or https://, not {url[:40]!r}", key=f"sinks.{name}.options.url")
        if api not in ("v3", "v4"):
            raise ConfigError(f"api must be 'v3' or 'v4', not {api!r}", key=f"sinks.{name}.options.api")
        if names not in ("mmcat", "human"):
            raise ConfigError(f"names must be 'mmcat' or 'human', not {names!r}", key=f"sinks.{name}.options.names")
        if not token and not (username and password):
            raise ConfigError("no credentials: set username and password_env/password_file, or token_env/token_file",
                              key=f"sinks.{name}.options")
        if not owner_group or not contact_email:
            raise ConfigError("owner_group and contact_email are required", key=f"sinks.{name}.options")
        self.name = name
        self.url = url.rstrip("/")
        self.api = api
        self.username = username
        self._password = password
        self._given_token = token
        self.owner_group = owner_group
        self.access_groups = list(access_groups)
        self.contact_email = contact_email
        self.owner = owner
        self.principal_investigator = principal_investigator
        self.pid_prefix = pid_prefix
        self.names = names
        self.schema_url = schema_url
        self.verify = verify
        self.timeout = timeout
        self.max_body = max_body
        self.max_table_bytes = max_table_bytes
        self.login_path = "/" + login_path.lstrip("/")
        self.collection = "/api/v3/Datasets" if api == "v3" else "/api/v4/datasets"
        self._requests = requests
        self._session = requests.Session()
        self._token: str | None = token
        self._token_at = time.monotonic()
        self._expires_at: float | None = None
        self._known: OrderedDict[str, None] = OrderedDict()
        self._onto: Any = None
        self._said_above = False
        self.requests = 0
        """HTTP requests sent (logins included), for benchmarks."""
        self.logins = 0

    # -- the protocol ------------------------------------------------------------------------------

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        receipt = Receipt()
        targets: dict[str, _Target] = {}
        patch_budget = self.max_body - len(b'{"scientificMetadata":}')
        places: dict[str, tuple[Subject, str] | None | str] = {}
        for env in envelopes:
            eid = env["id"]
            placed = places.get(env["subject_id"], "")
            if placed == "":
                try:
                    placed = places[env["subject_id"]] = self._place(env)
                except ValidationError as err:
                    placed = places[env["subject_id"]] = f"invalid subject: {err}"
            if isinstance(placed, str):
                receipt.rejected[eid] = placed
                continue
            if placed is None:
                if not self._said_above:
                    self._said_above = True
                    log.info("sink %s: records above dataset level are acknowledged, not sent to SciCat "
                             "(they stay in the embedded catalogue)", self.name)
                receipt.stored.append(eid)
                continue
            subject, prefix = placed
            try:
                key, entry = self._entry(env, prefix)
                size = len(_dumps(key)) + 1 + len(_dumps(entry))
            except (ValueError, TypeError) as err:  # NaN, infinities, values JSON cannot carry
                receipt.rejected[eid] = f"value cannot be sent as JSON: {err}"
                continue
            except _Refused as err:
                receipt.rejected[eid] = str(err)
                continue
            if size + 2 > patch_budget:
                receipt.rejected[eid] = f"entry of {size} bytes does not fit SciCat's request body limit of {self.max_body} bytes"
                continue
            t = targets.get(subject.id)
            if t is None:
                t = targets[subject.id] = _Target(subject, subject.kind == "processing", dataset_pid(subject, self.pid_prefix))
            t.provenance.append(env.get("provenance") or {})
            old = t.items.get(key)
            t.items[key] = _Item(key, entry, ([*old.ids] if old else []) + [eid], size)
        for t in targets.values():
            self._deliver(t, receipt)
        return receipt

    def health(self) -> Health:
        try:
            _, who = self._call("GET", "/api/v3/auth/whoami", what="whoami")
        except SinkError as err:
            return Health(False, err.reason)
        user = who.get("username") if isinstance(who, dict) else None
        return Health(True, f"SciCat {self.api} at {self.url}" + (f", authenticated as {user}" if user else ""))

    def close(self) -> None:
        self._session.close()

    # -- envelopes to entries ------------------------------------------------------------------------

    def _place(self, env: Envelope) -> tuple[Subject, str] | None:
        """The dataset or processing subject an envelope goes to, and the key prefix; None above dataset level."""
        s = Subject.from_dict(env["subject"])
        if s.kind in ("dataset", "processing"):
            return s, ""
        if s.kind == "image_range":
            base = s.at("processing") if s.processing is not None else s.at("dataset")
            if base is not None:
                return base, f"image_range.{s.image_range}."
        return None

    def _entry(self, env: Envelope, prefix: str) -> tuple[str, dict[str, Any]]:
        if env["type"] == "record":
            entry: dict[str, Any] = {"value": env["value"], "unit": self._unit(env.get("unit"))}
            if self.names == "human":
                label = self._label(env["key"])
                if label:
                    entry["human_name"] = label
            return encode_key(prefix + env["key"]), entry
        if env["type"] == "table":
            value = {"columns": list(env["columns"]), "rows": list(env["rows"])}
            n = len(_dumps(value))
            if n > self.max_table_bytes:
                raise _Refused(f"table {env['category']} of {n} bytes exceeds max_table_bytes ({self.max_table_bytes}); "
                               "it stays in the embedded catalogue")
            return encode_key(prefix + env["category"]), {"value": value, "unit": ""}
        raise _Refused(f"unknown envelope type {env['type']!r}")

    def _ontology(self) -> Any:
        if self._onto is None:
            from mxcat.ontology import load

            self._onto = load()
        return self._onto

    def _unit(self, code: str | None) -> str:
        if not code:
            return ""
        return self._ontology().units.spelling(code, "scicat") or ""

    def _label(self, key: str) -> str | None:
        from mxcat.errors import UnknownKeyError

        try:
            item, _ = self._ontology().lookup(key)
        except UnknownKeyError:
            return None
        return item.label or None

    # -- dataset documents -----------------------------------------------------------------------------

    def _create_body(self, t: _Target, items: Sequence[_Item]) -> dict[str, Any]:
        s = t.subject
        owner = self.owner or s.proposal or s.beamline or s.facility or "mxcat"
        pi = self.principal_investigator or owner
        body: dict[str, Any] = {
            "pid": t.pid,
            "type": "derived" if t.derived else "raw",
            "owner": owner,
            "ownerGroup": self.owner_group,
            "accessGroups": self.access_groups,
            "contactEmail": self.contact_email,
            "sourceFolder": self._source_folder(t),
            "creationTime": self._creation_time(t),
            "datasetName": (f"{s.dataset} {s.processing}" if s.dataset else str(s.processing)) if t.derived else str(s.dataset),
            "description": f"mxcat {s.kind} {s.path}",
        }
        if self.schema_url:
            body["scientificMetadataSchema"] = self.schema_url
        v3 = self.api == "v3"
        if t.derived:
            if v3:
                body["investigator"] = pi
            else:
                body["principalInvestigators"] = [pi]
            body["inputDatasets"] = self._inputs(s)
            body["usedSoftware"] = self._software(t)
        else:
            if v3:
                body["principalInvestigator"] = pi
            else:
                body["principalInvestigators"] = [pi]
            body["creationLocation"] = "/" + "/".join(x for x in (s.facility, s.beamline) if x)
        if s.proposal:
            body["proposalId" if v3 else "proposalIds"] = s.proposal if v3 else [s.proposal]
        if s.sample and not (v3 and t.derived):  # the v3 derived model has no sampleId
            body["sampleId" if v3 else "sampleIds"] = s.sample if v3 else [s.sample]
        body["scientificMetadata"] = {it.key: it.entry for it in items}
        return body

    def _inputs(self, s: Subject) -> list[str]:
        ids: list[str] = []
        parent = s.at("dataset")
        if parent is not None:
            ids.append(parent.id)
        for ref in s.inputs:
            ids.append(Subject.parse(ref).id if "=" in ref else ref)
        return list(dict.fromkeys(dataset_pid(i, self.pid_prefix) for i in ids))

    @staticmethod
    def _software(t: _Target) -> list[str]:
        names = []
        for p in t.provenance:
            if p.get("program"):
                names.append(f"{p['program']} {p.get('version') or ''}".strip())
            elif p.get("adapter"):
                names.append(f"mxcat adapter {p['adapter']}")
        return list(dict.fromkeys(names))

    @staticmethod
    def _source_folder(t: _Target) -> str:
        for p in t.provenance:
            src = p.get("source")
            if isinstance(src, str) and src.startswith("/"):
                return posixpath.dirname(src.rstrip("/")) or "/"
        s = t.subject
        return "/" + "/".join(str(getattr(s, lv)) for lv in ("facility", "beamline", "proposal", "session", "sample", "dataset", "processing")
                              if getattr(s, lv) is not None)

    @staticmethod
    def _creation_time(t: _Target) -> str:
        times = []
        for p in t.provenance:
            try:
                d = datetime.fromisoformat(str(p.get("created", "")).replace("Z", "+00:00"))
            except ValueError:
                continue
            times.append(d if d.tzinfo else d.replace(tzinfo=UTC))
        when = min(times) if times else datetime.now(UTC)
        return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    # -- writing ------------------------------------------------------------------------------------

    def _deliver(self, t: _Target, receipt: Receipt) -> None:
        items = list(t.items.values())
        try:
            over = self._write(t, items)
        except SinkRejected as err:
            self._isolate(t, items, err.reason, receipt, top=True)
            return
        self._settle(items, over, receipt)

    @staticmethod
    def _settle(items: Sequence[_Item], over: Mapping[str, str], receipt: Receipt) -> None:
        for it in items:
            if it.key in over:
                receipt.rejected.update(dict.fromkeys(it.ids, over[it.key]))
            else:
                receipt.stored.extend(it.ids)

    def _isolate(self, t: _Target, items: list[_Item], reason: str, receipt: Receipt, *, top: bool) -> None:
        """A write of several entries was refused: find the refused ones by halving (the others are stored)."""
        if len(items) == 1:
            receipt.rejected.update(dict.fromkeys(items[0].ids, reason))
            return
        if top:
            try:
                self._ensure(t)
            except SinkRejected as err:  # the dataset itself is refused: every record shares the reason
                for it in items:
                    receipt.rejected.update(dict.fromkeys(it.ids, err.reason))
                return
        half = len(items) // 2
        for part in (items[:half], items[half:]):
            try:
                over = self._write(t, part)
            except SinkRejected as err:
                self._isolate(t, part, err.reason, receipt, top=False)
                continue
            self._settle(part, over, receipt)

    def _write(self, t: _Target, items: list[_Item]) -> dict[str, str]:
        """Store entries in the dataset (creating it if needed); returns the keys refused for size."""
        return self._write_v3(t, items) if self.api == "v3" else self._write_v4(t, items)

    def _ensure(self, t: _Target) -> None:
        if t.pid in self._known:
            return
        self._call("POST", self.collection, _dumps(self._create_body(t, ())), allow=(409,), what=f"create {t.pid}")
        self._remember(t.pid)

    def _create_budget(self, t: _Target) -> int:
        return self.max_body - len(_dumps(self._create_body(t, ()))) + 2

    def _write_v4(self, t: _Target, items: list[_Item], again: bool = True) -> dict[str, str]:
        rest = items
        if t.pid not in self._known:
            first, rest = _fit(items, self._create_budget(t))
            status, _ = self._call("POST", self.collection, _dumps(self._create_body(t, first)), allow=(409,), what=f"create {t.pid}")
            self._remember(t.pid)
            if status == 409:  # it exists: everything goes in as a merge patch
                rest = items
        path = f"{self.collection}/{quote(t.pid, safe='')}"
        for chunk in _pack(rest, self.max_body - len(b'{"scientificMetadata":}')):
            body = _dumps({"scientificMetadata": {it.key: it.entry for it in chunk}})
            status, _ = self._call("PATCH", path, body, content_type=MERGE_PATCH, allow=(404,), what=f"update {t.pid}")
            if status == 404:
                self._forget(t.pid)
                if not again:
                    raise SinkRejected(f"dataset {t.pid} was created but SciCat cannot find it to update it", sink=self.name)
                return self._write_v4(t, items, again=False)
        return {}

    def _write_v3(self, t: _Target, items: list[_Item], again: bool = True) -> dict[str, str]:
        too_big = (f"the scientificMetadata of {t.pid} would exceed the {self.max_body}-byte request limit "
                   "(an API v3 PATCH replaces it whole)")
        if t.pid not in self._known:
            fit, over = _fit(items, self._create_budget(t))
            status, _ = self._call("POST", self.collection, _dumps(self._create_body(t, fit)), allow=(409,), what=f"create {t.pid}")
            self._remember(t.pid)
            if status != 409:
                return dict.fromkeys((it.key for it in over), too_big)
        path = f"{self.collection}/{quote(t.pid, safe='')}"
        status, doc = self._call("GET", path, allow=(404,), what=f"read {t.pid}")
        if status == 404 or not isinstance(doc, dict):
            self._forget(t.pid)
            if not again:
                raise SinkRejected(f"dataset {t.pid} was created but SciCat cannot find it to update it", sink=self.name)
            return self._write_v3(t, items, again=False)
        old = doc.get("scientificMetadata")
        # a server that decodes field names on output gives dotted keys back: store them as we write them
        merged: dict[str, Any] = ({encode_key(k) if "." in k or k.startswith("$") else k: v for k, v in old.items()}
                                  if isinstance(old, dict) else {})
        size = len(_dumps({"scientificMetadata": merged}))
        budget = self.max_body
        refused: dict[str, str] = {}
        for it in items:
            delta = it.size - (len(_dumps(it.key)) + 1 + len(_dumps(merged[it.key]))) if it.key in merged else it.size + 1
            if size + delta > budget:
                refused[it.key] = too_big
                continue
            merged[it.key] = it.entry
            size += delta
        if len(refused) < len(items):
            self._call("PATCH", path, _dumps({"scientificMetadata": merged}), what=f"update {t.pid}")
        return refused

    def _remember(self, pid: str) -> None:
        self._known[pid] = None
        self._known.move_to_end(pid)
        while len(self._known) > KNOWN_PIDS:
            self._known.popitem(last=False)

    def _forget(self, pid: str) -> None:
        self._known.pop(pid, None)

    # -- HTTP ---------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        self.requests += 1
        try:
            return self._session.request(method, self.url + path, data=body, headers=headers, timeout=self.timeout, verify=self.verify)
        except self._requests.Timeout as err:
            raise SinkUnavailable(f"SciCat at {self.url} timed out after {self.timeout} s", sink=self.name) from err
        except self._requests.RequestException as err:  # connection refused/reset, DNS, TLS
            raise SinkUnavailable(f"SciCat at {self.url} unreachable: {type(err).__name__}", sink=self.name) from err

    def _can_login(self) -> bool:
        return bool(self.username and self._password)

    def _bearer(self) -> str:
        now = time.monotonic()
        if self._token is None or (self._expires_at is not None and now >= self._expires_at):
            if self._can_login():
                self._login()
            elif self._given_token:
                self._token = self._given_token
        return self._token or ""

    def _login(self) -> None:
        body = _dumps({"username": self.username, "password": self._password})
        resp = self._send("POST", self.login_path, body, {"Content-Type": "application/json", "Accept": "application/json"})
        if not 200 <= resp.status_code < 300:
            if error_class(resp.status_code) is SinkUnavailable and resp.status_code != 401:
                raise SinkUnavailable(f"SciCat login answered {resp.status_code}: {_message(resp)}", sink=self.name)
            raise SinkUnavailable(f"SciCat refused the login of {self.username!r} ({resp.status_code}); records wait in the "
                                  "outbox until the credentials are fixed", sink=self.name)
        try:
            doc = resp.json()
        except ValueError as err:
            raise SinkUnavailable("SciCat login answered something that is not JSON", sink=self.name) from err
        token = doc.get("access_token") or doc.get("id") if isinstance(doc, dict) else None
        if not token:
            raise SinkUnavailable("SciCat login answer has no access_token", sink=self.name)
        ttl = doc.get("expires_in") or doc.get("ttl")
        self._token = str(token)
        self._token_at = time.monotonic()
        self._expires_at = None
        if isinstance(ttl, int | float) and ttl > 0:
            self._expires_at = self._token_at + ttl - min(30.0, ttl * 0.1)  # renew a little before it runs out
        self.logins += 1
        if self.logins == 1:
            log.info("sink %s: logged in to SciCat at %s as %s", self.name, self.url, self.username)

    def _call(self, method: str, path: str, body: bytes | None = None, *, content_type: str = "application/json",
              allow: tuple[int, ...] = (), what: str = "") -> tuple[int, Any]:
        """One request with the bearer token; a 401 (or a 403 on an old token) re-logs in once and retries."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            headers["Authorization"] = f"Bearer {self._bearer()}"
            resp = self._send(method, path, body, headers)
            if attempt == 0 and self._can_login() and (resp.status_code == 401 or
                                                      (resp.status_code == 403 and time.monotonic() - self._token_at > 60)):
                self._token = None
                continue
            break
        status = resp.status_code
        if 200 <= status < 300:
            try:
                return status, resp.json() if resp.content else None
            except ValueError:
                return status, None
        if status in allow:
            return status, None
        reason = f"SciCat answered {status} to {what or method}: {_message(resp)}"
        if status == 401:
            reason += " (token refused; check the credentials)"
        raise error_class(status)(reason, sink=self.name)


class _Refused(Exception):
    """An envelope this sink refuses before any request."""


def _message(resp: Any) -> str:
    """The error text of a NestJS (``{message}``) or loopback (``{error: {message}}``) answer."""
    try:
        doc = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "")[:300]
    msg: Any = None
    if isinstance(doc, dict):
        err = doc.get("error")
        msg = err.get("message") if isinstance(err, dict) else doc.get("message")
    if isinstance(msg, list):
        msg = "; ".join(str(m) for m in msg)
    return str(msg if msg else doc)[:500]


def _fit(items: Sequence[_Item], budget: int) -> tuple[list[_Item], list[_Item]]:
    """Items that fit one scientificMetadata object of *budget* bytes (in order), and the rest."""
    fit, rest, size = [], [], 2
    for it in items:
        if size + it.size + 1 <= budget:
            fit.append(it)
            size += it.size + 1
        else:
            rest.append(it)
    return fit, rest


def _pack(items: Sequence[_Item], budget: int) -> list[list[_Item]]:
    """Items in consecutive groups whose scientificMetadata objects stay within *budget* bytes."""
    chunks: list[list[_Item]] = []
    cur: list[_Item] = []
    size = 2
    for it in items:
        if cur and size + it.size + 1 > budget:
            chunks.append(cur)
            cur, size = [], 2
        cur.append(it)
        size += it.size + 1
    if cur:
        chunks.append(cur)
    return chunks
