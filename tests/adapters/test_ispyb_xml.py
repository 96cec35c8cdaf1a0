"""ISPyB AutoProcContainer XML: hand-checked values of every corpus file, detection, damaged input."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxcat.adapters.ispyb_xml import ADAPTER, STATISTICS
from mxcat.errors import ParseError
from tests.adapters.conftest import fuzz_adapter, values_of

D = "ispyb_xml/"
TWO = D + "autoproc-1.0.5-20210420_two-scaling-containers_anonymised.xml"
STARANISO = D + "autoproc-1.1.7-20221123_esrf_2023_staraniso.xml"
ESRF2024 = D + "autoproc-1.1.7-20240123_esrf_2024.xml"
H32 = D + "autoproc-style-2017_H32_anonymised_extra-element.xml"
WRAPPED = D + "edna-esrf-2011_XSDataInputStoreAutoProc_anom_wrapped.xml"
EDNA2011 = D + "edna-esrf-2011_autoproc_data.xml"
ALL = (TWO, STARANISO, ESRF2024, H32, WRAPPED, EDNA2011)


@functools.cache
def _parse(path: Path):
    return ADAPTER.parse(path)


@pytest.fixture()
def parsed(corpus_file):
    return lambda rel: _parse(corpus_file(rel))


def _v(p, onto, label=None):
    return values_of(p, onto, label)[0]


def _no_drops(p):
    assert not [n for n in p.notes if n.startswith("dropped")], p.notes


# -- hand-checked values ------------------------------------------------------------------------


def test_two_containers_are_two_sweeps_of_one_merge(parsed, onto):
    p = parsed(TWO)
    _no_drops(p)
    assert [r.label for r in p.results] == ["isotropic-1", "isotropic-2"]
    assert (p.program, p.version) == ("autoPROC", "1.0.5 (20210420)")
    assert p.hints == {"dataset": "abc2_1"}
    assert any("read as fractions: autoPROC writes fractions" in n for n in p.notes)
    assert any("repeats the statistics" in n for n in p.notes)
    assert any("truncate-unique.mtz" in n for n in p.notes if n.startswith("attachments"))
    v = _v(p, onto, "isotropic-1")
    assert v["reflns.d_resolution_high"] == pytest.approx(2.506)
    assert v["reflns.d_resolution_low"] == pytest.approx(67.417)
    assert v["reflns.percent_possible_obs"] == pytest.approx(84.3)
    assert v["reflns.pdbx_CC_half"] == pytest.approx(0.995)
    assert v["reflns.pdbx_redundancy"] == pytest.approx(3.3)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.058)
    assert v["reflns.pdbx_Rrim_I_all"] == pytest.approx(0.068)
    assert v["reflns.mmcat_Rmeas_within_IplusIminus"] == pytest.approx(0.069)
    assert v["reflns.number_obs"] == 11803
    assert v["reflns.pdbx_CC_half_anomalous"] == pytest.approx(-0.131)
    assert v["reflns_shell.inner.d_res_high"] == pytest.approx(6.685)
    assert v["reflns_shell.outer.d_res_low"] == pytest.approx(2.552)
    assert v["reflns_shell.outer.percent_possible_obs"] == pytest.approx(38.4)
    assert v["reflns_shell.outer.pdbx_CC_half"] == pytest.approx(0.747)
    assert v["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(0.441)
    assert v["symmetry.space_group_name_H-M"] == "P 2 2 2"
    assert v["space_group.IT_number"] == 16
    assert [v[f"cell.{k}"] for k in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")] == \
        pytest.approx([42.687, 95.052, 95.636, 90, 90, 90])
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(1.11583)
    assert v["mmcat_integration.end_image_number"] == 21
    assert v["mmcat_integration.refined_detector_distance"] == pytest.approx(551.404724)
    assert v["mmcat_integration.refined_beam_centre_x"] == pytest.approx(211.164)
    assert v["mmcat_integration.beam_vector_z"] == pytest.approx(0.896191)
    assert v["mmcat_processing.status"] == "success"
    assert v["mmcat_processing.start_time"] == "2021-06-14T15:09:27-07:00"
    assert v["mmcat_processing.pipeline"] == "autoPROC"
    v2 = _v(p, onto, "isotropic-2")
    assert v2["mmcat_integration.end_image_number"] == 184
    assert v2["mmcat_integration.refined_detector_distance"] == pytest.approx(550.312317)
    assert v2["reflns.d_resolution_high"] == pytest.approx(2.506)


def test_staraniso_container_is_labelled_by_its_content(parsed, onto):
    p = parsed(STARANISO)
    _no_drops(p)
    assert [r.label for r in p.results] == ["isotropic-1", "isotropic-2", "staraniso"]
    iso = _v(p, onto, "isotropic-1")
    assert iso["reflns.d_resolution_high"] == pytest.approx(1.525)
    assert iso["reflns.percent_possible_obs"] == pytest.approx(92.3)
    assert iso["reflns.pdbx_CC_half"] == pytest.approx(0.991)
    assert iso["reflns.pdbx_redundancy"] == pytest.approx(5.1)
    assert iso["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(1.783)  # a fraction above 1 in the outer shell
    assert iso["symmetry.space_group_name_H-M"] == "P 1"
    assert iso["space_group.crystal_system"] == "triclinic"
    assert iso["cell.angle_alpha"] == pytest.approx(114.269)
    assert iso["cell.angle_gamma"] == pytest.approx(97.404)
    assert iso["mmcat_integration.end_image_number"] == 2290
    assert iso["mmcat_processing.start_time"] == "2023-05-15T17:06:53+02:00"
    assert "reflns.pdbx_percent_possible_ellipsoidal" not in iso
    assert _v(p, onto, "isotropic-2")["mmcat_integration.start_image_number"] == 259
    sa = _v(p, onto, "staraniso")
    assert sa["reflns.d_resolution_high"] == pytest.approx(1.390)
    assert sa["reflns.percent_possible_obs"] == pytest.approx(83.4)
    assert sa["reflns.pdbx_percent_possible_ellipsoidal"] == pytest.approx(83.4)
    assert sa["reflns.pdbx_percent_possible_spherical"] == pytest.approx(73.2)
    assert sa["reflns.pdbx_CC_half"] == pytest.approx(0.954)
    assert sa["reflns_shell.outer.pdbx_CC_half"] == pytest.approx(0.030)
    assert sa["reflns_shell.outer.pdbx_percent_possible_spherical"] == pytest.approx(17.7)
    assert [sa[f"reflns.pdbx_aniso_diffraction_limit_{n}"] for n in (1, 2, 3)] == pytest.approx([1.530, 1.376, 1.457])
    assert sa["mmcat_integration.aniso_principal_axis_1"] == "0.70287 -0.15334 0.69457"
    assert sa["mmcat_integration.end_image_number"] == 2417


def test_esrf_2024_four_sweeps(parsed, onto):
    p = parsed(ESRF2024)
    _no_drops(p)
    assert [r.label for r in p.results] == [f"isotropic-{i}" for i in (1, 2, 3, 4)]
    assert p.hints["dataset"] == "INS-Helical_test1_1_7"
    v = _v(p, onto, "isotropic-1")
    assert v["reflns.d_resolution_high"] == pytest.approx(2.199)
    assert v["reflns.d_resolution_low"] == pytest.approx(100.654)
    assert v["reflns.percent_possible_obs"] == pytest.approx(98.9)
    assert v["reflns.pdbx_CC_half"] == pytest.approx(0.968)
    assert v["reflns.pdbx_redundancy"] == pytest.approx(8.2)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.513)
    assert v["reflns.mmcat_Rmeas_within_IplusIminus"] == pytest.approx(0.584)
    assert v["reflns.pdbx_Rpim_I_all"] == pytest.approx(0.174)
    assert v["reflns.number_obs"] == 64583
    assert v["reflns_shell.inner.Rmerge_I_obs"] == pytest.approx(0.409)
    assert v["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(1.265)
    assert v["reflns_shell.outer.pdbx_CC_half"] == pytest.approx(0.330)
    assert v["symmetry.space_group_name_H-M"] == "P 3 2 1"
    assert v["space_group.IT_number"] == 150
    assert v["cell.length_c"] == pytest.approx(100.654)
    assert v["cell.angle_gamma"] == pytest.approx(120.0)
    distances = [_v(p, onto, f"isotropic-{i}")["mmcat_integration.refined_detector_distance"] for i in (1, 2, 3, 4)]
    assert distances == pytest.approx([535.955627, 537.045898, 537.047791, 536.029114])


def test_h32_extra_element_pixels_and_two_sweeps(parsed, onto):
    p = parsed(H32)
    _no_drops(p)
    assert [r.label for r in p.results] == ["isotropic"]
    assert (p.program, p.version) == ("my_pipeline", "1.3.0")
    v = _v(p, onto)
    assert v["reflns.d_resolution_high"] == pytest.approx(4.004)
    assert v["reflns.d_resolution_low"] == pytest.approx(73.502)
    assert v["reflns.percent_possible_obs"] == pytest.approx(99.5)
    assert v["reflns.pdbx_CC_half"] == pytest.approx(0.995)
    assert v["reflns.pdbx_redundancy"] == pytest.approx(4.9)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.063)
    assert v["reflns_shell.outer.percent_possible_obs"] == pytest.approx(99.1)
    assert v["reflns_shell.outer.pdbx_CC_half"] == pytest.approx(0.993)
    assert v["symmetry.space_group_name_H-M"] == "H 3 2"
    assert v["space_group.IT_number"] == 155
    assert v["cell.length_c"] == pytest.approx(126.222)
    assert v["diffrn_radiation_wavelength.wavelength"] == pytest.approx(0.9794)
    assert v["mmcat_integration.end_image_number"] == 90
    assert "mmcat_integration.refined_beam_centre_x" not in v  # 1231.11 is in pixels
    assert "mmcat_processing.status" not in v  # empty in the file
    assert any("in pixels" in n for n in p.notes)
    assert any("integrates 2 sweeps" in n and "178432_2_00001.cbf images 1-30" in n for n in p.notes)
    assert any("'process' command" in n for n in p.notes if n.startswith("R values"))


def test_edna_wrapped_percent_and_capitalised_names(parsed, onto):
    p = parsed(WRAPPED)
    _no_drops(p)
    assert any("read as percentages: EDNA" in n for n in p.notes)
    v = _v(p, onto)
    assert v["reflns.d_resolution_high"] == pytest.approx(3.29)
    assert v["reflns.d_resolution_low"] == pytest.approx(60.0)
    assert v["reflns.percent_possible_obs"] == pytest.approx(98.0)
    assert v["reflns.pdbx_redundancy"] == pytest.approx(6.96)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.218)  # 21.8 %
    assert v["reflns_shell.inner.Rmerge_I_obs"] == pytest.approx(0.037)
    assert v["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(0.677)
    assert v["reflns_shell.outer.d_res_low"] == pytest.approx(3.49)
    assert v["symmetry.space_group_name_H-M"] == "P 2 3"  # padded in the file
    assert v["space_group.IT_number"] == 195
    assert v["cell.length_a"] == pytest.approx(87.6)
    assert v["mmcat_processing.anomalous"] == "yes"
    assert v["mmcat_collection.ispyb_datacollection_id"] == 19570
    assert v["mmcat_integration.start_image_number"] == 1  # <StartImageNumber>
    assert v["mmcat_integration.end_image_number"] == 40
    assert v["mmcat_integration.refined_detector_distance"] == pytest.approx(399.76355)
    assert v["mmcat_processing.message"] == "Success"
    assert v["mmcat_processing.start_time"] == "2011-04-20T11:28:43"


def test_edna_2011_no_declaration_padded_space_group(parsed, onto):
    p = parsed(EDNA2011)
    _no_drops(p)
    assert p.program == "fastproc"
    v = _v(p, onto)
    assert v["reflns.d_resolution_high"] == pytest.approx(2.03)
    assert v["reflns.percent_possible_obs"] == pytest.approx(99.9)
    assert v["reflns.pdbx_redundancy"] == pytest.approx(5.53)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.132)
    assert v["reflns_shell.inner.Rmerge_I_obs"] == pytest.approx(0.036)
    assert v["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(0.748)
    assert v["reflns_shell.outer.percent_possible_obs"] == pytest.approx(99.3)
    assert v["symmetry.space_group_name_H-M"] == "I 2 3"
    assert v["space_group.IT_number"] == 197
    assert v["cell.length_a"] == pytest.approx(78.0)
    assert "reflns.pdbx_CC_half" not in v  # not in the file


def test_statistics_table_agrees_with_the_ontology_mappings(onto):
    """Every column that mmCAT maps from ISPyB goes to the same key here (CC1/2 anomalous spelt ccAno at ESRF)."""
    from mxcat.errors import UnknownKeyError

    names = {m.target.split(".", 1)[1].lower().replace("_", ""): m.target for m in onto.mappings()
             if m.target.startswith("AutoProcScalingStatistics.")}
    checked = 0
    for col, (overall, shell, _) in STATISTICS.items():
        if col not in names:
            continue
        for sel, item in (("overall", overall), ("innerShell", shell), ("outerShell", shell)):
            if item is None:
                continue
            expected = f"reflns.{item}" if sel == "overall" else f"reflns_shell.{sel[:5]}.{item}"
            for scheme in ("ispyb", "ispyb_dls"):
                try:
                    got = onto.resolve(names[col], scheme=scheme, selector=f"scalingStatisticsType={sel}")
                except UnknownKeyError:
                    continue
                assert got == expected, (col, sel, scheme)
                checked += 1
    assert checked > 40


# -- variants written here ----------------------------------------------------------------------

MINI = """<AutoProcContainer>
  <AutoProcProgramContainer><AutoProcProgram><processingPrograms>{prog}</processingPrograms>
  <processingStatus>{status}</processingStatus></AutoProcProgram></AutoProcProgramContainer>
  <AutoProc><spaceGroup>  P 21 21 21 </spaceGroup></AutoProc>
  <AutoProcScalingContainer>
    <AutoProcScalingStatistics><scalingStatisticsType>overall</scalingStatisticsType>
      <resolutionLimitHigh> 1.80 </resolutionLimitHigh><rMerge>{r_all}</rMerge>
      <{rmeas}>{r_all}</{rmeas}><ccHalf>0.998</ccHalf><isa>27.1</isa></AutoProcScalingStatistics>
    <AutoProcScalingStatistics><scalingStatisticsType>innerShell</scalingStatisticsType>
      <rMerge>{r_in}</rMerge></AutoProcScalingStatistics>
    <AutoProcScalingStatistics><scalingStatisticsType>outerShell</scalingStatisticsType>
      <rMerge>{r_out}</rMerge><isa>27.1</isa></AutoProcScalingStatistics>
  </AutoProcScalingContainer>
