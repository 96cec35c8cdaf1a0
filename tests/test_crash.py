"""Crash safety with real processes and real signals: kill -9 at random moments, restart, nothing lost.

An ingesting process prints ``ACK n`` after each ingest returns; a delivering process moves the
outbox to the embedded catalogue. Both are killed with SIGKILL at random moments, repeatedly, and
started again. Afterwards one clean delivery run must leave every acknowledged record in the
catalogue exactly once, nothing in the outbox undelivered, and nothing in the catalogue that was
never ingested.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mxcat.records import Record
from tests.helpers.crash_worker import batch

WORKER = Path(__file__).parent / "helpers" / "crash_worker.py"
PER = 20


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])


def _expected_ids(n: int, onto) -> set[str]:
    from mxcat.ingest import prepare

    p = prepare(batch(n, PER), onto)
    return {r.id for r in p.records} | {t.id for t in p.tables}


@pytest.mark.slow
def test_kill_minus_nine_loses_nothing_and_stores_nothing_twice(tmp_path, onto):
    env = dict(os.environ, MXCAT_DATA_DIR=str(tmp_path / "data"), MXCAT_DELIVERY_LEASE="0.5", MXCAT_DELIVERY_BATCH_SIZE="37",
               XDG_CONFIG_HOME=str(tmp_path / "cfg"), PYTHONPATH=str(Path(__file__).parents[1]))
    env.pop("MXCAT_CONFIG", None)
    rng = random.Random(1234)
    acked: set[int] = set()
    started = 0
    kills = 0
    for _round in range(10):
        ingest = _spawn(["ingest", str(started), str(PER)], env)
        deliver = _spawn(["deliver"], env)
        time.sleep(rng.uniform(0.4, 1.2))
        victims = rng.choice([[ingest], [deliver], [ingest, deliver]])
        for p in victims:
            p.send_signal(signal.SIGKILL)
            kills += 1
        for p in (ingest, deliver):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        out = ingest.stdout.read()
        err = ingest.stderr.read() + deliver.stderr.read()
        assert "Traceback" not in err, err
        got = [int(line.split()[1]) for line in out.splitlines() if line.startswith("ACK ")]
        acked.update(got)
        started = (max(got) + 1) if got else started
        started += 1  # the batch being ingested at the kill may or may not be stored; never reuse its number
    assert len(acked) > 10, "the ingest process should have acknowledged batches"
    assert kills >= 10

    time.sleep(0.6)  # let the leases of killed deliverers expire
    # envelopes whose delivery failed (a catalogue locked by a process that was then killed) wait with a
    # backoff; an operator's retry makes them due now
    retry = subprocess.run([sys.executable, "-m", "mxcat", "outbox", "retry"], env=env, capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).parents[1])
    assert retry.returncode == 0, retry.stderr
    final = subprocess.run([sys.executable, "-m", "mxcat", "deliver", "--once"], env=env, capture_output=True, text=True, timeout=300,
                           cwd=Path(__file__).parents[1])
    assert final.returncode == 0, final.stderr

    outbox = sqlite3.connect(tmp_path / "data" / "outbox.sqlite")
    open_states = outbox.execute("SELECT state, COUNT(*), MAX(error) FROM deliveries WHERE state != 'DONE' GROUP BY state").fetchall()
    assert open_states == [], final.stdout
    cat = sqlite3.connect(tmp_path / "data" / "catalogue.sqlite")
    stored = {r for (r,) in cat.execute("SELECT record_id FROM records")} | {t for (t,) in cat.execute("SELECT table_id FROM tables")}
    n_rows = cat.execute("SELECT COUNT(*) FROM records").fetchone()[0] + cat.execute("SELECT COUNT(*) FROM tables").fetchone()[0]
    assert n_rows == len(stored)  # nothing stored twice
    expected_acked = set().union(*(_expected_ids(n, onto) for n in acked))
    assert expected_acked <= stored, f"{len(expected_acked - stored)} acknowledged records lost"
    all_possible = set().union(*(_expected_ids(n, onto) for n in range(started + 1)))
    assert stored <= all_possible  # nothing that was never ingested
    entries = outbox.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    assert entries == len(stored)


def test_records_have_the_ids_the_worker_expects(onto):
    ids = _expected_ids(3, onto)
    assert len(ids) == PER + 1
    assert all(isinstance(i, str) for i in ids)
    assert Record  # the worker builds records through the public API only
