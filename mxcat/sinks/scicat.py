"""``scicat``: mmCAT records as ``scientificMetadata`` of SciCat datasets, over the REST API v3 or v4.

Protocol, from the SciCat backend (SciCatProject/scicat-backend-next: auth controller, dataset DTOs,
``datasets.v4.controller``) and its clients (pyscicat, scicat-ingestor): ``POST /api/v3/auth/login``
``{username, password}`` answers ``{access_token, expires_in, ...}`` for both API versions (the auth
controller is not versioned); requests carry ``Authorization: Bearer``. Datasets are created one per
``POST`` (``/api/v3/Datasets`` or ``/api/v4/datasets``) with a pid chosen here, which only accounts
in the backend's ``CREATE_DATASET_WITH_PID_GROUPS`` or ``ADMIN_GROUPS`` may do; a pid that exists
answers 409. A v4 ``PATCH`` with ``application/merge-patch+json`` merges (RFC 7386); a plain JSON
``PATCH`` (all of v3) replaces ``scientificMetadata`` whole, so v3 updates read, merge and write
back. The body limit is 16 MB. What is written (datasets, pids, keys, units) is built by
:mod:`mxcat.sinks.scicat_model`; records above dataset level are acknowledged without a request.

Errors, through the table :data:`STATUS_ERRORS` and a few answers read more closely. Records wait in
the outbox (``SinkUnavailable``) on 5xx, 429, time-outs, connection errors, a refused login or token
(401, even after one re-login), and on configuration problems, which :meth:`SciCatSink.health`
reports: a 404 that is not SciCat's "dataset not found" (any 404 to the create route, a routing
404 ``Cannot POST ...``, a 404 page that is not SciCat's JSON: a wrong url, a missing reverse-proxy
prefix, api v4 on a backend that serves only v3), a 403 to a create (the account may not create
datasets of ``owner_group`` or may not choose pids), a 403 to the update of every dataset of a
batch, and a create answered with another pid than the chosen one (a backend that drops or
rewrites client pids). After that last one the sink creates no dataset until it is restarted, as
every create would leave one more stray copy; it logs the stray pid once, keeps updating datasets
that exist, and ``health()`` names the stray. Records of other datasets of the batch are stored.
400/413/422 refuse (dead-letter), narrowed down to the culprit records; a 403 to the update of one
dataset refuses that dataset's records. A v3 read-modify-write is not atomic: two writers updating
the same dataset at once can lose keys (v4 merge patches cannot), so run one deliverer per SciCat v3
sink.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from mxcat.errors import ConfigError, SinkError, SinkRejected, SinkUnavailable, ValidationError
from mxcat.records import Subject
from mxcat.sinks import Envelope, Health, Receipt
from mxcat.sinks.scicat_model import (
    BODY_LIMIT,
    DEFAULT_MAX_BODY,
    PID_NAMESPACE,
    Documents,
    Item,
    Refused,
    Target,
    dataset_pid,
    decode_key,
    dumps,
    encode_key,
    fit,
    pack,
)

__all__ = ["BODY_LIMIT", "DEFAULT_MAX_BODY", "MERGE_PATCH", "PID_NAMESPACE", "STATUS_ERRORS", "SciCatOptions", "SciCatSink",
           "dataset_pid", "decode_key", "encode_key", "error_class"]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
KNOWN_PIDS = 200_000
"""How many dataset pids known to exist are remembered (to skip the create-then-409 round trip)."""

STATUS_ERRORS: dict[int, type[SinkError]] = {
    400: SinkRejected,  # validation (NestJS class-validator, schema check)
    401: SinkUnavailable,  # credentials refused even after a re-login: fix the secret, records wait
    403: SinkRejected,  # an update of a dataset of another owner group; a 403 to a create waits (see SciCatSink._call)
    404: SinkUnavailable,  # no such route: a wrong url or api; a missing dataset is handled where it can happen
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


class _Misconfigured(SinkUnavailable):
    """SciCat's answer shows a configuration problem (url, api, permissions): records wait, health() says what to fix."""


