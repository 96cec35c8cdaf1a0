"""Test helpers for the STOMP broker behind the ICAT+ sink: reachability, a consumer, queue cleanup, restarts.

The broker is the RabbitMQ of this machine with its STOMP plugin (``rabbitmq-plugins enable
rabbitmq_stomp``), on ``$MXCAT_TEST_STOMP_HOST:$MXCAT_TEST_STOMP_PORT`` (default 127.0.0.1:61613,
guest/guest). RabbitMQ maps the STOMP destination ``/queue/<name>`` to the durable queue ``<name>``;
queues are deleted and the broker is stopped and started with ``rabbitmqctl``. :class:`FrameRecorder`
is a test fixture, not a broker: a socket that answers just enough STOMP (CONNECTED, RECEIPT) to
record the exact frames a client writes (STOMP 1.1, stomp.github.io). Like RabbitMQ, it ends a frame
without ``content-length`` at its first NUL (the frame before it is taken, and confirmed if it asked
for a receipt) and answers what follows, which is no STOMP command, with an ERROR frame ("Bad
command") before it closes the connection. It does not store, route or deliver messages, check
credentials, or imitate heartbeats and transactions.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HOST = os.environ.get("MXCAT_TEST_STOMP_HOST", "127.0.0.1")
PORT = int(os.environ.get("MXCAT_TEST_STOMP_PORT", "61613"))
LOGIN = os.environ.get("MXCAT_TEST_STOMP_LOGIN", "guest")
PASSCODE = os.environ.get("MXCAT_TEST_STOMP_PASSCODE", "guest")
AMQP_PORT = 5672


def broker_problem(host: str = HOST, port: int = PORT, timeout: float = 2.0) -> str | None:
    """None when a STOMP broker answers CONNECT with CONNECTED, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"CONNECT\naccept-version:1.1\nhost:/\nlogin:{LOGIN}\npasscode:{PASSCODE}\n\n\x00".encode())
            head = s.recv(64)
    except OSError as err:
        return f"no STOMP broker on {host}:{port} ({err.strerror or type(err).__name__}); enable it: rabbitmq-plugins enable rabbitmq_stomp"
    if not head.startswith(b"CONNECTED"):
        return f"{host}:{port} answered {head[:40]!r}, not CONNECTED"
    return None


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return True
        time.sleep(0.1)
    return False


# -- rabbitmqctl ------------------------------------------------------------------------------------


def have_rabbitmqctl() -> bool:
    if shutil.which("rabbitmqctl") is None or HOST not in ("127.0.0.1", "localhost"):
        return False
    return rabbitmqctl("list_queues", "-q", "name", timeout=15).returncode == 0


def rabbitmqctl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False)


def queue_depths() -> dict[str, int]:
    out = rabbitmqctl("list_queues", "-q", "name", "messages").stdout
    depths = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            depths[parts[0]] = int(parts[1])
    return depths


