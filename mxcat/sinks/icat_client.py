"""A small client of the ICAT REST API (icat.server 4.x–6.x), with sessions that look after themselves.

Follows the published REST resources of icat.server (``ICATRest.java``): ``POST /icat/session`` with
the form field ``json = {"plugin": ..., "credentials": [{"username": ...}, {"password": ...}]}``,
``GET``/``PUT``/``DELETE /icat/session/{id}`` (``PUT`` refreshes), ``GET /icat/entityManager`` with
``sessionId`` and ``query``, ``POST /icat/entityManager`` with the form fields ``sessionId`` and
``entities`` (a JSON list written in ONE transaction), and ``GET /icat/properties``
(``maxEntities``). The REST write, and queries that select several attributes
(``SELECT p.id, p.type.id ...``), came with icat.server 4.7.0: older servers are not supported. A write
answers the ids of the entities it CREATED only (``EntityBeanManager.write`` skips updates), in
order; :meth:`IcatClient.write` gives them to the entities sent without an ``id``, and updates keep
their own. Errors come back as ``{"code", "message", "offset"}`` and become :class:`IcatError`;
:func:`sink_error` maps them to ``SinkUnavailable`` / ``SinkRejected`` through the one table
:data:`ICAT_ERRORS`, except that a refused query is always ``SinkUnavailable`` (it is the same for every
record: a server too old or a bug, never a bad record). Sessions are refreshed once half their lifetime has
passed, and a request refused with ``SESSION`` logs in again once and is retried. Every call has a
timeout; transport failures, timeouts and answers that are not ICAT's are ``SinkUnavailable``. The
password is sent only in the login form and never appears in messages or logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from mxcat.errors import ConfigError, SinkError, SinkRejected, SinkUnavailable

log = logging.getLogger(__name__)

ICAT_ERRORS: dict[str, tuple[type[SinkError], str]] = {
    "SESSION": (SinkUnavailable, "ICAT refused the session (login failed or expired); records wait in the outbox"),
    "INTERNAL": (SinkUnavailable, "ICAT reported an internal error; will retry"),
    "INSUFFICIENT_PRIVILEGES": (SinkUnavailable, "the ICAT account lacks a permission mxcat needs (READ on the facility's "
                                "Investigation/Sample/Dataset/ParameterType, CREATE and UPDATE on Investigation, Sample, Dataset, "
                                "their parameters, Application, Job, DataCollection and DataCollectionDataset); ask the ICAT "
                                "administrator to grant it; records wait in the outbox"),
    "BAD_PARAMETER": (SinkRejected, "ICAT refused the request as malformed"),
    "VALIDATION": (SinkRejected, "ICAT refused a value"),
    "OBJECT_ALREADY_EXISTS": (SinkRejected, "ICAT already has this entity"),
    "NO_SUCH_OBJECT_FOUND": (SinkRejected, "ICAT does not have an entity mxcat refers to"),
    "NOT_IMPLEMENTED": (SinkUnavailable, "this ICAT server does not implement a call mxcat needs (icat.server 4.7 or newer is "
                        "required); records wait in the outbox"),
}
"""What each ICAT error code means for the outbox: retry later (unavailable) or dead-letter (rejected).

Rejected is for what one record can cause (a value ICAT refuses); whatever would refuse every record
alike — the account's permissions, a server too old — is unavailable, so that a misconfiguration
keeps the outbox instead of dead-lettering it. Codes not in the table (a newer server) are treated
as unavailable too, as are connection errors, time-outs and HTTP errors without an ICAT error body."""

CONFIGURATION_CODES = frozenset({"INSUFFICIENT_PRIVILEGES", "NOT_IMPLEMENTED"})
"""Codes that say the set-up is wrong (not a record): the sink's health reports them until a batch goes through."""


