"""The outbox state machine with real SQLite and the shipped memory/flaky sinks."""

from __future__ import annotations

import time

import pytest

from mxcat.deliver import Backoff, Deliverer
from mxcat.errors import SinkRejected
from mxcat.outbox import Outbox
from mxcat.records import Provenance, Record, Subject
from mxcat.sinks.memory import FlakySink, MemorySink


def envs(subject: Subject, n: int, run: str = "r1", key_prefix: str = "mmcat_collection.exposure_time") -> list[dict]:
    return [Record(subject.child(image_range=f"{i}"), key_prefix, 0.01 * (i + 1), "seconds", Provenance(run=run)).to_envelope()
            for i in range(n)]


@pytest.fixture()
def box(tmp_path):
    with Outbox(tmp_path / "outbox.sqlite") as ob:
        yield ob


def states(box, sink):
    return {r.state: r.count for r in box.status() if r.sink == sink}


def test_put_is_durable_before_any_delivery(tmp_path, dataset):
    path = tmp_path / "o.sqlite"
    with Outbox(path) as ob:
        res = ob.put(envs(dataset, 5), ["a", "b"])
        assert (res.new, res.changed, res.unchanged) == (5, 0, 0)
    with Outbox(path) as ob:  # a new process sees them
        assert states(ob, "a") == {"PENDING": 5} and states(ob, "b") == {"PENDING": 5}
        assert ob.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_same_envelopes_twice_change_nothing_and_updates_are_redelivered(box, dataset):
    e = envs(dataset, 3)
    box.put(e, ["m"])
    sink = MemorySink("m")
    Deliverer(box, {"m": sink}).drain()
    assert box.put(e, ["m"]).unchanged == 3
    assert states(box, "m") == {"DONE": 3}
    changed = [dict(e[0], value=0.5)]
    assert box.put(changed, ["m"]).changed == 1
    assert states(box, "m") == {"DONE": 2, "PENDING": 1}
    Deliverer(box, {"m": sink}).drain()
    assert sink.records[e[0]["id"]]["value"] == 0.5 and len(sink.records) == 3


def test_pending_sending_done(box, dataset):
    box.put(envs(dataset, 4), ["m"])
    claimed = box.claim("m", 10)
    assert len(claimed) == 4 and states(box, "m") == {"SENDING": 4}
    assert [c.attempts for c in claimed] == [1, 1, 1, 1]
    box.done("m", [c.seq for c in claimed])
    assert states(box, "m") == {"DONE": 4}


def test_unavailable_sink_keeps_records_waiting_with_backoff(box, dataset):
    box.put(envs(dataset, 3), ["f"])
    sink = FlakySink("f", fail_first=2)
    d = Deliverer(box, {"f": sink}, backoff=Backoff(initial=0.05, maximum=0.2, jitter=0.0))
    s = d.drain()
    assert s.retried == 3 and s.delivered == 0 and sink.records == {}
    row = box.db.execute("SELECT state, attempts, next_at, error FROM deliveries").fetchone()
    assert row[0] == "PENDING" and row[1] == 1 and row[2] > time.time() and "unavailable" in row[3]
    assert d.drain().delivered == 0  # still backing off
    time.sleep(0.06)
    d.drain()  # second failure, longer backoff
    time.sleep(0.12)
    s = d.drain()
    assert s.delivered == 3 and len(sink.records) == 3
    assert box.db.execute("SELECT MAX(attempts) FROM deliveries").fetchone()[0] == 3


def test_backoff_grows_and_is_capped():
    b = Backoff(initial=1, factor=2, maximum=10, jitter=0)
    assert [b.delay(a) for a in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]
    j = Backoff(initial=1, factor=2, maximum=10, jitter=0.5)
    assert all(2.0 <= j.delay(3) <= 4.0 for _ in range(50))


