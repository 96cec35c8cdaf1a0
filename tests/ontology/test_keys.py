"""Loading, flat keys (flatten/unflatten) and reverse lookup of mapped names."""

from __future__ import annotations

import json

import pytest

from mxcat.errors import OntologyError, UnknownKeyError
from mxcat.ontology import load
from tests.conftest import DATA


def test_all_components_load_with_semantic_versions(onto):
    names = {c.name for c in onto.components}
    assert {"mmcat_ddl-ext.dic", "mmcat_pdbx.dic", "mmcat_collection.dic", "mmcat_processing.dic", "mmcat_live.dic"} <= names
    for c in onto.components:
        assert c.version.count(".") == 2
        assert c.version in {h[0] for h in c.history}
    assert len(onto.items) > 300


def test_definitions_are_typed(onto):
    item = onto.item("reflns.d_resolution_high")
    assert item.kind == "float"
    assert item.units == "angstroms"
    assert item.hard_range is not None and item.hard_range.contains(0.0) and not item.hard_range.contains(-1)
    assert item.advisory_range is not None
    assert item.entity == "processing"
    assert item.path.endswith("mmcat_pdbx.dic") and item.line > 0
    status = onto.item("mmcat_processing.status")
    assert status.kind == "string" and "failed" in status.enumeration
    assert onto.item("mmcat_collection.start_time").kind == "datetime"
    assert onto.item("mmcat_live_image.n_spots_total").kind == "int"


def test_flatten_and_unflatten(onto):
    assert onto.flat_key("_reflns_shell.pdbx_CC_half", "outer") == "reflns_shell.outer.pdbx_CC_half"
    assert onto.flat_key("_reflns.d_resolution_high") == "reflns.d_resolution_high"
    assert onto.unflatten("reflns_shell.outer.pdbx_CC_half") == ("reflns_shell", "outer", "pdbx_CC_half")
    assert onto.unflatten("reflns.d_resolution_high") == ("reflns", None, "d_resolution_high")
    # DDL2 tags and other cases resolve to the dictionary's spelling
    assert onto.canonical_key("_reflns.d_resolution_high") == "reflns.d_resolution_high"
    assert onto.canonical_key("REFLNS_SHELL.OUTER.PDBX_CC_HALF") == "reflns_shell.outer.pdbx_CC_half"


def test_selectors_come_from_the_declared_values(onto):
    cat = onto.categories["reflns_shell"]
    assert cat.storage == "flattened" and cat.selector_item == "_reflns_shell.mmcat_shell_class"
    assert set(cat.selector_values) == {"inner", "outer"}
    assert "reflns_shell.inner.pdbx_redundancy" in onto
    assert "reflns_shell.intermediate.pdbx_redundancy" not in onto
    assert "reflns_shell.outer.mmcat_shell_class" not in onto  # the selector itself is not flattened


def test_unknown_key_suggests_close_ones(onto):
    with pytest.raises(UnknownKeyError) as err:
        onto.lookup("reflns.d_resolution_hihg")
    assert "reflns.d_resolution_high" in err.value.suggestions


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("MXAutoprocIntegrationScaling_outer_cc_half", {}, "reflns_shell.outer.pdbx_CC_half"),
        ("AutoProcScalingStatistics.ccHalf", {"selector": "scalingStatisticsType=outerShell"}, "reflns_shell.outer.pdbx_CC_half"),
        ("AutoProcScalingStatistics.ccHalf", {"selector": {"scalingStatisticsType": "overall"}}, "reflns.pdbx_CC_half"),
        ("AutoProcScalingStatistics.rmeasWithinIplusIminus", {"scheme": "ispyb", "selector": "scalingStatisticsType=innerShell"},
         "reflns_shell.inner.mmcat_Rmeas_within_IplusIminus"),
        ("AutoProcScalingStatistics.ccAnomalous", {"scheme": "ispyb_dls", "selector": "scalingStatisticsType=overall"}, "reflns.pdbx_CC_half_anomalous"),
        ("AutoProcScalingStatistics.ccAno", {"scheme": "ispyb", "selector": "scalingStatisticsType=overall"}, "reflns.pdbx_CC_half_anomalous"),
        ("/entry/instrument/beam/incident_wavelength", {}, "diffrn_radiation_wavelength.wavelength"),
        ("n_spots_4A", {"scheme": "dials"}, "mmcat_live_image.n_spots_4A"),
        ("indexed_by", {"scheme": "crystfel"}, "mmcat_live_image.indexed_by"),
        ("oscillation_sequence[0].range", {"scheme": "mxcube"}, "mmcat_collection.oscillation_width"),
        ("reflns.d_resolution_high", {}, "reflns.d_resolution_high"),
    ],
)
def test_reverse_lookup(onto, name, kwargs, key):
    assert onto.resolve(name, **kwargs) == key


def test_a_name_stored_in_different_units_needs_its_scheme(onto):
    with pytest.raises(UnknownKeyError, match="different units"):
        onto.resolve_mapping("AutoProcScalingStatistics.rMerge", selector="scalingStatisticsType=overall")
    assert onto.resolve_mapping("AutoProcScalingStatistics.rMerge", scheme="ispyb", selector="scalingStatisticsType=overall").units == "percent"
    assert onto.resolve_mapping("AutoProcScalingStatistics.rMerge", scheme="ispyb_dls", selector="scalingStatisticsType=overall").units is None


