"""A real MongoDB wire-protocol server for the tests: nx-27017 (from PyPI) in a subprocess, or a
real MongoDB named by $MXCAT_TEST_MONGODB_URI.

nx-27017 stores its data in an SQLite file, so the server can be stopped and started again with
its data, which the restart tests rely on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NxServer:
    def __init__(self, db_file: Path, port: int | None = None) -> None:
        self.db_file = db_file
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 20.0) -> None:
        exe = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
        self.log = self.db_file.with_suffix(".log")
        with open(self.log, "ab") as log:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen([exe, "--db", str(self.db_file), "-p", str(self.port), "--host", "127.0.0.1"],
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nx-27017 exited: {self.log.read_text(errors='replace')[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nx-27017 did not start listening")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def external_uri() -> str | None:
    return os.environ.get("MXCAT_TEST_MONGODB_URI")