def test_permanent_rejection_goes_dead_with_the_reason(box, dataset):
    good = envs(dataset, 3)
    bad = envs(dataset.child(sample="other"), 1, key_prefix="mmcat_collection.flux")
    box.put(good + bad, ["f"])
    sink = FlakySink("f", reject_keys=["mmcat_collection.flux"])
    s = Deliverer(box, {"f": sink}).drain()
    assert s.delivered == 3 and s.dead == 1
    (row,) = box.dead_letters("f")
    assert "refused by the flaky sink" in row[3]
    assert box.retry("f", dead=True) == 1 and states(box, "f")["PENDING"] == 1


class RejectsBatchesWith(MemorySink):
    """Refuses any batch that contains the poisoned key (as a catalogue refusing a whole transaction)."""

    def put(self, envelopes):
        if any(e["key"] == "mmcat_collection.flux" for e in envelopes):
            raise SinkRejected("transaction refused: bad value", sink=self.name)
        return super().put(envelopes)


def test_whole_batch_rejection_is_narrowed_to_the_culprit(box, dataset):
    mixed = envs(dataset, 7)
    poison = envs(dataset.child(sample="s2"), 1, key_prefix="mmcat_collection.flux")
    box.put(mixed[:3] + poison + mixed[3:], ["r"])
    sink = RejectsBatchesWith("r")
    s = Deliverer(box, {"r": sink}, batch_size=100).drain()
    assert s.delivered == 7 and s.dead == 1
    assert set(sink.records) == {e["id"] for e in mixed}


def test_order_per_subject_is_kept_across_failures(box, dataset):
    subj = dataset  # three records of one subject, then one of another
    first = Record(subj, "mmcat_collection.exposure_time", 0.1, "seconds", Provenance(run="a")).to_envelope()
    second = Record(subj, "mmcat_collection.flux", 1e12, "photons_per_second", Provenance(run="a")).to_envelope()
    other = Record(dataset.child(sample="s9", dataset="d9"), "mmcat_collection.flux", 2e12, "photons_per_second", Provenance(run="a")).to_envelope()
    box.put([first, second, other], ["m"])
    c = box.claim("m", 1)
    assert [x.id for x in c] == [first["id"]]
    box.retry_later("m", [c[0].seq], time.time() + 60, "down")
    # the subject's second record must wait behind the first; the other subject goes ahead
    assert [x.id for x in box.claim("m", 10)] == [other["id"]]


def test_expired_leases_come_back(box, dataset):
    box.put(envs(dataset, 2), ["m"])
    box.claim("m", 10, lease=0.01)
    assert box.claim("m", 10) == []
    time.sleep(0.02)
    assert box.recover("m") == 2
    assert len(box.claim("m", 10)) == 2


def test_purge_removes_only_old_done(box, dataset):
    box.put(envs(dataset, 3), ["m", "n"])
    Deliverer(box, {"m": MemorySink("m")}).drain()
    assert box.purge(0) == 0  # sink n still waits
    Deliverer(box, {"n": MemorySink("n")}).drain()
    assert box.purge(3600) == 0  # not old enough
    assert box.purge(0) == 3
    assert box.counts()["entries"] == 0


def test_sink_bug_keeps_records(box, dataset):
    class Broken(MemorySink):
        def put(self, envelopes):
            raise KeyError("oops")

    box.put(envs(dataset, 2), ["b"])
    s = Deliverer(box, {"b": Broken("b")}).drain()
    assert s.retried == 2 and states(box, "b") == {"PENDING": 2}


def test_envelopes_a_sink_holds_back_wait_with_its_reason(box, dataset):
    from mxcat.sinks import Receipt

    class Holding(MemorySink):
        def put(self, envelopes):
            first, *rest = envelopes
            super().put(rest)
            return Receipt(stored=[e["id"] for e in rest], waiting={first["id"]: "dataset not created yet: owner group refused"})

    box.put(envs(dataset, 3), ["h"])
    s = Deliverer(box, {"h": Holding("h")}, backoff=Backoff(initial=0.05, maximum=0.2, jitter=0.0)).drain()
    assert s.delivered == 2 and s.retried == 1
    assert box.db.execute("SELECT error FROM deliveries WHERE state='PENDING'").fetchone()[0] == \
        "dataset not created yet: owner group refused"