</AutoProcContainer>
"""


def _mini(tmp_path, **kw):
    args = {"prog": "some_pipeline 2.0", "status": "SUCCESS", "r_all": "0.071", "r_in": "0.03", "r_out": "0.9",
            "rmeas": "rmeasWithinIplusIminus"} | kw
    p = tmp_path / "mini.xml"
    p.write_text(MINI.format(**args))
    return ADAPTER.parse(p)


def test_unknown_writer_fraction_and_other_spelling(tmp_path, onto):
    p = _mini(tmp_path)
    v = _v(p, onto)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.071)
    assert v["reflns.mmcat_Rmeas_within_IplusIminus"] == pytest.approx(0.071)
    assert v["reflns.mmcat_ISa"] == pytest.approx(27.1)
    assert v["symmetry.space_group_name_H-M"] == "P 21 21 21"
    assert v["mmcat_processing.status"] == "success"
    assert any("judged by the values" in n and "fractions" in n for n in p.notes)


def test_unknown_writer_percent_by_values(tmp_path, onto):
    p = _mini(tmp_path, r_all="7.1", r_in="3.0", r_out="90.2", rmeas="rMeasWithinIPlusIMinus")
    v = _v(p, onto)
    assert v["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.071)
    assert v["reflns_shell.outer.Rmerge_I_obs"] == pytest.approx(0.902)
    assert any("judged by the values" in n and "percentages" in n for n in p.notes)


def test_known_writer_is_overruled_only_by_impossible_values(tmp_path, onto):
    p = _mini(tmp_path, prog="xia2 3.1", r_all="7.1", r_in="3.0", r_out="90.2")
    assert _v(p, onto)["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(0.071)
    assert any("impossible as fractions" in n for n in p.notes)
    p = _mini(tmp_path, prog="xia2 3.1", r_all="1.2", r_in="0.6", r_out="3.0")  # bad data, still fractions
    assert _v(p, onto)["reflns.pdbx_Rmerge_I_obs"] == pytest.approx(1.2)


def test_program_only_file_is_a_result_without_label(tmp_path, onto):
    f = tmp_path / "failed.xml"
    f.write_text("<?xml version='1.0'?><AutoProcContainer><AutoProcProgramContainer><AutoProcProgram>"
                 "<processingPrograms>xia2</processingPrograms><processingStatus>0</processingStatus>"
                 "<processingMessage>indexing failed</processingMessage></AutoProcProgram>"
                 "</AutoProcProgramContainer></AutoProcContainer>")
    p = ADAPTER.parse(f)
    assert [r.label for r in p.results] == [None]
    v = _v(p, onto)
    assert v["mmcat_processing.status"] == "failed"
    assert v["mmcat_processing.message"] == "indexing failed"


# -- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ALL)
def test_detects_every_ispyb_xml(corpus_file, rel):
    from mxcat.adapters._util import read_head

    p = corpus_file(rel)
    assert ADAPTER.detect(read_head(p), p.name)


@pytest.mark.parametrize("rel", [
    "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
    "dials/dials_insulin_scaled.expt",
    "crystfel/crystfel-0.9.1_lcls-cspad_xgandalf_test.stream",
    "ispyb_xml/edna2-maxiv-biomax_autoPROC-20230222_ispyb-results.json",
    "xds/CORRECT_xds-2020jan31_esrf.LP",
    "detector/dls-i03-eiger16m_xrc_209_master.h5",
])
def test_does_not_claim_other_files(corpus_file, rel):
    from mxcat.adapters._util import read_head

    p = corpus_file(rel)
    assert not ADAPTER.detect(read_head(p), p.name)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.text(max_size=40))
def test_detect_never_raises(head, name):
    assert ADAPTER.detect(head, name) in (True, False)


def test_detect_survives_wrong_types():
    assert ADAPTER.detect(None, None) is False  # type: ignore[arg-type]


# -- damaged and wrong-kind input -----------------------------------------------------------------


@pytest.mark.parametrize("rel", ["dials/dials_insulin_scaled.expt", "aimless/aimless-0.7.2_soleil_P41212_splTsm_2.xml",
                                 "crystfel/cell-example.cell"])
def test_wrong_kind_is_a_parse_error(corpus_file, rel):
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(corpus_file(rel))
    assert e.value.adapter == "ispyb_xml" and e.value.path == str(corpus_file(rel))


def test_truncated_file_names_file_and_line(corpus_file, tmp_path):
    data = corpus_file(STARANISO).read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError) as e:
        ADAPTER.parse(cut)
    assert e.value.path == str(cut) and e.value.line is not None and e.value.line > 100
    assert "cut.xml:" in str(e.value)


def test_entity_declarations_are_refused(tmp_path):
    f = tmp_path / "bomb.xml"
    f.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><AutoProcContainer>&a;</AutoProcContainer>')
    with pytest.raises(ParseError):
        ADAPTER.parse(f)


def test_missing_file_is_a_parse_error(tmp_path):
    with pytest.raises(ParseError):
        ADAPTER.parse(tmp_path / "absent.xml")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_mutations_parse_or_fail_cleanly(corpus_file, tmp_path, onto, seed):
    for rel in (STARANISO, WRAPPED):
        fuzz_adapter(ADAPTER, corpus_file(rel).read_bytes(), tmp_path / "m.xml", onto, seeds=[seed], n=8)
