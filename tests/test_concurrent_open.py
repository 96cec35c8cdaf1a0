"""Several processes opening a new outbox and catalogue at the same moment all succeed, also while another
process holds the database lock (as after a kill -9, when the next opener recovers the WAL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CODE = (
    "import sys; from mxcat.outbox import Outbox; from mxcat.sinks.embedded import EmbeddedSink;"
    "Outbox(sys.argv[1]).close(); EmbeddedSink('e', path=sys.argv[2]).close()"
)


def test_simultaneous_first_opens(tmp_path):
    for round_ in range(3):
        outbox, cat = tmp_path / f"o{round_}.sqlite", tmp_path / f"c{round_}.sqlite"
        procs = [subprocess.Popen([sys.executable, "-c", CODE, str(outbox), str(cat)], stderr=subprocess.PIPE, text=True,
                                  cwd=Path(__file__).resolve().parents[1]) for _ in range(6)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors


HOLD = (
    "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); db.execute('PRAGMA journal_mode=WAL');"
    "db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(1.0); db.execute('COMMIT')"
)


def test_opening_waits_for_a_held_lock(tmp_path):
    outbox = tmp_path / "o.sqlite"
    from mxcat.outbox import Outbox

    Outbox(outbox).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(outbox)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    ob = Outbox(outbox)  # waits for the lock instead of failing with "database is locked"
    ob.close()
    holder.wait(timeout=30)