def delete_queues(names: Iterable[str]) -> None:
    """Delete RabbitMQ queues, all at once (one rabbitmqctl each, in parallel)."""
    if shutil.which("rabbitmqctl") is None:
        return
    procs = [subprocess.Popen(["rabbitmqctl", "delete_queue", n], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in names]
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def ensure_up(timeout: float = 40.0) -> None:
    """Start the RabbitMQ application unless its STOMP and AMQP ports answer; wait until they do."""
    if port_open(PORT) and port_open(AMQP_PORT):
        return
    rabbitmqctl("start_app", timeout=timeout)
    if not (wait_port(PORT, timeout) and wait_port(AMQP_PORT, timeout)):
        raise RuntimeError("RabbitMQ did not come back on 61613 and 5672")


def stop_broker() -> None:
    r = rabbitmqctl("stop_app")
    if r.returncode != 0:
        raise RuntimeError(f"rabbitmqctl stop_app failed: {r.stderr.strip()}")
    deadline = time.monotonic() + 15
    while port_open(PORT) and time.monotonic() < deadline:
        time.sleep(0.05)


def close_connections(reason: str = "mxcat test") -> None:
    rabbitmqctl("close_all_connections", reason)


EXPIRY_POLICY = "mxcat-test-expiry"


def expire_unused_test_queues(pattern: str = "^mxcat-test-", ms: int = 60_000) -> bool:
    """Have RabbitMQ delete test queues unused for *ms* (a queue policy, set once; idempotent)."""
    r = rabbitmqctl("set_policy", "--apply-to", "queues", EXPIRY_POLICY, pattern, f'{{"expires":{ms}}}')
    return r.returncode == 0


class QueueNames:
    """Unique queue names for one test module, named so that the expiry policy removes them once unused.

    Deleting each queue with rabbitmqctl costs an Erlang VM start (about 0.4 s of CPU); the broker's
    own ``expires`` policy removes them a minute after their last consumer left instead.
    """

    def __init__(self, prefix: str = "mxcat-test") -> None:
        self.prefix = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []
        self.expiring = have_rabbitmqctl() and expire_unused_test_queues()

    def new(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}-{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        """Delete now what the policy would not remove (no rabbitmqctl policy: delete each)."""
        if not self.expiring:
            delete_queues(self.names)
        self.names.clear()


# -- a consumer -------------------------------------------------------------------------------------


@dataclass
class Delivered:
    headers: dict[str, str]
    body: str


@dataclass
class Consumer:
    """A stomp.py subscriber collecting every message of one destination."""

    destination: str
    host: str = HOST
    port: int = PORT
    messages: list[Delivered] = field(default_factory=list)

    def __post_init__(self) -> None:
        import stomp

        self._cond = threading.Condition()
        self.conn = stomp.Connection11([(self.host, self.port)], prefer_localhost=False, try_loopback_connect=False, timeout=5,
                                       reconnect_attempts_max=1)
        self.conn.set_listener("test", self)
        self.conn.connect(LOGIN, PASSCODE, wait=True)
        self.conn.subscribe(self.destination, id="1", ack="auto")

    def on_message(self, frame: Any) -> None:
        with self._cond:
            self.messages.append(Delivered(dict(frame.headers), frame.body))
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> list[Delivered]:
        """At least *n* messages (fails the caller's assertion later when they do not come)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self.messages)

    def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> list[Delivered]:
        """Everything delivered, once no new message has come for *quiet* seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = -1
            while seen != len(self.messages) and time.monotonic() < deadline:
                seen = len(self.messages)
                self._cond.wait(quiet)
            return list(self.messages)

    def close(self) -> None:
        try:
            self.conn.disconnect()
        except Exception:  # noqa: BLE001 - the broker may be gone already
            pass

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a frame recorder -------------------------------------------------------------------------------


@dataclass
class Frame:
    command: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


CLIENT_COMMANDS = frozenset({"CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT",
                             "DISCONNECT"})


class FrameRecorder:
    """Records the STOMP frames clients send; answers CONNECT/STOMP with CONNECTED and receipts with RECEIPT.

    ``receipts=False`` makes a broker that takes every frame and never confirms one. A frame whose
    command is no STOMP client command (the tail of a body cut at a NUL) is answered with ERROR, as
    RabbitMQ does, and ends the connection; it is kept in :attr:`bad`, not in :attr:`frames`.
    """

    def __init__(self, receipts: bool = True) -> None:
        self.receipts = receipts
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.frames: list[Frame] = []
        self.bad: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\x00" in buf:
                    raw, buf = buf.split(b"\x00", 1)
                    raw = raw.lstrip(b"\r\n")
                    if not raw:
                        continue
                    head, _, body = raw.partition(b"\n\n")
                    lines = head.decode(errors="replace").split("\n")
                    if lines[0].strip() not in CLIENT_COMMANDS:
                        self.bad.append(raw)
                        conn.sendall(b"ERROR\nmessage:Bad command\ncontent-type:text/plain\n\nCould not interpret command\x00")
                        return
                    headers = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
                    frame = Frame(lines[0].strip(), headers, body)  # type: ignore[arg-type]
                    self.frames.append(frame)
                    if frame.command in ("CONNECT", "STOMP"):
                        conn.sendall(b"CONNECTED\nversion:1.1\nserver:mxcat-test-recorder\n\n\x00")
                    elif frame.header("receipt") is not None and self.receipts:
                        conn.sendall(f"RECEIPT\nreceipt-id:{frame.header('receipt')}\n\n\x00".encode())
                    if frame.command == "DISCONNECT":
                        return

    def sent(self) -> list[Frame]:
        return [f for f in self.frames if f.command == "SEND"]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)