class IcatError(Exception):
    """An error answered by ICAT: its code, message, HTTP status, for writes the failing entity's offset, and the call."""

    def __init__(self, code: str, message: str, *, status: int = 0, offset: int | None = None, call: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.offset = offset
        self.call = call
        """``search``, ``write`` or empty (sessions and the rest)."""


def sink_error(err: IcatError, sink: str | None = None, account: str | None = None) -> SinkError:
    """The SinkUnavailable / SinkRejected for an ICAT error, from :data:`ICAT_ERRORS`; *account* is named when it lacks a right."""
    if err.call == "search" and err.code not in ("SESSION", "INSUFFICIENT_PRIVILEGES"):
        return SinkUnavailable(f"ICAT refused a query mxcat sends, which no record can fix (icat.server 4.7 or newer is required); "
                               f"records wait in the outbox ({err.code}: {err.message[:300]})", sink=sink)
    cls, what = ICAT_ERRORS.get(err.code, (SinkUnavailable, "ICAT answered an unknown error code; will retry"))
    if err.code == "INSUFFICIENT_PRIVILEGES" and account:
        what = what.replace("the ICAT account", f"the ICAT account {account}", 1)
    return cls(f"{what} ({err.code}: {err.message[:300]})", sink=sink)


def quote(text: str) -> str:
    """A string literal of the ICAT query language."""
    return "'" + text.replace("'", "''") + "'"


def _entity_id(entity: dict[str, Any]) -> int | None:
    """The ``id`` of ``{"Entity": {"id": ..., ...}}`` (an update), None for a creation."""
    (body,) = entity.values()
    i = body.get("id") if isinstance(body, dict) else None
    return int(i) if i is not None else None


class IcatClient:
    """One ICAT server, one user: login, refresh, search (paged) and transactional writes."""

    def __init__(self, url: str, *, plugin: str, username: str, password: str, verify: bool | str = True, timeout: float = 30.0,
                 sink: str = "icat") -> None:
        try:
            import requests
        except ImportError as err:
            raise ConfigError("the icat sink needs requests: pip install 'mxcat[icat]'", key=f"sinks.{sink}") from err
        self._requests = requests
        base = url.rstrip("/")
        self.base = base if base.endswith("/icat") else base + "/icat"
        self.plugin = plugin
        self.username = username
        self._password = password
        self.timeout = timeout
        self.sink = sink
        self.http = requests.Session()
        self.http.verify = verify
        self.session_id: str | None = None
        self._login_at = 0.0
        self._lifetime: float | None = None
        self._max_entities: int | None = None
        self.requests = 0
        self.logins = 0

    # -- transport ------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
              timeout: float | None = None) -> Any:
        rq = self._requests
        self.requests += 1
        try:
            r = self.http.request(method, self.base + path, params=params, data=data, timeout=timeout or self.timeout)
        except rq.Timeout as err:
            raise SinkUnavailable(f"ICAT did not answer {method} {path} within {timeout or self.timeout:g} s", sink=self.sink) from err
        except rq.RequestException as err:
            raise SinkUnavailable(f"ICAT unreachable at {self.base}: {type(err).__name__}", sink=self.sink) from err
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("code"), str):
                off = body.get("offset")
                raise IcatError(body["code"], str(body.get("message", "")), status=r.status_code,
                                offset=off if isinstance(off, int) and off >= 0 else None)
            raise SinkUnavailable(f"HTTP {r.status_code} from {self.base}{path} without an ICAT error (is the url right?)", sink=self.sink)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError as err:
            raise SinkUnavailable(f"ICAT answered {method} {path} with something that is not JSON", sink=self.sink) from err

    # -- sessions ---------------------------------------------------------------------------------------

    def login(self) -> None:
        """Open a session with the authenticator plugin and credentials."""
        creds = json.dumps({"plugin": self.plugin, "credentials": [{"username": self.username}, {"password": self._password}]})
        try:
            doc = self._call("POST", "/session", data={"json": creds})
        except IcatError as err:
            raise SinkUnavailable(f"ICAT refused the login of {self.plugin}/{self.username}: {err.code}: {err.message[:200]}; "
                                  "records wait in the outbox", sink=self.sink) from err
        if not isinstance(doc, dict) or not isinstance(doc.get("sessionId"), str):
            raise SinkUnavailable("ICAT answered the login without a sessionId", sink=self.sink)
        self.session_id = doc["sessionId"]
        self._login_at = time.monotonic()
        self.logins += 1
        try:
            info = self._call("GET", f"/session/{self.session_id}")
            self._lifetime = float(info["remainingMinutes"]) * 60.0
        except (IcatError, KeyError, TypeError, ValueError):
            self._lifetime = None  # unknown: rely on re-login when ICAT says SESSION
        log.debug("ICAT session opened for %s/%s (lifetime %s s)", self.plugin, self.username, self._lifetime)

    def ensure_session(self) -> str:
        """A live session id: log in, or refresh once half the lifetime has passed."""
        if self.session_id is None:
            self.login()
        elif self._lifetime is not None and time.monotonic() - self._login_at >= self._lifetime / 2:
            try:
                self._call("PUT", f"/session/{self.session_id}")
                self._login_at = time.monotonic()
            except IcatError as err:
                if err.code != "SESSION":
                    raise
                self.session_id = None
                self.login()
        if self.session_id is None:
            raise SinkUnavailable("no ICAT session", sink=self.sink)
        return self.session_id

    def logout(self) -> None:
        sid, self.session_id = self.session_id, None
        if sid is None:
            return
        try:
            self._call("DELETE", f"/session/{sid}", timeout=min(self.timeout, 5.0))
        except (IcatError, SinkError):
            pass

    def _with_session(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      data: dict[str, Any] | None = None) -> Any:
        for attempt in (1, 2):
            sid = self.ensure_session()
            p = {**params, "sessionId": sid} if params is not None else None
            d = {**data, "sessionId": sid} if data is not None else None
            try:
                return self._call(method, path, params=p, data=d)
            except IcatError as err:
                if err.code != "SESSION" or attempt == 2:
                    raise
                log.info("ICAT session no longer valid (%s); logging in again", err.message[:100])
                self.session_id = None
        return None  # not reached

    # -- API ------------------------------------------------------------------------------------------------

    def version(self) -> str:
        doc = self._call("GET", "/version", timeout=min(self.timeout, 10.0))
        return str(doc.get("version", "?")) if isinstance(doc, dict) else "?"

    @property
    def max_entities(self) -> int:
        """The server's cap on search results (``maxEntities``), 10 000 when it does not say."""
        if self._max_entities is None:
            try:
                doc = self._call("GET", "/properties")
                self._max_entities = int(doc["maxEntities"])
            except (IcatError, KeyError, TypeError, ValueError):
                self._max_entities = 10_000
        return self._max_entities

    @property
    def account(self) -> str:
        """``plugin/username``, as ICAT names the user in its messages."""
        return f"{self.plugin}/{self.username}"

    def search(self, query: str) -> list[Any]:
        try:
            doc = self._with_session("GET", "/entityManager", params={"query": query})
        except IcatError as err:
            err.call = "search"
            raise
        if not isinstance(doc, list):
            raise SinkUnavailable("ICAT answered a search with something that is not a list", sink=self.sink)
        return doc

    def search_all(self, query: str, page: int = 1000) -> list[Any]:
        """All results of *query* (which must end with an ORDER BY), fetched in pages under the server's cap."""
        n = max(1, min(page, self.max_entities))
        out: list[Any] = []
        while True:
            got = self.search(f"{query} LIMIT {len(out)}, {n}")
            out.extend(got)
            if len(got) < n:
                return out

    def write(self, entities: Sequence[dict[str, Any]]) -> list[int]:
        """Create (no ``id``) or update (with ``id``) entities in one transaction; the id of each, in order.

        ICAT answers the ids of the created entities only, in the order sent: they go to the entities
        without an ``id``; an update keeps the id it was sent with."""
        try:
            doc = self._with_session("POST", "/entityManager", data={"entities": json.dumps(list(entities), allow_nan=False)})
        except IcatError as err:
            err.call = "write"
            raise
        known = [_entity_id(e) for e in entities]
        created = sum(1 for k in known if k is None)
        if not isinstance(doc, list) or len(doc) != created or not all(isinstance(x, int) and not isinstance(x, bool) for x in doc):
            raise SinkUnavailable(f"ICAT answered a write of {created} new and {len(entities) - created} updated entities with "
                                  f"{len(doc) if isinstance(doc, list) else 'no list of'} ids; expected one id per new entity",
                                  sink=self.sink)
        new = iter(doc)
        return [k if k is not None else int(next(new)) for k in known]

    def close(self) -> None:
        self.logout()
        self.http.close()
