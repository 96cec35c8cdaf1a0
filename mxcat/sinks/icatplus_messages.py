"""ICAT+ messages and the STOMP link that delivers them (the ``icatplus`` sink's wire side).

What goes on ESRF's broker, as pyicat-plus 3.1 writes it: ESRF parameter names of mmCAT keys
(ontology scheme ``esrf_icat``) with values as text in ESRF units, the ``<tns:dataset>`` XML of
``/queue/icatIngest`` and the JSON of ``/queue/icatUpdateDatasetMetadata``; and one STOMP 1.1
connection (stomp.py) that sends them with receipts and fails over between brokers. Every text that
goes into a message passes :func:`check_text`: a character XML 1.0 cannot carry raises
:class:`UnsafeText` naming the field, so a message is never malformed and no frame ever holds a NUL
(frames carry no ``content-length``, so a NUL would end the frame early: the broker would store the
truncated message and take the rest for a command). The planning, the delivery state and the sink
itself live in :mod:`mxcat.sinks.icatplus`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from mxcat.errors import MxcatError

log = logging.getLogger("mxcat.sinks.icatplus")  # the sink's logger: one name to configure

NAMESPACE = "http://www.esrf.fr/icat"
DATASET_QUEUE = "/queue/icatIngest"
UPDATE_QUEUE = "/queue/icatUpdateDatasetMetadata"
MAX_VALUE = 4000
"""ICAT keeps at most 4000 characters in a string parameter value."""
BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 cannot carry (its ``Char`` production), lone surrogates included (not encodable as UTF-8)."""


def host_port(text: str) -> tuple[str, int]:
    """``(host, port)`` of a broker given as ``host:port`` (``tcp://`` or ``stomp://`` allowed); ValueError if not."""
    t = text.strip()
    for scheme in ("tcp://", "stomp://"):
        if t.startswith(scheme):
            t = t[len(scheme):]
    host, sep, port = t.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"broker {text!r} is not host:port")
    return host, int(port)


def digest(*parts: str) -> str:
    """A short stable hash of text parts (message ids, record content digests)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def zulu(value: str) -> str:
    """An ISO 8601 date-time as pyicat-plus writes it (UTC as ``Z``)."""
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    text = dt.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def instant(value: str) -> datetime:
    """An ISO 8601 date-time as an aware datetime (naive ones taken as UTC); ValueError if it is not one."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# -- names and values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One ESRF name a key is sent under, with its rank and the conversion into the ESRF unit."""

    name: str
    rank: int  # 0 exact, 1 close; lower wins when two keys give one name
    kind: str
    scale: float = 1.0
    offset: float = 0.0


class Names:
    """ESRF names of mmCAT keys (scheme ``esrf_icat``), with the unit conversion each needs."""

    def __init__(self, onto: Any, unmapped: str) -> None:
        self.onto = onto
        self.unmapped = unmapped
        self._cache: dict[tuple[str, str | None], tuple[Target, ...]] = {}

    def targets(self, key: str, unit: str | None) -> tuple[Target, ...]:
        hit = self._cache.get((key, unit))
        if hit is None:
            hit = self._cache[(key, unit)] = self._targets(key, unit)
        return hit

    def _targets(self, key: str, unit: str | None) -> tuple[Target, ...]:
        try:
            item, selector = self.onto.lookup(key)
        except MxcatError:
            return (Target(key, 2, "string"),) if self.unmapped == "send" else ()
        out: list[Target] = []
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
                out.append(Target(m.target, rank, item.kind, scale, offset))
        if not out and self.unmapped == "send":
            out.append(Target(key, 2, item.kind))
        return tuple(out)


def value_text(value: Any, t: Target) -> str:
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
            return zulu(str(value))
        except ValueError:
            return str(value)
    return str(value)


# -- messages ------------------------------------------------------------------------------------


class UnsafeText(ValueError):
    """A text for a message holds a character XML 1.0 cannot carry; ``field`` names where it was going."""

    def __init__(self, field: str, text: str, char: str) -> None:
        shown = text if len(text) <= 60 else text[:57] + "..."
        super().__init__(f"{field} {shown!r} holds U+{ord(char):04X}, which XML 1.0 (and a STOMP frame without content-length) "
                         "cannot carry")
        self.field = field
        self.char = char


def check_text(field: str, text: str) -> str:
    """*text* unchanged, or :class:`UnsafeText` naming *field* when it holds a character XML 1.0 cannot carry."""
    bad = BAD_XML.search(text)
    if bad is not None:
        raise UnsafeText(field, text, bad.group())
    return text


