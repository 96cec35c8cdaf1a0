"""Exports: ICAT ParameterTypes, the SciCat JSON Schema, and the Markdown reference."""

from __future__ import annotations

import json

import jsonschema
import pytest

from mxcat.ontology.export import (
    icat_parameter_types,
    markdown_reference,
    scicat_field_name,
    scicat_key_of,
    scicat_schema,
)


@pytest.mark.parametrize("names", ["mmcat", "esrf"])
def test_icat_parameter_types_are_unique_on_name_and_units(onto, names):
    pts = icat_parameter_types(onto, names=names)
    pairs = [(p["name"], p["units"]) for p in pts]
    assert len(pairs) == len(set(pairs))
    assert {p["valueType"] for p in pts} <= {"NUMERIC", "STRING", "DATE_AND_TIME"}
    assert all(p["units"] for p in pts)  # ICAT requires units; pure numbers say N/A


def test_icat_parameter_type_content(onto):
    pts = {p["key"]: p for p in icat_parameter_types(onto)}
    d = pts["reflns.d_resolution_high"]
    assert d["units"] == "Angstrom" and d["valueType"] == "NUMERIC" and d["minimumNumericValue"] == 0
    assert d["applicableToDataset"] and not d["applicableToSample"]
    status = pts["mmcat_processing.status"]
    assert status["valueType"] == "STRING" and {v["value"] for v in status["permissibleStringValues"]} >= {"success", "failed"}
    assert status["enforced"]
    assert pts["mmcat_collection.start_time"]["valueType"] == "DATE_AND_TIME"
    assert pts["mmcat_sample.name"]["applicableToSample"]
    assert "reflns_shell.outer.pdbx_CC_half" in pts
    assert "mmcat_live_image.n_spots_total" not in pts  # tables travel as tables
    esrf = {p["key"]: p for p in icat_parameter_types(onto, names="esrf")}
    assert esrf["reflns_shell.outer.pdbx_CC_half"]["name"] == "MXAutoprocIntegrationScaling_outer_cc_half"
    # ESRF names keep the units ESRF stores them in
    assert (esrf["mmcat_collection.beam_size_x"]["name"], esrf["mmcat_collection.beam_size_x"]["units"]) == ("MX_beamSizeAtSampleX", "mm")
    assert esrf["reflns.pdbx_Rmerge_I_obs"]["units"] == "%"


def test_scicat_schema_accepts_good_metadata_and_rejects_bad(onto):
    schema = scicat_schema(onto)
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    f = scicat_field_name  # the field names the scicat sink writes
    good = {
        f("reflns.d_resolution_high"): {"value": 1.6, "unit": "angstrom"},
        f("reflns_shell.outer.pdbx_CC_half"): {"value": 0.4, "unit": ""},
        f("mmcat_processing.status"): {"value": "success"},
        f("diffrn.ambient_temp"): {"value": 100.0, "unit": "K"},
    }
    assert list(v.iter_errors(good)) == []
    for bad in ({f("reflns.d_resolution_high"): {"value": -1.0, "unit": "angstrom"}},
                {f("reflns.d_resolution_high"): {"value": 1.6, "unit": "angstroms"}},
                {f("mmcat_processing.status"): {"value": "great"}},
                {f("reflns.percent_possible_obs"): {"value": 101, "unit": "percent"}}):
        assert list(v.iter_errors(bad)), bad
    assert schema["properties"][f("reflns.d_resolution_high")]["x-mmcat-key"] == "reflns.d_resolution_high"
    assert all(scicat_key_of(name) == p["x-mmcat-key"] and "." not in name for name, p in schema["properties"].items())


def test_scicat_units_avoid_spellings_its_converter_rejects(onto):
    schema = scicat_schema(onto)
    units = {p["properties"]["unit"]["const"] for p in schema["properties"].values() if "unit" in p["properties"]}
    assert not units & {"kelvins", "millimetres", "angstroms", "degrees", "seconds", "none"}
    assert json.dumps(schema)


def test_docs_cover_every_item(onto):
    md = markdown_reference(onto)
    for item in onto.items.values():
        assert f"`{item.name}`" in md
    assert "MXAutoprocIntegrationScaling_outer_cc_half" in md