def test_items_may_state_their_own_entity(onto):
    assert onto.categories["mmcat_sample"].entity == "sample"
    assert onto.item("mmcat_sample.name").entity == "sample"
    assert onto.item("mmcat_sample.position_name").entity == "dataset"


def test_ambiguous_names_list_their_selectors(onto):
    with pytest.raises(UnknownKeyError) as err:
        onto.resolve("AutoProcScalingStatistics.ccHalf")
    assert "ambiguous" in str(err.value)
    assert any("outerShell" in s for s in err.value.suggestions)
    with pytest.raises(UnknownKeyError):
        onto.resolve("AutoProcScalingStatistics.ccHalf", scheme="no_such_scheme")


# ISPyB columns that carry no metadata of their own: surrogate and foreign keys, row time stamps,
# user-interface flags, and the EM / SAXS columns of DataCollection. Everything else must resolve.
NOT_METADATA = {
    "recordTimeStamp", "printableForReport", "processedDataFile", "datFullPath", "driftFactor",
    "magnification", "binning", "particleDiameter", "boxSize_CTF", "minResolution", "minDefocus", "maxDefocus",
    "defocusStepSize", "amountAstigmatism", "extractSize", "bgRadius", "voltage", "objAperture", "c1aperture",
    "c2aperture", "c3aperture", "c1lens", "c2lens", "c3lens", "totalExposedDose", "nominalMagnification",
    "nominalDefocus", "imageSizeX", "imageSizeY", "pixelSizeOnImage", "phasePlate",
}
SHELLS = ("scalingStatisticsType=overall", "scalingStatisticsType=innerShell", "scalingStatisticsType=outerShell")


def _is_key_column(col: str) -> bool:
    return col.lower().endswith("id")


def ispyb_cases():
    data = json.loads((DATA / "ispyb_columns.json").read_text())
    for table, flavours in data["tables"].items():
        for flavour, cols in flavours.items():
            scheme = "ispyb_dls" if flavour == "dls" else "ispyb"
            for col in cols:
                if _is_key_column(col) or col in NOT_METADATA:
                    continue
                yield pytest.param(scheme, table, col, id=f"{scheme}:{table}.{col}")


@pytest.mark.parametrize(("scheme", "table", "col"), list(ispyb_cases()))
def test_every_ispyb_column_resolves(onto, scheme, table, col):
    name = f"{table}.{col}"
    if table == "AutoProcScalingStatistics" and col != "scalingStatisticsType":
        keys = {onto.resolve(name, scheme=scheme, selector=s) for s in SHELLS}
        assert keys, name
    else:
        assert onto.resolve(name, scheme=scheme) in onto


def test_the_exclusions_are_only_keys_and_non_mx_columns():
    data = json.loads((DATA / "ispyb_columns.json").read_text())
    excluded = {c for t in data["tables"].values() for cols in t.values() for c in cols if c in NOT_METADATA or _is_key_column(c)}
    mx_like = {"wavelength", "detectorDistance", "xBeam", "completeness", "ccHalf", "spotTotal", "processingStatus"}
    assert not (excluded & mx_like)


def test_scaling_rows_land_in_reflns_and_reflns_shell(onto):
    for col in ("resolutionLimitHigh", "completeness", "ccHalf", "multiplicity", "rMerge", "meanIOverSigI"):
        overall = onto.resolve(f"AutoProcScalingStatistics.{col}", scheme="ispyb", selector=SHELLS[0])
        inner = onto.resolve(f"AutoProcScalingStatistics.{col}", scheme="ispyb", selector=SHELLS[1])
        outer = onto.resolve(f"AutoProcScalingStatistics.{col}", scheme="ispyb", selector=SHELLS[2])
        assert overall.startswith("reflns.")
        assert inner.startswith("reflns_shell.inner.") and outer.startswith("reflns_shell.outer.")


def esrf_cases():
    return json.loads((DATA / "esrf_icat_names.json").read_text())["names"]


@pytest.mark.parametrize("name", esrf_cases())
def test_every_esrf_icat_name_resolves(onto, name):
    key = onto.resolve(name, scheme="esrf_icat")
    assert key in onto
    if name.startswith("MXAutoprocIntegrationScaling_"):
        shell = name.split("_")[1]
        expected = {"overall": "reflns.", "inner": "reflns_shell.inner.", "outer": "reflns_shell.outer."}[shell]
        if not name.endswith(("_anomalous", "_isa")):
            assert key.startswith(expected), (name, key)


def test_every_esrf_scaling_statistic_exists_for_all_three_shells():
    names = set(esrf_cases())
    stats = {n.split("_", 2)[2] for n in names if n.startswith("MXAutoprocIntegrationScaling_")}
    for s in stats:
        for shell in ("overall", "inner", "outer"):
            assert f"MXAutoprocIntegrationScaling_{shell}_{s}" in names


def test_loading_a_missing_path_names_it(tmp_path):
    with pytest.raises(OntologyError) as err:
        load([tmp_path / "nope.dic"])
    assert "nope.dic" in str(err.value)


def test_cif_syntax_error_points_at_file_and_line(tmp_path):
    bad = tmp_path / "bad.dic"
    bad.write_text("data_bad\n_dictionary.title bad\nloop_\n_a.b\n_a.c\n1 2 3\n")
    with pytest.raises(OntologyError) as err:
        load([bad])
    assert err.value.path == str(bad) and err.value.line is not None
