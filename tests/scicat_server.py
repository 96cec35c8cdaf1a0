"""A reference SciCat backend for the tests (a test fixture, not a SciCat), over real HTTP.

Written from the published API of SciCatProject/scicat-backend-next (auth controller, dataset DTOs
of API v3 "obsolete" and v4, ``datasets.v4.controller``) and runs in a thread on 127.0.0.1; it can
be stopped and started again on the same port, keeping its datasets and tokens.

Covers: ``POST /api/v3/auth/login`` (users with groups; opaque JWT-like tokens that expire after
``token_ttl`` seconds, or at once with :meth:`expire_tokens`; 201 ``{access_token, id, expires_in,
ttl, created, userId, user}``), functional-account tokens that never expire, ``GET
/api/v3/auth/whoami``; ``POST``/``GET``/``PATCH`` of datasets under ``/api/v3/Datasets`` and
``/api/v4/datasets`` (collection name case-insensitive, pid URL-encoded): required fields and
whitelists per version and type (raw: ``principalInvestigator``/``principalInvestigators`` and
``creationLocation``; derived: ``investigator``, ``inputDatasets``, ``usedSoftware`` in v3,
``inputDatasets`` in v4; unknown properties refused as by ``forbidNonWhitelisted``), 400 with the
NestJS payload ``{"statusCode", "message": [...], "error"}`` (or, with ``v3_errors="loopback"``, the
loopback ``{"error": {"statusCode": 422, "name", "message"}}`` on v3 routes), 401 without a valid
token, 403 when ``ownerGroup`` is not one of the caller's groups, 409 on a duplicate pid, 413 for a
body over ``max_body`` (16 MB), the client-chosen pid rule (only members of ``pid_groups``, the
backend's ``ADMIN_GROUPS`` and ``CREATE_DATASET_WITH_PID_GROUPS``, may choose a pid; ``None``: every
caller may): others get, with ``pid_refusal="forbid"``, the 403 of current backends (v3 "Unauthorized
to create datasets with explicit PID", v4 "Unauthorized access") or, with ``pid_refusal="drop"``, the
``delete dataset.pid`` branch: 201 with a generated pid, the chosen one silently dropped (also what a
backend that rewrites every pid looks like to a client), ``apis`` (the API versions served: a
v3-only backend answers NestJS's routing 404 ``Cannot POST /api/v4/datasets``), unknown routes as
that same routing 404, v4 ``PATCH`` as RFC 7386 merge patch with
``application/merge-patch+json`` (with v4's check that an entry holding value and unit is updated
with both) and as a top-level set otherwise, v3 ``PATCH`` as a top-level set (``scientificMetadata``
replaced whole). ``scientificMetadata`` field names with ``.`` or a leading ``$`` are refused (400),
as a MongoDB before 5.0 cannot store them, and so are names with a NUL, which no MongoDB stores; keys in ``forbidden_keys`` are refused (400) to stand in
for a failed ``scientificMetadataSchema`` validation. Units of ``{value: number, unit}`` entries are
checked against a small emulation of mathjs (SciCat's ``convertToSI``: SI symbols and American long
names with prefixes, products, quotients, integer powers; no plurals, no British spellings); units
it cannot read are listed in ``unit_failures`` (SciCat logs them and stores the value unconverted).
Every request is counted in ``counts`` (by method and route), ``total``, ``statuses`` and ``log``;
:meth:`fail_next` makes the next requests answer a given status (503, 429...; with ``page`` an HTML
page instead of SciCat's JSON, as a reverse proxy or web server answers), :meth:`stop_after` kills
the server in the middle of a batch.

Does not cover: samples, proposals, origdatablocks, attachments, jobs, queries and filters, the
Elasticsearch path, valueSI/unitSI computation, server-side key encoding, history, public access,
real JWT signatures, OIDC/LDAP, PUT.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

BODY_LIMIT = 16 * 1024 * 1024

COMMON = {"pid", "type", "owner", "ownerEmail", "orcidOfOwner", "contactEmail", "sourceFolder", "sourceFolderHost", "size", "packedSize",
          "numberOfFiles", "numberOfFilesArchived", "creationTime", "validationStatus", "keywords", "description", "datasetName",
          "classification", "license", "isPublished", "techniques", "sharedWith", "relationships", "datasetlifecycle", "scientificMetadata",
          "scientificMetadataSchema", "comment", "dataQualityMetrics", "ownerGroup", "accessGroups", "instrumentGroup", "version", "runNumber"}
DERIVED_V3 = {"proposalId", "investigator", "inputDatasets", "usedSoftware", "jobParameters", "jobLogData"}
ALLOWED = {
    ("v3", "raw"): COMMON | DERIVED_V3 | {"principalInvestigator", "startTime", "endTime", "creationLocation", "dataFormat", "sampleId",
                                          "instrumentId"},
    ("v3", "derived"): COMMON | DERIVED_V3,
    ("v4", "raw"): COMMON | {"principalInvestigators", "startTime", "endTime", "creationLocation", "dataFormat", "proposalIds", "sampleIds",
                             "instrumentIds", "inputDatasets", "usedSoftware", "jobParameters", "jobLogData"},
}
ALLOWED[("v4", "derived")] = ALLOWED[("v4", "raw")]
REQUIRED = {
    ("v3", "raw"): ("owner", "contactEmail", "sourceFolder", "creationTime", "ownerGroup", "principalInvestigator", "creationLocation"),
    ("v3", "derived"): ("owner", "contactEmail", "sourceFolder", "creationTime", "ownerGroup", "investigator", "inputDatasets", "usedSoftware"),
    ("v4", "raw"): ("contactEmail", "sourceFolder", "creationTime", "datasetName", "ownerGroup", "principalInvestigators", "creationLocation"),
    ("v4", "derived"): ("contactEmail", "sourceFolder", "creationTime", "datasetName", "ownerGroup", "inputDatasets"),
}
STRING_LISTS = {"accessGroups", "keywords", "sharedWith", "inputDatasets", "usedSoftware", "principalInvestigators", "proposalIds",
                "sampleIds", "instrumentIds"}
OBJECTS = {"scientificMetadata", "jobParameters", "datasetlifecycle"}
DATES = {"creationTime", "startTime", "endTime"}
EMAIL = re.compile(r"^[^@\s;]+@[^@\s;]+\.[A-Za-z]{2,}$")
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
           422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}

# mathjs-like units: symbols take short prefixes, American long names take long prefixes
_SYMBOLS = {"m", "g", "s", "A", "K", "mol", "cd", "rad", "deg", "Hz", "N", "Pa", "J", "W", "C", "V", "eV", "Gy", "L", "h", "min", "b"}
_NAMES = {"meter", "gram", "second", "ampere", "kelvin", "mole", "radian", "degree", "hertz", "newton", "pascal", "joule", "watt",
          "coulomb", "volt", "electronvolt", "gray", "liter", "hour", "minute", "angstrom", "percent", "inch", "foot"}
_SHORT = ("da", "y", "z", "a", "f", "p", "n", "u", "m", "c", "d", "h", "k", "M", "G", "T", "P", "E")
_LONG = ("deca", "atto", "femto", "pico", "nano", "micro", "milli", "centi", "deci", "hecto", "kilo", "mega", "giga", "tera", "peta")
_UNFIXED = {"h", "min", "percent", "angstrom", "inch", "foot", "deg", "degree"}


def mathjs_unit_ok(unit: str) -> bool:
    """Whether a mathjs-like parser (SciCat's unit converter) reads *unit*: products/quotients of names with powers."""
    for part in re.split(r"\s*[*/]\s*|\s+", unit.strip()):
        m = re.fullmatch(r"([A-Za-z]+)(?:\^-?\d+)?", part)
        if not m or not _unit_name_ok(m.group(1)):
            return False
    return bool(unit.strip())


def _unit_name_ok(name: str) -> bool:
    if name in _SYMBOLS or name in _NAMES:
        return True
    for prefixes, table in ((_SHORT, _SYMBOLS), (_LONG, _NAMES)):
        for p in prefixes:
            if name.startswith(p) and name[len(p):] in table and name[len(p):] not in _UNFIXED:
                return True
    return False


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class _HttpError(Exception):
    def __init__(self, status: int, message: str | list[str], page: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.page = page


class SciCatServer:
    """The reference backend. ``users`` maps a username to ``(password, groups)``; ``functional_tokens`` a token to groups."""

    def __init__(self, *, users: Mapping[str, tuple[str, Iterable[str]]] | None = None,
                 functional_tokens: Mapping[str, Iterable[str]] | None = None, token_ttl: float = 3600.0, max_body: int = BODY_LIMIT,
                 forbidden_keys: Iterable[str] = (), v3_errors: str = "nest", pid_groups: Iterable[str] | None = None,
                 pid_refusal: str = "forbid", apis: Iterable[str] = ("v3", "v4"), port: int = 0) -> None:
        if pid_refusal not in ("forbid", "drop"):
            raise ValueError(f"pid_refusal must be 'forbid' or 'drop', not {pid_refusal!r}")
        self.users = {u: (pw, set(g)) for u, (pw, g) in (users or {"ingestor": ("ingestor-pw", ["mx"])}).items()}
        self.functional = {t: set(g) for t, g in (functional_tokens or {}).items()}
        self.token_ttl = token_ttl
        self.max_body = max_body
        self.forbidden_keys = set(forbidden_keys)
        self.v3_errors = v3_errors
        self.pid_groups = None if pid_groups is None else set(pid_groups)
        self.pid_refusal = pid_refusal
        self.apis = {a.lower() for a in apis}
        self.port = port
        self.datasets: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (username, expiry)
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.log: list[tuple[str, str, str, int, int]] = []
        """(method, path, content type, body bytes, status) of every request."""
        self.unit_failures: list[tuple[str, str, str]] = []
        self.lock = threading.RLock()
        self._fail: list[tuple[int, str, str | None]] = []
        self._crash_in: int | None = None
        self._stopper: threading.Thread | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- life cycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SciCatServer:
        owner = self
        if self._stopper is not None:  # a crash (stop_after) may still be closing the previous server
            self._stopper.join(10)
            self._stopper = None

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: Any, client_address: Any) -> None:
                with owner.lock:
                    owner._conns.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                with owner.lock:
                    owner._conns.discard(request)
                super().shutdown_request(request)

        httpd = Server(("127.0.0.1", self.port), _handler(self))
        self.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        with self.lock:
            self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections; the data stays for :meth:`start`."""
        with self.lock:
            httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is not None:
            self._close(httpd, thread)
        if self._stopper is not None and self._stopper is not threading.current_thread():
            self._stopper.join(10)
            self._stopper = None

    def _close(self, httpd: ThreadingHTTPServer, thread: threading.Thread | None) -> None:
        httpd.shutdown()
        httpd.server_close()
        with self.lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> SciCatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()

    def expire_tokens(self) -> None:
        """Every login token expires now (functional tokens do not)."""
        with self.lock:
            self.tokens = {t: (u, 0.0) for t, (u, _) in self.tokens.items()}

    def fail_next(self, status: int, times: int = 1, message: str = "try again later", *, page: str | None = None) -> None:
        """The next *times* requests to a known route answer *status*: SciCat's JSON error, or the HTML *page* if given."""
        with self.lock:
            self._fail += [(status, message, page)] * times

    def stop_after(self, n: int) -> None:
        """Answer *n* more requests, then die: the next one gets its connection closed and the server stops."""
        with self.lock:
            self._crash_in = n

    def _crash_now(self) -> bool:
        with self.lock:
            if self._crash_in is None:
                return False
            if self._crash_in > 0:
                self._crash_in -= 1
                return False
            self._crash_in = None
            httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is not None:
            self._stopper = threading.Thread(target=self._close, args=(httpd, thread), daemon=True)
            self._stopper.start()
        return True

    # -- behaviour ----------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes | None) -> tuple[int, Any]:
        path = urlsplit(raw_path).path
        m = re.fullmatch(r"/api/(v[34])/datasets(?:/([^/]+))?", path, re.IGNORECASE)
        route = ("login" if path == "/api/v3/auth/login" else "whoami" if path == "/api/v3/auth/whoami"
                 else f"{m.group(1)}/dataset{'' if m.group(2) else 's'}" if m else "other")
        with self.lock:
            self.counts[f"{method} {route}"] += 1
            if self._fail and route != "other":
                status, msg, page = self._fail.pop(0)
                raise _HttpError(status, msg, page)
        if route == "login" and method == "POST":
            return self._login(_json(body))
        if route == "other" or (route == "whoami" and method != "GET") or (m and m.group(1).lower() not in self.apis):
            raise _HttpError(404, f"Cannot {method} {path}")
        user, groups = self._auth(headers)
        if route == "whoami":
            return 200, {"username": user, "currentGroups": sorted(groups)}
        api = m.group(1).lower()
        if m.group(2) is None:
            if method != "POST":
                raise _HttpError(404, f"Cannot {method} {path}")
            return self._create(api, _json(body), groups)
        pid = unquote(m.group(2))
        if method == "GET":
            with self.lock:
                doc = self.datasets.get(pid)
            if doc is None:
                raise _HttpError(404, f"dataset: {pid} not found")
            return 200, json.loads(json.dumps(doc))
        if method == "PATCH":
            return self._patch(api, pid, _json(body), headers.get("Content-Type", ""), groups)
        raise _HttpError(404, f"Cannot {method} {path}")

    def _login(self, doc: Any) -> tuple[int, Any]:
        if not isinstance(doc, dict):
            raise _HttpError(401, "Unauthorized")
        user, pw = doc.get("username"), doc.get("password")
        if user not in self.users or not secrets.compare_digest(str(pw), self.users[user][0]):
            raise _HttpError(401, "Unauthorized")
        payload = base64.urlsafe_b64encode(json.dumps({"sub": user, "n": secrets.token_hex(4)}).encode()).decode().rstrip("=")
        token = f"eyJhbGciOiJIUzI1NiJ9.{payload}.{secrets.token_urlsafe(16)}"
        with self.lock:
            self.tokens[token] = (user, time.monotonic() + self.token_ttl)
        created = datetime.now().astimezone().isoformat()
        return 201, {"access_token": token, "id": token, "expires_in": self.token_ttl, "ttl": self.token_ttl, "created": created,
                     "userId": user, "user": {"username": user, "email": f"{user}@example.org"}}

    def _auth(self, headers: Mapping[str, str]) -> tuple[str, set[str]]:
        auth = headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with self.lock:
            if token in self.functional:
                return "functional", self.functional[token]
            hit = self.tokens.get(token)
        if hit is None or time.monotonic() >= hit[1]:
            raise _HttpError(401, "Unauthorized")
        return hit[0], self.users[hit[0]][1]

    def _create(self, api: str, doc: Any, groups: set[str]) -> tuple[int, Any]:
        if not isinstance(doc, dict):
            raise _HttpError(400, ["an instance of CreateDatasetDto should be an object"])
        kind = doc.get("type")
        if kind not in ("raw", "derived"):
            raise _HttpError(400, ["type must be one of the following values: raw, derived"])
        errors = [f"property {k} should not exist" for k in doc if k not in ALLOWED[(api, kind)]]
        errors += [f"{k} should not be empty" for k in REQUIRED[(api, kind)] if doc.get(k) in (None, "")]
        errors += _check_fields(doc) + self.key_errors(doc.get("scientificMetadata"))
        if errors:
            raise _HttpError(400, errors)
        stored = dict(doc)
        if stored.get("pid") and self.pid_groups is not None and not groups & self.pid_groups:
            if self.pid_refusal == "forbid":
                raise _HttpError(403, "Unauthorized to create datasets with explicit PID" if api == "v3" else "Unauthorized access")
            del stored["pid"]
        if doc["ownerGroup"] not in groups:
            raise _HttpError(403, "Unauthorized access")
        stored.setdefault("pid", f"20.500.12269/{secrets.token_hex(8)}")
        with self.lock:
            if stored["pid"] in self.datasets:
                raise _HttpError(409, "A dataset with this unique key already exists!")
            self._units(stored["pid"], stored.get("scientificMetadata"))
            stored["createdAt"] = stored["updatedAt"] = datetime.now().astimezone().isoformat()
            self.datasets[stored["pid"]] = stored
        return 201, stored

    def _patch(self, api: str, pid: str, doc: Any, content_type: str, groups: set[str]) -> tuple[int, Any]:
        if not isinstance(doc, dict):
            raise _HttpError(400, ["an instance of PartialUpdateDatasetDto should be an object"])
        with self.lock:
            current = self.datasets.get(pid)
            if current is None:
                raise _HttpError(404, f"dataset: {pid} not found")
            if current["ownerGroup"] not in groups:
                raise _HttpError(403, "Unauthorized access")
            allowed = ALLOWED[(api, current["type"])] - {"pid", "type"}
            errors = [f"property {k} should not exist" for k in doc if k not in allowed]
            errors += _check_fields({k: v for k, v in doc.items() if v is not None}) + self.key_errors(doc.get("scientificMetadata"))
            merge = content_type.split(";")[0].strip().lower() == "application/merge-patch+json"
            if api == "v4" and merge:
                errors += _value_unit_check(current.get("scientificMetadata"), doc.get("scientificMetadata"))
            if errors:
                raise _HttpError(400, errors)
            if api == "v4" and merge:
                updated = merge_patch(current, doc)
            else:
                updated = {**current, **{k: v for k, v in doc.items() if v is not None}}
            self._units(pid, doc.get("scientificMetadata"))
            updated["updatedAt"] = datetime.now().astimezone().isoformat()
            self.datasets[pid] = updated
        return 200, updated

    def _units(self, pid: str, sm: Any) -> None:
        if not isinstance(sm, dict):
            return
        for key, entry in sm.items():
            if isinstance(entry, dict) and isinstance(entry.get("value"), int | float) and isinstance(entry.get("unit"), str):
                if entry["unit"] and not mathjs_unit_ok(entry["unit"]):
                    self.unit_failures.append((pid, key, entry["unit"]))

    def key_errors(self, sm: Any, path: str = "scientificMetadata") -> list[str]:
        out = []
        if isinstance(sm, dict):
            for k, v in sm.items():
                if "." in k or k.startswith("$") or "\x00" in k:
                    out.append(f"{path} field name {k!r} is not storable in MongoDB (no '.', NUL or leading '$')")
                if path == "scientificMetadata" and k in self.forbidden_keys:
                    out.append("The scientific metadata do not conform to the given schema.")
                out += self.key_errors(v, f"{path}.{k}") if isinstance(v, dict) else []
        return out


def _json(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise _HttpError(400, f"Unexpected token in JSON: {err}") from err


def _check_fields(doc: Mapping[str, Any]) -> list[str]:
    errors = []
    for k, v in doc.items():
        if k in STRING_LISTS:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                errors.append(f"each value in {k} must be a string")
        elif k in OBJECTS:
            if not isinstance(v, dict):
                errors.append(f"{k} must be an object")
        elif k in DATES:
            try:
                datetime.fromisoformat(str(v).replace("Z", "+00:00"))
            except ValueError:
                errors.append(f"{k} must be a valid ISO 8601 date string")
        elif k == "contactEmail":
            if not isinstance(v, str) or not all(EMAIL.match(e.strip()) for e in v.split(";")):
                errors.append("contactEmail must be an email")
        elif k in ("isPublished",):
            if not isinstance(v, bool):
                errors.append(f"{k} must be a boolean value")
        elif k in ("size", "packedSize", "numberOfFiles", "numberOfFilesArchived", "dataQualityMetrics"):
            if not isinstance(v, int | float):
                errors.append(f"{k} must be a number")
        elif k not in ("techniques", "relationships") and not isinstance(v, str):
            errors.append(f"{k} must be a string")
    return errors


def _value_unit_check(current: Any, patch: Any) -> list[str]:
    """v4: an entry that holds both value and unit must be updated with both."""
    if not isinstance(current, dict) or not isinstance(patch, dict):
        return []
    bad = [k for k, v in patch.items() if isinstance(v, dict) and isinstance(current.get(k), dict)
           and "value" in current[k] and "unit" in current[k] and not ("value" in v and "unit" in v)]
    return [f"Original dataset contains both value and unit in {', '.join(bad)}. Please provide both when updating."] if bad else []


def _handler(server: SciCatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle/delayed-ACK stalls

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if server._crash_now():
                self.close_connection = True
                return
            v3 = self.path.lower().startswith("/api/v3/datasets")
            page: str | None = None
            try:
                if length > server.max_body:
                    remaining = length
                    while remaining > 0:  # read it all, so that the client sees the answer and not a reset
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        if not chunk:
                            break
                        remaining -= len(chunk)
                    with server.lock:
                        server.counts[f"{method} too-large"] += 1
                    raise _HttpError(413, "request entity too large")
                body = self.rfile.read(length) if length else None
                status, doc = server.handle(method, self.path, {k: v for k, v in self.headers.items()}, body)
            except _HttpError as err:
                status = err.status
                page = err.page
                if page is not None:
                    doc = None
                elif v3 and server.v3_errors == "loopback":
                    if status == 400:
                        status = 422
                    msg = "; ".join(err.message) if isinstance(err.message, list) else err.message
                    doc = {"error": {"statusCode": status, "name": "ValidationError" if status == 422 else "Error", "message": msg}}
                else:
                    doc = {"statusCode": status, "message": err.message, "error": REASONS.get(status, "Error")}
            data = page.encode() if page is not None else json.dumps(doc).encode()
            with server.lock:
                server.statuses[status] += 1
                server.log.append((method, urlsplit(self.path).path, self.headers.get("Content-Type", ""), length, status))
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8" if page is not None else "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._serve("PATCH")

        def do_PUT(self) -> None:  # noqa: N802
            self._serve("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

    return Handler
