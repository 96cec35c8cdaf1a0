"""Corpus-wide checks of the adapter registry (STYLE: a corpus-wide detection test).

Every corpus file of the kinds mxcat ingests is claimed by exactly the expected adapter, no file is
claimed twice, negative files (detector images, streams, logs we do not ingest) are claimed by
none, and everything every adapter emits from the corpus exists in mmCAT and passes validation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxcat.adapters import BROKEN, explain, registry
from mxcat.ingest import prepare
from mxcat.ingest_files import Context, batches_for
from tests.conftest import corpus_dir

EXPECTED = {
    "ispyb_xml/autoproc-1.0.5-20210420_two-scaling-containers_anonymised.xml": "ispyb_xml",
    "ispyb_xml/autoproc-1.1.7-20221123_esrf_2023_staraniso.xml": "ispyb_xml",
    "ispyb_xml/autoproc-1.1.7-20240123_esrf_2024.xml": "ispyb_xml",
    "ispyb_xml/autoproc-style-2017_H32_anonymised_extra-element.xml": "ispyb_xml",
    "ispyb_xml/edna-esrf-2011_XSDataInputStoreAutoProc_anom_wrapped.xml": "ispyb_xml",
    "ispyb_xml/edna-esrf-2011_autoproc_data.xml": "ispyb_xml",
    "ispyb_xml/edna2-maxiv-biomax_autoPROC-20230222_ispyb-results.json": "edna2_ispyb_json",
    "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml": "aimless_xml",
    "aimless/pointless-1.9.31_esrf-id29.log": "pointless_log",
    "xds/CORRECT_xds-2010dec06_edna-tryp1.LP": "xds_correct_lp",
    "xds/CORRECT_xds-2020jan31_esrf.LP": "xds_correct_lp",
    "xds/IDXREF_xds-2020jan31_esrf.LP": "xds_idxref_lp",
    "xds/XDS_ASCII_header_edna-tryp1.HKL": "xds_ascii_header",
    "xds/XDS_ASCII_header_xds-2020_esrf.HKL": "xds_ascii_header",
    "xds/XSCALE_xds-2014jan10_dls-i04-1_xia2-3daii.LP": "xds_xscale_lp",
    "xds/XSCALE_xds-2019mar15_error-cannot-open-input.LP": "xds_xscale_lp",
    "xia2/xia2-0.3.6.3_dls-i04-1_indexing-error_xia2.txt": "xia2_txt",
    "xia2/xia2-2014_dls-i04-1_C2221_xia2-summary.dat": "xia2_summary",
    "xdsapp/xdsapp_results_maxiv-fragmax_C2.txt": "xdsapp_results",
    "dials/dials_insulin_scaled.expt": "dials_expt",
    "live_analysis/dozor-2.0.2_esrf.log": "dozor_log",
    "live_analysis/dozor-2.0.2_esrf_no_results.log": "dozor_log",
    "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream": "crystfel_stream",
    "crystfel/cspad-cxiformat.geom": "crystfel_geom",
    "crystfel/eiger16m-binning2-nativefiles.geom": "crystfel_geom",
    "crystfel/jungfrau16m-swissfel.geom": "crystfel_geom",
    "crystfel/pilatus.geom": "crystfel_geom",
    "detector/dectris-eiger9m_fw1.6.4_master_semisynthetic.h5": "nxmx_master",
    "detector/dls-i03-eiger16m_xrc_209_master.h5": "nxmx_master",
}
"""The expected adapter of every corpus file of an ingested kind; every other corpus file is negative."""


def corpus_files() -> list[str]:
    c = corpus_dir()
    if c is None:
        return []
    return sorted(str(p.relative_to(c)) for p in c.rglob("*") if p.is_file() and p.name != "SOURCES.md" and "dictionaries" not in p.parts)


@pytest.fixture(scope="module")
def adapters():
    regs = registry()
    assert BROKEN == {}, BROKEN
    return regs


def test_every_planned_adapter_is_registered(adapters):
    assert set(EXPECTED.values()) | {"mxcube_dc"} <= set(adapters)
    for name, a in adapters.items():
        assert a.name == name and a.description


@pytest.mark.parametrize("rel", corpus_files() or ["<no corpus>"])
def test_each_corpus_file_is_claimed_by_exactly_the_expected_adapter(adapters, rel):
    if rel == "<no corpus>":
        pytest.skip("the shared corpus is not present")
    path = corpus_dir() / rel
    verdicts = explain(path, adapters)
    assert [v for v in verdicts if v.error] == []  # detectors never raise
    claimed = [v.adapter for v in verdicts if v.claims]
    expected = EXPECTED.get(rel)
    assert claimed == ([expected] if expected else []), f"{rel}: claimed by {claimed}, expected {expected}"


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_everything_emitted_from_the_corpus_validates(adapters, onto, rel):
    c = corpus_dir()
    if c is None:
        pytest.skip("the shared corpus is not present")
    path = c / rel
    parsed = adapters[EXPECTED[rel]].parse(path)
    assert parsed.adapter == EXPECTED[rel]
    batches = batches_for(parsed, "0" * 64, Context(facility="TEST", beamline="BL"))
    assert batches, f"{rel}: nothing to store"
    for b in batches:
        out = prepare(b, onto)
        assert out.rejected == [], [str(r) for r in out.rejected]
        assert out.records or out.tables


@settings(max_examples=200, deadline=None)
@given(head=st.binary(max_size=600), name=st.text(max_size=30))
def test_detectors_never_raise_and_ignore_noise(adapters, head, name):
    for a in adapters.values():
        a.detect(head, name)  # must not raise


def test_directories_and_globs_expand(tmp_path):
    from mxcat.adapters import expand
    from mxcat.errors import ParseError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "y.txt").write_text("y")
    assert sorted(p.name for p in expand([tmp_path])) == ["x.txt", "y.txt"]
    assert [p.name for p in expand([str(tmp_path / "*.txt")])] == ["y.txt"]
    with pytest.raises(ParseError):
        list(expand([str(tmp_path / "nothing*.xyz")]))
    with pytest.raises(ParseError):
        list(expand([tmp_path / "missing.file"]))
    assert Path  # keep the import for readers


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_hypothesis_mutations_of_the_corpus_never_escape_as_anything_but_parse_errors(adapters, onto, tmp_path_factory, data):
    """Hypothesis drives truncations, byte flips and line edits of every real corpus file."""
    from mxcat.errors import ParseError

    c = corpus_dir()
    if c is None:
        pytest.skip("the shared corpus is not present")
    rel = data.draw(st.sampled_from(sorted(EXPECTED)))
    raw = (c / rel).read_bytes()
    op = data.draw(st.sampled_from(["truncate", "flip", "delete_line", "duplicate_line", "insert_junk"]))
    if op == "truncate":
        blob = raw[: data.draw(st.integers(0, len(raw)))]
    elif op == "flip":
        b = bytearray(raw)
        for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=6)):
            b[pos] = data.draw(st.integers(0, 255))
        blob = bytes(b)
    else:
        lines = raw.splitlines(keepends=True)
        i = data.draw(st.integers(0, len(lines) - 1))
        if op == "delete_line":
            del lines[i]
        elif op == "duplicate_line":
            lines.insert(i, lines[data.draw(st.integers(0, len(lines) - 1))])
        else:
            lines.insert(i, data.draw(st.binary(max_size=80)) + b"\n")
        blob = b"".join(lines)
    path = tmp_path_factory.mktemp("mut") / Path(rel).name
    path.write_bytes(blob)
    try:
        parsed = adapters[EXPECTED[rel]].parse(path)
    except ParseError as err:
        assert err.adapter == EXPECTED[rel] and err.path == str(path)
        return
    for b in batches_for(parsed, "0" * 64, Context(facility="TEST", beamline="BL")):
        prepare(b, onto)  # may reject values one by one, never raises
