"""``memory`` and ``flaky`` sinks: real in-process catalogues for tests of the outbox and delivery.

``memory`` upserts envelopes into dictionaries keyed by their ids and counts every put, so tests
can tell "stored once" from "stored twice". ``flaky`` is a memory sink that fails on purpose: the
first ``fail_first`` puts, then with probability ``failure_rate`` (seeded), raise SinkUnavailable;
envelopes whose key is in ``reject_keys`` are refused permanently.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from mxcat.errors import SinkUnavailable
from mxcat.sinks import Envelope, Health, Receipt


class MemorySink:
    """Stores envelopes in memory with upsert semantics."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.records: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, dict[str, Any]] = {}
        self.puts = 0
        self.applied = 0
        self.order: list[str] = []

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        self.puts += 1
        receipt = Receipt()
        for env in envelopes:
            store = self.tables if env["type"] == "table" else self.records
            store[env["id"]] = dict(env)
            self.applied += 1
            self.order.append(env["id"])
            receipt.stored.append(env["id"])
        return receipt

    def health(self) -> Health:
        return Health(True, f"{len(self.records)} records, {len(self.tables)} tables")

    def close(self) -> None:
        pass


class FlakySink(MemorySink):
    """A memory sink that fails on purpose, for tests of retries and dead letters."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        fail_first: int = 0
        failure_rate: float = 0.0
        seed: int = 0
        reject_keys: list[str] = []

    def __init__(self, name: str = "flaky", *, fail_first: int = 0, failure_rate: float = 0.0, seed: int = 0,
                 reject_keys: Sequence[str] = ()) -> None:
        super().__init__(name)
        self.fail_first = fail_first
        self.failure_rate = failure_rate
        self.reject_keys = set(reject_keys)
        self.calls = 0
        self._rng = random.Random(seed)
        self.up = True

    def put(self, envelopes: Sequence[Envelope]) -> Receipt:
        self.calls += 1
        if not self.up or self.calls <= self.fail_first or self._rng.random() < self.failure_rate:
            raise SinkUnavailable("simulated outage", sink=self.name)
        good = [e for e in envelopes if e.get("key") not in self.reject_keys]
        receipt = super().put(good)
        for e in envelopes:
            if e.get("key") in self.reject_keys:
                receipt.rejected[e["id"]] = f"key {e['key']} refused by the flaky sink"
        return receipt

    def health(self) -> Health:
        return Health(self.up, "up" if self.up else "down")