class _Forbidden(SinkRejected):
    """A 403 to the update of a dataset: it belongs to an owner group the account is not in."""


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
        self.pid_prefix = pid_prefix
        self.docs = Documents(api=api, owner_group=owner_group, access_groups=access_groups, contact_email=contact_email, owner=owner,
                              principal_investigator=principal_investigator, pid_prefix=pid_prefix, names=names, schema_url=schema_url,
                              max_table_bytes=max_table_bytes)
        self.verify = verify
        self.timeout = timeout
        self.max_body = max_body
        self.login_path = "/" + login_path.lstrip("/")
        self.collection = "/api/v3/Datasets" if api == "v3" else "/api/v4/datasets"
        self._requests = requests
        self._session = requests.Session()
        self._token: str | None = token
        self._token_at = time.monotonic()
        self._expires_at: float | None = None
        self._known: OrderedDict[str, None] = OrderedDict()
        self._said_above = False
        self._problem: str | None = None
        """The configuration problem SciCat's answers showed last, until a dataset is written again."""
        self._said: set[str] = set()
        self._pids_ignored: str | None = None
        """Set when SciCat stored a dataset under another pid than ours: no more creates (each would be a stray)."""
        self.strays: dict[str, str] = {}
        """Pids chosen by this sink -> pids SciCat gave the datasets instead (to delete once the account is fixed)."""
        self.requests = 0
        """HTTP requests sent (logins included), for benchmarks."""
        self.logins = 0

    # -- the protocol ------------------------------------------------------------------------------

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        receipt = Receipt()
        targets: dict[str, Target] = {}
        patch_budget = self.max_body - len(b'{"scientificMetadata":}')
        places: dict[str, tuple[Subject, str] | None | str] = {}
        for env in envelopes:
            eid = env["id"]
            placed = places.get(env["subject_id"], "")
            if placed == "":
                try:
                    placed = places[env["subject_id"]] = self.docs.place(env)
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
                key, entry = self.docs.entry(env, prefix)
                size = len(dumps(key)) + 1 + len(dumps(entry))
            except (ValueError, TypeError) as err:  # NaN, infinities, values JSON cannot carry
                receipt.rejected[eid] = f"value cannot be sent as JSON: {err}"
                continue
            except Refused as err:
                receipt.rejected[eid] = str(err)
                continue
            if size + 2 > patch_budget:
                receipt.rejected[eid] = f"entry of {size} bytes does not fit SciCat's request body limit of {self.max_body} bytes"
                continue
            t = targets.get(subject.id)
            if t is None:
                t = targets[subject.id] = self.docs.target(subject)
            t.provenance.append(env.get("provenance") or {})
            old = t.items.get(key)
            t.items[key] = Item(key, entry, ([*old.ids] if old else []) + [eid], size)
        written = 0
        waiting: list[str] = []
        forbidden: list[str] = []
        for t in targets.values():
            stop = self._deliver(t, receipt)
            if stop is None:
                written += 1
            elif isinstance(stop, _Forbidden):
                forbidden.append(stop.reason)
            else:
                waiting.append(stop.reason)
                receipt.waiting.update(dict.fromkeys(t.ids(), stop.reason))
        if not written and forbidden and not waiting:  # the account, not one dataset: every update refused
            raise self._misconfigured("forbidden", f"{forbidden[0]}; SciCat refused to update every dataset of the batch: is the "
                                      f"account {self._who()} in owner group {self.owner_group!r}? Records wait in the outbox")
        if not written and waiting:
            raise SinkUnavailable(waiting[0], sink=self.name)
        if written and not waiting and self._problem is not None:
            self._problem = None
            self._said.clear()
        return receipt  # the records of datasets that wait are in receipt.waiting: the outbox keeps them

    def health(self) -> Health:
        if self._pids_ignored is not None:
            return Health(False, self._pids_ignored)
        probe = quote(dataset_pid("mxcat health probe", self.pid_prefix), safe="")
        try:
            _, who = self._call("GET", "/api/v3/auth/whoami", what="whoami")
            self._call("GET", f"{self.collection}/{probe}", allow=(404,), what="read a dataset")  # a wrong url or api shows here
        except SinkError as err:
            return Health(False, err.reason)
        if self._problem is not None:
            return Health(False, self._problem)
        user = who.get("username") if isinstance(who, dict) else None
        return Health(True, f"SciCat {self.api} at {self.url}" + (f", authenticated as {user}" if user else ""))

    def close(self) -> None:
        self._session.close()

    # -- writing ------------------------------------------------------------------------------------

    def _deliver(self, t: Target, receipt: Receipt) -> SinkError | None:
        """Write one dataset's entries into the receipt; the configuration problem or 403 that stopped it, if any."""
        items = list(t.items.values())
        try:
            try:
                over = self._write(t, items)
            except _Forbidden as err:  # a 403 concerns the whole dataset: no halving
                receipt.rejected.update(dict.fromkeys(t.ids(), err.reason))
                return err
            except SinkRejected as err:
                self._isolate(t, items, err.reason, receipt, top=True)
                return None
        except _Misconfigured as err:
            return err
        self._settle(items, over, receipt)
        return None

    @staticmethod
    def _settle(items: Sequence[Item], over: Mapping[str, str], receipt: Receipt) -> None:
        for it in items:
            if it.key in over:
                receipt.rejected.update(dict.fromkeys(it.ids, over[it.key]))
            else:
                receipt.stored.extend(it.ids)

    def _isolate(self, t: Target, items: list[Item], reason: str, receipt: Receipt, *, top: bool) -> None:
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

    def _write(self, t: Target, items: list[Item]) -> dict[str, str]:
        """Store entries in the dataset (creating it if needed); returns the keys refused for size."""
        return self._write_v3(t, items) if self.api == "v3" else self._write_v4(t, items)

    def _may_create(self, t: Target) -> bool:
        return t.pid not in self._known and self._pids_ignored is None

    def _ensure(self, t: Target) -> None:
        if self._may_create(t):
            self._create(t, ())

    def _create(self, t: Target, items: Sequence[Item]) -> bool:
        """POST the dataset of *t* with *items*: True if created, False if it existed (409)."""
        status, doc = self._call("POST", self.collection, dumps(self.docs.create_body(t, items)), allow=(409,), what=f"create {t.pid}")
        got = doc.get("pid") if status != 409 and isinstance(doc, dict) else None
        if isinstance(got, str) and got != t.pid:
            raise self._pid_ignored(t, got)
        self._remember(t.pid)
        return status != 409

    def _create_budget(self, t: Target) -> int:
        return self.max_body - len(dumps(self.docs.create_body(t, ()))) + 2

    def _missing(self, t: Target, again: bool) -> None:
        """The dataset of *t* is not there to update: create it again (once), or say why not."""
        self._forget(t.pid)
        if self._pids_ignored is not None:
            raise _Misconfigured(self._pids_ignored, sink=self.name)
        if not again:
            raise SinkRejected(f"dataset {t.pid} was created but SciCat cannot find it to update it", sink=self.name)

    def _write_v4(self, t: Target, items: list[Item], again: bool = True) -> dict[str, str]:
        rest = items
        if self._may_create(t):
            first, rest = fit(items, self._create_budget(t))
            if not self._create(t, first):  # it exists: everything goes in as a merge patch
                rest = items
        path = f"{self.collection}/{quote(t.pid, safe='')}"
        for chunk in pack(rest, self.max_body - len(b'{"scientificMetadata":}')):
            body = dumps({"scientificMetadata": {it.key: it.entry for it in chunk}})
            status, _ = self._call("PATCH", path, body, content_type=MERGE_PATCH, allow=(404,), what=f"update {t.pid}")
            if status == 404:
                self._missing(t, again)
                return self._write_v4(t, items, again=False)
            self._remember(t.pid)
        return {}

    def _write_v3(self, t: Target, items: list[Item], again: bool = True) -> dict[str, str]:
        too_big = (f"the scientificMetadata of {t.pid} would exceed the {self.max_body}-byte request limit "
                   "(an API v3 PATCH replaces it whole)")
        if self._may_create(t):
            kept, over = fit(items, self._create_budget(t))
            if self._create(t, kept):
                return dict.fromkeys((it.key for it in over), too_big)
        path = f"{self.collection}/{quote(t.pid, safe='')}"
        status, doc = self._call("GET", path, allow=(404,), what=f"read {t.pid}")
        if status == 404 or not isinstance(doc, dict):
            self._missing(t, again)
            return self._write_v3(t, items, again=False)
        self._remember(t.pid)
        old = doc.get("scientificMetadata")
        # a server that decodes field names on output gives dotted keys back: store them as we write them
        merged: dict[str, Any] = ({encode_key(k) if "." in k or k.startswith("$") else k: v for k, v in old.items()}
                                  if isinstance(old, dict) else {})
        size = len(dumps({"scientificMetadata": merged}))
        refused: dict[str, str] = {}
        for it in items:
            delta = it.size - (len(dumps(it.key)) + 1 + len(dumps(merged[it.key]))) if it.key in merged else it.size + 1
            if size + delta > self.max_body:
                refused[it.key] = too_big
                continue
            merged[it.key] = it.entry
            size += delta
        if len(refused) < len(items):
            self._call("PATCH", path, dumps({"scientificMetadata": merged}), what=f"update {t.pid}")
        return refused

    def _remember(self, pid: str) -> None:
        self._known[pid] = None
        self._known.move_to_end(pid)
        while len(self._known) > KNOWN_PIDS:
            self._known.popitem(last=False)

    def _forget(self, pid: str) -> None:
        self._known.pop(pid, None)

    # -- configuration problems -----------------------------------------------------------------------

    def _who(self) -> str:
        return repr(self.username) if self.username else "of the token"

    def _misconfigured(self, kind: str, reason: str) -> _Misconfigured:
        """Remember a configuration problem for health(), log it once per kind, and return the error to raise."""
        self._problem = reason
        if kind not in self._said:
            self._said.add(kind)
            log.warning("sink %s: %s", self.name, reason)
        return _Misconfigured(reason, sink=self.name)

    def _pid_ignored(self, t: Target, got: str) -> _Misconfigured:
        self.strays[t.pid] = got
        reason = (f"SciCat did not keep the pid this sink chose: the dataset {t.pid} of {t.subject.path} was stored as {got}"
                  + (" (the backend prefixes every pid with its own)" if got.endswith("/" + t.pid) else "")
                  + f". The account {self._who()} may not choose pids: add it to CREATE_DATASET_WITH_PID_GROUPS (or ADMIN_GROUPS) "
                  f"in the backend's configuration, delete the stray dataset {got}, and restart mxcat. Until then this sink creates "
                  "no dataset (each would be one more stray) and the records of new datasets wait in the outbox")
        if self._pids_ignored is None:
            self._pids_ignored = reason
            log.error("sink %s: %s", self.name, reason)  # once: no dataset is created after this
        return _Misconfigured(reason, sink=self.name)

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
        body = dumps({"username": self.username, "password": self._password})
        resp = self._send("POST", self.login_path, body, {"Content-Type": "application/json", "Accept": "application/json"})
        if not 200 <= resp.status_code < 300:
            if resp.status_code == 404:
                raise self._misconfigured("route", f"SciCat at {self.url} has no login route {self.login_path} (404: {_message(resp)}); "
                                                   "check the url (is a reverse-proxy prefix missing?) and login_path")
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
        create = method == "POST" and path == self.collection
        if status == 404 and (create or _route_missing(resp)):  # no dataset to miss: the url or the api is wrong
            raise self._misconfigured("route", f"SciCat at {self.url} has no route {method} {path} (404: {_message(resp)}); check the "
                                               f"url (is a reverse-proxy prefix missing?) and api ({self.api}; backends before v4 serve "
                                               "only /api/v3); records wait in the outbox")
        if status in allow:
            return status, None
        reason = f"SciCat answered {status} to {what or method}: {_message(resp)}"
        if status == 401:
            reason += " (token refused; check the credentials)"
        if status == 403 and create:
            raise self._misconfigured("create", f"{reason}. The account {self._who()} may not create datasets of owner group "
                                                f"{self.owner_group!r} with a pid of its choosing: make {self.owner_group!r} one of "
                                                "its groups and add it to CREATE_DATASET_WITH_PID_GROUPS (or ADMIN_GROUPS) in the "
                                                "backend's configuration; records wait in the outbox")
        if status == 403:
            raise _Forbidden(f"{reason} (the dataset belongs to an owner group the account {self._who()} is not in)", sink=self.name)
        raise error_class(status)(reason, sink=self.name)


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


def _route_missing(resp: Any) -> bool:
    """Whether a 404 says the url has no such route (NestJS ``Cannot GET /x``, loopback "no method", a page that is not SciCat's)."""
    try:
        doc = resp.json()
    except ValueError:
        return True
    if not isinstance(doc, dict) or not ("statusCode" in doc or isinstance(doc.get("error"), dict)):
        return True
    msg = _message(resp)
    return msg.startswith("Cannot ") or "no method to handle" in msg or "has no method handling" in msg
