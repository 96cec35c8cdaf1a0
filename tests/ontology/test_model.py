"""DDL2 range semantics and their normalisation (mmcif_ddl.dic, category ITEM_RANGE)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from mxcat.ontology.model import RangeSet


def test_equal_bounds_admit_that_value_only():
    r = RangeSet.from_rows([(0.0, 0.0)])
    assert r.contains(0.0)
    assert not r.contains(1e-9)


def test_other_rows_are_open_intervals():
    r = RangeSet.from_rows([(0.0, 1.0)])
    assert r.contains(0.5)
    assert not r.contains(0.0) and not r.contains(1.0)


def test_pdbx_style_closed_interval_from_three_rows():
    # how PDBx writes [0, 100]: 0 0 / 0 100 / 100 100
    r = RangeSet.from_rows([(0.0, 0.0), (0.0, 100.0), (100.0, 100.0)])
    assert len(r.intervals) == 1
    assert r.contains(0.0) and r.contains(100.0) and r.contains(50.0)
    assert not r.contains(-0.1) and not r.contains(100.1)
    assert str(r) == "[0, 100]"


def test_unbounded_and_half_open():
    r = RangeSet.from_rows([(0.0, None), (0.0, 0.0)])
    assert r.contains(0.0) and r.contains(1e30)
    assert not r.contains(-1.0)
    assert r.minimum == 0.0 and r.maximum is None
    assert str(r) == "≥ 0"


def test_disjoint_rows_stay_separate():
    r = RangeSet.from_rows([(-1.0, -1.0), (2.0, 3.0)])
    assert len(r.intervals) == 2
    assert r.contains(-1.0) and r.contains(2.5)
    assert not r.contains(0.0) and not r.contains(2.0)


def test_covers():
    wide = RangeSet.from_rows([(0.0, 0.0), (0.0, None)])
    narrow = RangeSet.from_rows([(1.0, 1.0), (1.0, 5.0)])
    assert wide.covers(narrow)
    assert not narrow.covers(wide)
    open_ = RangeSet.from_rows([(0.0, None)])
    assert wide.covers(open_) and not open_.covers(wide)


bound = st.one_of(st.none(), st.integers(-5, 5).map(float))


@given(st.lists(st.tuples(bound, bound), min_size=1, max_size=5), st.floats(-6, 6, allow_nan=False))
def test_merged_intervals_agree_with_the_rows(rows, x):
    """The normalised union admits exactly what the DDL2 rows admit (brute force)."""
    rows = [(lo, hi) for lo, hi in rows if lo is None or hi is None or lo <= hi]
    if not rows:
        return
    r = RangeSet.from_rows(rows)

    def row_admits(lo, hi):
        if lo is not None and hi is not None and lo == hi:
            return x == lo
        return (lo is None or x > lo) and (hi is None or x < hi)

    assert r.contains(x) == any(row_admits(lo, hi) for lo, hi in rows)
    assert all(not math.isnan(iv.lo or 0) for iv in r.intervals)
