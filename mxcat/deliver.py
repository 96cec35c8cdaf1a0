"""Deliver envelopes from the outbox to the sinks: batches, retries with backoff, dead letters.

One cycle per sink: claim a batch (subject order kept), ``put`` it, then mark what the sink stored
DONE and what it refused DEAD with its reason. ``SinkUnavailable`` (and any unexpected exception,
logged once per kind) sends the batch back to PENDING with exponential backoff and full jitter, so
a dead catalogue means records wait in the outbox. ``SinkRejected`` for a whole batch is narrowed
down by splitting the batch until the refused envelopes are alone; only they go DEAD.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from mxcat.errors import SinkRejected, SinkUnavailable
from mxcat.outbox import Claimed, Outbox
from mxcat.sinks import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``min(maximum, initial * factor**(attempt-1))`` scaled by [1-jitter, 1]."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        r = (rng or random).random()
        return base * (1.0 - self.jitter * r)


@dataclass
class Stats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)

    def __iadd__(self, other: Stats) -> Stats:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        self.errors += other.errors
        return self


class Deliverer:
    """Moves envelopes from one outbox to a set of sinks."""

    def __init__(
        self,
        outbox: Outbox,
        sinks: Mapping[str, Sink],
        *,
        batch_size: int = 500,
        lease: float = 60.0,
        backoff: Backoff | None = None,
        seed: int | None = None,
    ) -> None:
        self.outbox = outbox
        self.sinks = dict(sinks)
        self.batch_size = batch_size
        self.lease = lease
        self.backoff = backoff or Backoff()
        self._rng = random.Random(seed)
        self._logged: set[str] = set()
        for name in self.sinks:
            outbox.recover(name)

    def cycle(self, name: str) -> Stats:
        """Claim and deliver one batch to sink *name*."""
        claimed = self.outbox.claim(name, self.batch_size, self.lease)
        stats = Stats()
        if claimed:
            self._deliver(name, self.sinks[name], claimed, stats)
        return stats

    def _deliver(self, name: str, sink: Sink, claimed: list[Claimed], stats: Stats) -> None:
        try:
            receipt = sink.put([c.envelope for c in claimed])
        except SinkUnavailable as err:
            self._later(name, claimed, f"unavailable: {err.reason}", stats)
            return
        except SinkRejected as err:
            if len(claimed) == 1:
                self.outbox.dead(name, {claimed[0].seq: err.reason})
                stats.dead += 1
                return
            half = len(claimed) // 2
            self._deliver(name, sink, claimed[:half], stats)
            self._deliver(name, sink, claimed[half:], stats)
            return
        except Exception as err:  # noqa: BLE001 - a sink bug must not lose records: keep them and say so
            kind = f"{type(err).__name__}"
            if kind not in self._logged:
                self._logged.add(kind)
                log.exception("sink %s failed unexpectedly; records stay in the outbox", name)
            self._later(name, claimed, f"unexpected {kind}: {err}", stats)
            return
        stored = set(receipt.stored)
        done = [c.seq for c in claimed if c.id in stored]
        dead = {c.seq: receipt.rejected[c.id] for c in claimed if c.id in receipt.rejected and c.id not in stored}
        missing = [c for c in claimed if c.id not in stored and c.id not in receipt.rejected]
        if done:
            self.outbox.done(name, done)
        if dead:
            self.outbox.dead(name, dead)
        if missing:
            reasons = sorted({receipt.waiting[c.id] for c in missing if c.id in receipt.waiting})
            why = "; ".join(reasons) if reasons else "the sink did not acknowledge these envelopes"
            self._later(name, missing, why, stats)
        stats.delivered += len(done)
        stats.dead += len(dead)

    def _later(self, name: str, claimed: list[Claimed], error: str, stats: Stats) -> None:
        attempt = max(c.attempts for c in claimed)
        next_at = time.time() + self.backoff.delay(attempt, self._rng)
        self.outbox.retry_later(name, [c.seq for c in claimed], next_at, error)
        stats.retried += len(claimed)
        stats.errors.append(f"{name}: {error}")

    def drain(self, timeout: float | None = None) -> Stats:
        """Deliver what can be delivered now, then return.

        A sink that fails during the drain is left alone for the rest of it (its envelopes wait
        with their backoff), so a dead catalogue cannot keep the caller busy.
        """
        total = Stats()
        deadline = None if timeout is None else time.monotonic() + timeout
        active = list(self.sinks)
        while active:
            for name in list(active):
                s = self.cycle(name)
                total += s
                if s.retried or (s.delivered + s.dead) == 0:
                    active.remove(name)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return total

    def run(self, stop: threading.Event, idle: float = 0.5) -> Stats:
        """Deliver until *stop* is set, sleeping *idle* seconds when there is nothing to do."""
        total = Stats()
        while not stop.is_set():
            moved = 0
            for name in self.sinks:
                s = self.cycle(name)
                total += s
                moved += s.delivered + s.dead
            if moved == 0:
                stop.wait(idle)
        return total
