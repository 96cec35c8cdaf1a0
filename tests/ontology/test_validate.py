"""Validation and normalisation of values: types, units, ranges, enumerations, CIF conventions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxcat.errors import UnknownKeyError, ValidationError


@pytest.mark.parametrize(
    ("key", "value", "unit", "expected", "canonical"),
    [
        ("reflns.d_resolution_high", 1.8, None, 1.8, "angstroms"),
        ("reflns.d_resolution_high", 0.18, "nm", 1.8, "angstroms"),
        ("reflns.d_resolution_high", "1.80(2)", "angstroms", 1.8, "angstroms"),
        ("reflns.d_resolution_high", 1.8, "Ao", 1.8, "angstroms"),  # UCUM spelling
        ("reflns.pdbx_Rmerge_I_obs", 7.4, "percent", 0.074, "none"),
        ("reflns.pdbx_Rmerge_I_obs", 7.4, "%", 0.074, "none"),
        ("reflns.percent_possible_obs", 99.5, None, 99.5, "percent"),
        ("mmcat_collection.transmission", 0.25, "none", 25.0, "percent"),
        ("mmcat_collection.beam_size_x", 0.05, "millimetres", 50.0, "micrometres"),
        ("mmcat_collection.detector_distance", 0.2124, "metres", 212.4, "millimetres"),
        ("mmcat_collection.photon_energy", 12398.4, "eV", 12.3984, "kiloelectron_volts"),
        ("diffrn.ambient_temp", -173.15, "degC", 100.0, "kelvins"),
        ("mmcat_collection.absorbed_dose", 5, "mGy", 5e-9, "megagrays"),  # symbols keep their case: milli, not mega
        ("mmcat_collection.absorbed_dose", 5, "MGy", 5, "megagrays"),
        ("mmcat_collection.exposure_time", 5, "ms", 0.005, "seconds"),
        ("reflns.d_resolution_high", 1.8, "ANGSTROMS", 1.8, "angstroms"),  # words ignore case
        ("mmcat_live_image.n_spots_total", "42", None, 42, "none"),
        ("mmcat_live_image.n_spots_total", 42.0, None, 42, "none"),
    ],
)
def test_numbers_are_converted_to_the_canonical_unit(onto, key, value, unit, expected, canonical):
    n = onto.validate(key, value, unit)
    assert n.value == pytest.approx(expected)
    assert n.unit == canonical
    assert type(n.value) is (int if onto.item(key).kind == "int" else float)


@pytest.mark.parametrize(
    ("key", "value", "unit", "reason"),
    [
        ("reflns.percent_possible_obs", 104.0, None, "out of range"),
        ("reflns.pdbx_CC_half", 1.2, None, "out of range"),
        ("reflns.d_resolution_high", -1.0, None, "out of range"),
        ("reflns.d_resolution_high", 1.0, "degrees", "does not convert"),
        ("reflns.d_resolution_high", 1.0, "no-such-unit", "unit"),
        ("reflns.d_resolution_high", "abc", None, "not a number"),
        ("reflns.d_resolution_high", "?", None, "missing value"),
        ("reflns.d_resolution_high", float("nan"), None, "finite"),
        ("reflns.d_resolution_high", True, None, "boolean"),
        ("reflns.d_resolution_high", [1.0], None, "expected a number"),
        ("mmcat_live_image.n_spots_total", 4.5, None, "integer"),
        ("mmcat_processing.status", "great", None, "not one of"),
        ("mmcat_processing.status", "", None, "empty"),
        ("mmcat_processing.status", "success", "mm", "no unit"),
        ("mmcat_collection.start_time", "yesterday", None, "form of type"),
        ("mmcat_collection.start_time", "20200101", None, "form of type"),
        ("mmcat_collection.start_time", "2020-W01", None, "form of type"),
        ("mmcat_collection.start_time", "2020-02-30", None, "valid date"),
        ("mmcat_live_image.total_intensity", 100, "%", "does not convert"),
        ("mmcat_live_image.total_intensity", 100, "pixel", "does not convert"),
        ("reflns.d_resolution_high", 1.0, ")", "cannot read unit"),
    ],
)
def test_bad_values_are_rejected_with_key_value_and_reason(onto, key, value, unit, reason):
    with pytest.raises(ValidationError) as err:
        onto.validate(key, value, unit)
    e = err.value
    assert e.key == key
    assert reason in e.reason
    assert key in str(e)


def test_unknown_keys_are_validation_errors(onto):
    with pytest.raises(UnknownKeyError):
        onto.validate("reflns.no_such_item", 1.0)


def test_advisory_ranges_catch_percentages_stored_as_fractions(onto):
    n = onto.validate("reflns.pdbx_Rmerge_I_obs", 6.2)  # a percentage given without its unit
    assert n.value == 6.2 and n.warnings


def test_advisory_range_warns_but_keeps_the_value(onto):
    n = onto.validate("reflns.percent_possible_obs", 60.0)
    assert n.value == 60.0
    assert n.warnings and "unusual" in n.warnings[0]
    assert not onto.validate("reflns.percent_possible_obs", 99.0).warnings


def test_enumerations_and_datetimes_are_normalised(onto):
    assert onto.validate("mmcat_processing.message_severity", "ERROR").value == "ERROR"
    assert onto.validate("mmcat_collection.start_time", "2023-05-15 14:03:01").value == "2023-05-15T14:03:01"
    assert onto.validate("mmcat_collection.start_time", "2023-05-15T14:03:01+02:00").value == "2023-05-15T14:03:01+02:00"
    assert onto.validate("diffrn_detector.pdbx_collection_date", "2023-05-15:14:03").value == "2023-05-15T14:03:00"
    assert onto.validate("diffrn_detector.pdbx_collection_date", "2023").value == "2023"  # PDBx flexible dates
    assert onto.validate("diffrn_detector.pdbx_collection_date", "2023-05").value == "2023-05"
    assert onto.validate("mmcat_collection.start_time", "2023-05-15").value == "2023-05-15"
    assert onto.validate("symmetry.space_group_name_H-M", "  P 41 21 2 ").value == "P 41 21 2"


def test_flattened_keys_validate_like_their_item(onto):
    n = onto.validate("reflns_shell.outer.pdbx_CC_half", 0.31)
    assert n.key == "reflns_shell.outer.pdbx_CC_half" and n.value == 0.31
    with pytest.raises(ValidationError):
        onto.validate("reflns_shell.outer.pdbx_CC_half", -2)


def test_a_batch_keeps_the_good_values_and_says_why_the_bad_failed(onto):
    result = onto.validate_many([
        ("reflns.d_resolution_high", 1.6, None),
        ("reflns.percent_possible_obs", 130.0, None),
        ("reflns.nonsense", 1, None),
        ("reflns_shell.outer.pdbx_CC_half", 0.4, None),
    ])
    assert [n.key for n in result.accepted] == ["reflns.d_resolution_high", "reflns_shell.outer.pdbx_CC_half"]
    assert [e.key for e in result.rejected] == ["reflns.percent_possible_obs", "reflns.nonsense"]
    assert all(e.reason for e in result.rejected)


values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.binary(max_size=10), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
units = st.one_of(st.none(), st.sampled_from(["nm", "mm", "percent", "deg", "K", "s", "none", "furlong/fortnight", "", "1/Å", "%%"]), st.text(max_size=8))


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["reflns.d_resolution_high", "mmcat_live_image.n_spots_total", "mmcat_processing.status",
                            "mmcat_collection.start_time", "reflns_shell.outer.pdbx_CC_half", "mmcat_collection.file_template"]),
       value=values, unit=units)
def test_validation_never_fails_with_anything_but_a_validation_error(onto, key, value, unit):
    try:
        n = onto.validate(key, value, unit)
    except ValidationError as err:
        assert err.key == key and err.reason
        return
    if isinstance(n.value, float):
        assert math.isfinite(n.value)
