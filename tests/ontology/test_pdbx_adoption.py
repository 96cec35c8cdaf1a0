"""Adopted PDBx items keep the PDBx type, units and hard ranges (checked against the real dictionary)."""

from __future__ import annotations

import pytest

from mxcat.ontology.lint import compare_with_pdbx, is_mmcat_name, read_pdbx_items


@pytest.fixture(scope="module")
def pdbx(pdbx_path):
    return read_pdbx_items(pdbx_path)


def adopted(onto):
    return [i for i in onto.items.values() if not is_mmcat_name(i.name)]


def test_the_adopted_set_covers_the_categories_mmcat_needs(onto):
    cats = {i.category for i in adopted(onto)}
    for needed in ("diffrn", "diffrn_source", "diffrn_radiation_wavelength", "diffrn_detector", "cell", "symmetry",
                   "space_group", "reflns", "reflns_shell", "software", "exptl_crystal",
                   "pdbx_serial_crystallography_measurement", "pdbx_serial_crystallography_sample_delivery",
                   "pdbx_serial_crystallography_data_reduction"):
        assert needed in cats


def test_every_adopted_item_exists_in_pdbx_and_agrees(onto, pdbx):
    problems = []
    for item in adopted(onto):
        ref = pdbx.get(item.name.lower())
        if ref is None:
            problems.append(f"{item.name}: not in PDBx")
            continue
        problems += [str(p) for p in compare_with_pdbx(item, ref)]
    assert problems == []


def test_mmcat_items_do_not_clash_with_pdbx(onto, pdbx):
    clashes = [i.name for i in onto.items.values() if is_mmcat_name(i.name) and i.name.lower() in pdbx]
    assert clashes == []


def test_comparison_notices_a_changed_range(onto, pdbx):
    import copy

    from mxcat.ontology.model import RangeSet

    item = copy.copy(onto.item("reflns.pdbx_CC_half"))
    item.hard_range = RangeSet.from_rows([(0.0, 0.0), (0.0, 0.9), (0.9, 0.9)])
    assert any("hard range" in p.message for p in compare_with_pdbx(item, pdbx["_reflns.pdbx_cc_half"]))


def test_descriptions_are_our_own(onto, pdbx_path):
    """Descriptions of adopted items are written for mmCAT, not copied from PDBx."""
    import gemmi

    doc = gemmi.cif.read(str(pdbx_path))
    block = doc.sole_block()
    same = []
    for item in adopted(onto):
        frame = block.find_frame(item.name)
        if frame is None:
            continue
        theirs = " ".join(gemmi.cif.as_string(frame.find_value("_item_description.description") or "").split())
        if theirs and " ".join(item.description.split()) == theirs:
            same.append(item.name)
    assert same == []
