"""The filter language: parsing, errors with positions, unit conversion, and its meaning on the embedded catalogue."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxcat.client import Catalogue
from mxcat.errors import ValidationError
from mxcat.query import And, Cmp, Exists, In, Not, Or, QueryError, parse
from mxcat.records import Batch, Provenance, Subject


def test_parse_structure(onto):
    n = parse("reflns.d_resolution_high < 2.0 and (reflns.pdbx_CC_half > 0.9 or not exists reflns.mmcat_ISa)", onto)
    assert isinstance(n, And) and isinstance(n.parts[1], Or) and isinstance(n.parts[1].parts[1], Not)
    assert n.parts[0] == Cmp("reflns.d_resolution_high", "<", 2.0, True)
    assert isinstance(n.parts[1].parts[1].part, Exists)
    assert parse("symmetry.space_group_name_H-M in ('P 1', 'P 21')", onto) == In("symmetry.space_group_name_H-M", ("P 1", "P 21"), False)


def test_values_are_converted_and_names_resolved(onto):
    assert parse("reflns.d_resolution_high < 0.2 nm", onto) == Cmp("reflns.d_resolution_high", "<", 2.0, True)
    assert parse("MXAutoprocIntegrationScaling_outer_cc_half >= 0.3", onto) == Cmp("reflns_shell.outer.pdbx_CC_half", ">=", 0.3, True)
    assert parse("mmcat_processing.status == success", onto) == Cmp("mmcat_processing.status", "=", "success", False)
    with pytest.raises(QueryError, match="not one of"):
        parse("mmcat_processing.status == SUCCESS", onto)  # enumerations of type code keep their case


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("reflns.d_resolution_high <", "expected a value"),
        ("reflns.d_resolution_hihg < 2", "not a known key"),
        ("reflns.d_resolution_high < 2 and", "expected"),
        ("(reflns.d_resolution_high < 2", "expected )"),
        ("reflns.d_resolution_high ~ 'x'", "needs a text key"),
        ("mmcat_processing.status < 3", "needs a numeric"),
        ("reflns.d_resolution_high < abc", "not a number"),
        ("reflns.d_resolution_high < 2 degrees", "does not convert"),
        ("mmcat_processing.status = great", "not one of"),
        ("reflns.d_resolution_high < 2 ; drop table", "unexpected"),
        ("", "empty"),
    ],
)
def test_errors_say_what_and_where(onto, text, where):
    with pytest.raises(QueryError) as err:
        parse(text, onto)
    assert where in str(err.value)
    assert "position" in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("reflns.d_resolution_high<>=!~()'\"0123456789 andornotinexists,.-_")), max_size=60))
def test_garbage_never_escapes_as_anything_but_a_query_error(onto, text):
    try:
        parse(text, onto)
    except ValidationError:
        pass


@pytest.fixture()
def cat(data_dir, onto):
    with Catalogue.open() as c:
        for i, (res, cc, status, msg) in enumerate([(1.5, 0.5, "success", "fine"), (2.5, 0.2, "failed", "Error in indexing"),
                                                      (1.9, 0.95, "success", "50% done")]):
            s = Subject(facility="F", beamline="BL1" if i < 2 else "BL2", proposal="p", session="s", sample=f"x{i}", dataset="d", processing="run1")
            c.ingest(Batch(s, Provenance(run="a")).add("reflns.d_resolution_high", res).add("reflns_shell.outer.pdbx_CC_half", cc)
                     .add("mmcat_processing.status", status).add("mmcat_processing.message", msg))
        yield c


def samples(hits):
    return [h["path"].split("sample=")[1].split("/")[0] for h in hits if "sample=" in h["path"] and h["kind"] == "processing"]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("reflns.d_resolution_high < 2.0", ["x0", "x2"]),
        ("reflns.d_resolution_high < 2.0 and reflns_shell.outer.pdbx_CC_half > 0.9", ["x2"]),
        ("reflns.d_resolution_high < 2.0 or mmcat_processing.status = failed", ["x0", "x1", "x2"]),
        ("mmcat_processing.message ~ 'INDEXING'", ["x1"]),
        ("mmcat_processing.message ~ '50%'", ["x2"]),  # LIKE wildcards are literal
        ("mmcat_processing.message ~ '_'", []),
        ("reflns.d_resolution_high != 1.5 and exists reflns.d_resolution_high", ["x1", "x2"]),
        ("reflns_shell.outer.pdbx_CC_half in (0.5, 0.2)", ["x0", "x1"]),
        ("reflns.d_resolution_high <= 0.19 nm", ["x0", "x2"]),
    ],
)
def test_meaning_on_the_embedded_catalogue(cat, q, expected):
    assert samples(cat.query(q)) == expected


def test_subject_filters(cat):
    assert samples(cat.query("reflns.d_resolution_high < 3", beamline="BL2")) == ["x2"]
    assert [h["kind"] for h in cat.query(None, beamline="BL2", kind="processing")] == ["processing"]
