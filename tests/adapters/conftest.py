"""Helpers for adapter tests: corpus files, validation of parsed output, and mutation fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import corpus_dir


@pytest.fixture(scope="session")
def corpus_file():
    """corpus_file("xds/CORRECT_xds-2020jan31_esrf.LP") -> Path, skipping when the corpus is absent."""

    def get(rel: str) -> Path:
        c = corpus_dir()
        if c is None:
            pytest.skip("the shared corpus (../shared/corpus or $MXCAT_CORPUS) is not present")
        p = c / rel
        if not p.is_file():
            pytest.skip(f"corpus file {rel} is not present")
        return p

    return get


def values_of(parsed, onto, label=None):
    """{canonical key: validated value} of one result (the first, or the one with *label*); asserts nothing was rejected."""
    from mxcat.ingest import prepare
    from mxcat.records import Batch, Provenance, Subject

    res = [r for r in parsed.results if label is None or r.label == label]
    assert res, f"no result with label {label!r}: {[r.label for r in parsed.results]}"
    r = res[0]
    subject = Subject(facility="T", beamline="B", proposal="p", session="s", sample="x", dataset="d")
    if r.level == "processing":
        subject = subject.child(processing="p")
    b = Batch(subject, Provenance(run="t"))
    b.observations.extend(r.values)
    for cat, rows in r.tables:
        b.add_table(cat, rows)
    out = prepare(b, onto)
    assert out.rejected == [], [str(x) for x in out.rejected]
    return {rec.key: rec.value for rec in out.records}, {t.category: t for t in out.tables}


def mutations(data: bytes, seed: int, n: int = 20) -> list[bytes]:
    """Truncations, byte flips, deleted and duplicated lines of a real file (deterministic for a seed)."""
    import random

    rng = random.Random(seed)
    out = [data[: rng.randrange(0, max(1, len(data)))] for _ in range(n // 4)]
    lines = data.splitlines(keepends=True)
    for _ in range(n // 4):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        out.append(bytes(b))
    for _ in range(n // 4):
        if lines:
            ls = list(lines)
            del ls[rng.randrange(len(ls))]
            out.append(b"".join(ls))
    for _ in range(n - len(out)):
        if lines:
            ls = list(lines)
            i = rng.randrange(len(ls))
            ls.insert(i, ls[rng.randrange(len(ls))])
            out.append(b"".join(ls))
    return out


def fuzz_adapter(adapter, data: bytes, path, onto, *, seeds, n: int = 20, nonempty: bool = False) -> None:
    """Every mutation of *data* (written to *path*) parses to values that validate (and, with
    *nonempty*, to at least one result), or raises this adapter's ParseError naming the file; never
    any other exception."""
    from mxcat.errors import ParseError

    for seed in seeds:
        for blob in mutations(data, seed, n):
            path.write_bytes(blob)
            try:
                parsed = adapter.parse(path)
            except ParseError as err:
                assert err.adapter == adapter.name and err.path == str(path), (err.adapter, err.path)
                continue
            assert parsed.results or not nonempty, "parsed without error but produced no result"
            for r in parsed.results:
                values_of(parsed, onto, r.label)