def dataset_xml(*, investigation: str, instrument: str, name: str, location: str, start: str, end: str, sample: str,
                parameters: Mapping[str, str]) -> str:
    """The ``<tns:dataset>`` message of ESRF's ICAT+ ingester (element order of its XSD).

    Raises :class:`UnsafeText` naming the first field that holds a character XML 1.0 cannot carry.
    """
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f'<tns:dataset xmlns:tns="{NAMESPACE}" complete="true">']
    for tag, text in (("investigation", investigation), ("instrument", instrument), ("name", name), ("location", location),
                      ("startDate", start), ("endDate", end)):
        parts.append(f"<tns:{tag}>{escape(check_text(tag, text))}</tns:{tag}>")
    parts.append(f"<tns:sample><tns:name>{escape(check_text('sample name', sample))}</tns:name></tns:sample>")
    for pname, value in parameters.items():
        check_text("parameter name", pname)
        parts.append(f"<tns:parameter><tns:name>{escape(pname)}</tns:name>"
                     f"<tns:value>{escape(check_text(f'parameter {pname}', value))}</tns:value></tns:parameter>")
    parts.append("</tns:dataset>")
    return "".join(parts)


def update_json(*, proposal: str, beamline: str, paths: Sequence[str], name: str, value: str) -> str:
    """The ``icatUpdateDatasetMetadata`` message (the JSON pyicat-plus's ``send_update_metadata`` writes).

    Raises :class:`UnsafeText` like :func:`dataset_xml` (JSON would escape the character, but ICAT+
    would store it in a catalogue that serves XML).
    """
    fields = [("proposal", proposal), ("beamline", beamline), ("metadataName", name), ("metadataValue", value)]
    for what, text in fields + [("datasetPaths", p) for p in paths]:
        check_text(what, text)
    return json.dumps({"proposal": proposal, "beamline": beamline, "datasetPaths": list(paths), "metadataName": name,
                       "metadataValue": value})


@dataclass(slots=True)
class Message:
    """A STOMP message; its id is stable across retries of the same delivery (destination, body, *salt*).

    A body holding NUL raises :class:`UnsafeText`: such a frame would end at the NUL on the broker.
    """

    destination: str
    body: str
    salt: str = ""
    message_id: str = ""

    def __post_init__(self) -> None:
        if "\x00" in self.body:
            raise UnsafeText("message body", self.body, "\x00")
        self.message_id = digest(self.destination, self.body, self.salt)


# -- the broker link -----------------------------------------------------------------------------


class LinkDown(Exception):
    """The broker cannot be used now; ``confirmed`` holds the indexes of the messages it confirmed before."""

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


class Link:
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
            raise LinkDown(f"no broker answered ({', '.join(f'{h}:{p}' for h, p in self.brokers)})") from err
        if not listener.wait(lambda: listener.connected, self.timeout):
            _close(conn)
            if listener.error is not None:
                refused = any(w in listener.error.lower() for w in _REFUSED)
                raise LinkDown(("the broker refused the credentials: " if refused else "the broker refused the connection: ")
                                + listener.error)
            if listener.lost:
                raise LinkDown("the broker closed the connection before CONNECTED")
            raise LinkDown(f"no CONNECTED frame within {self.timeout:g} s")
        self.conn, self.listener = conn, listener
        host, port = conn.transport.current_host_and_port
        self.where = f"{host}:{port}"
        _send_timeout(conn, self.timeout)
        log.info("sink %s: connected to STOMP broker %s%s", self.sink, self.where, f" as {self.login}" if self.login else "")

    def send_all(self, messages: Sequence[Message]) -> set[int]:
        """Send every message with a receipt; return when all are confirmed, else raise LinkDown with those that were."""
        from stomp.exception import StompException

        self.ensure()
        listener = self.listener
        if listener is None or self.conn is None:
            raise LinkDown("not connected")
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
            raise LinkDown(f"connection to {self.where or 'the broker'} lost while sending ({type(err).__name__})", confirmed) from err
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
            raise LinkDown(f"{where} answered with an error: {error}", confirmed)
        if lost:
            raise LinkDown(f"connection to {where} lost before {len(ids) - len(confirmed)} receipt(s)", confirmed)
        raise LinkDown(f"{len(ids) - len(confirmed)} receipt(s) from {where} missing after {self.timeout:g} s", confirmed)

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
