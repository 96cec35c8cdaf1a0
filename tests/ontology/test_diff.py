"""`mxcat ontology diff`: breaking changes are recognised and make the command fail."""

from __future__ import annotations

import re
from pathlib import Path

from mxcat.ontology import load
from mxcat.ontology.diff import diff
from mxcat.ontology.loader import default_directory


def _frame_replace(path: Path, name: str, old: str, new: str) -> None:
    text = path.read_text()
    m = re.search(rf"^save_{re.escape(name)}\n.*?^    save_\n", text, re.S | re.M)
    assert m and old in m.group(0), (name, old)
    path.write_text(text.replace(m.group(0), m.group(0).replace(old, new, 1)))


def _changes(dict_copy):
    report = diff(load([default_directory()]), load([dict_copy]))
    return {(c.kind, c.name): c for c in report.changes}, report


def test_identical_sets_have_no_changes(dict_copy):
    changes, report = _changes(dict_copy)
    assert changes == {} and report.breaking == []


def test_removed_item_is_breaking(dict_copy):
    p = dict_copy / "mmcat_live.dic"
    text = p.read_text()
    m = re.search(r"^save__mmcat_live_image\.dozor_spots\n.*?^    save_\n", text, re.S | re.M)
    p.write_text(text.replace(m.group(0), ""))
    changes, report = _changes(dict_copy)
    assert changes[("item-removed", "_mmcat_live_image.dozor_spots")].breaking
    assert ("version", "mmcat_live.dic") in changes  # breaking without a new major version


def test_changed_units_and_narrowed_range_are_breaking(dict_copy):
    p = dict_copy / "mmcat_collection.dic"
    _frame_replace(p, "_mmcat_collection.beam_size_x", "micrometres", "millimetres")
    _frame_replace(p, "_mmcat_collection.oscillation_width", "    _item_range.maximum\n        0  0\n        0  .\n",
                   "    _item_range.maximum\n        0  0\n        0  10\n")
    changes, _ = _changes(dict_copy)
    assert changes[("units-changed", "_mmcat_collection.beam_size_x")].breaking
    assert changes[("range-narrowed", "_mmcat_collection.oscillation_width")].breaking


def test_widened_range_and_new_item_are_compatible(dict_copy):
    p = dict_copy / "mmcat_live.dic"
    _frame_replace(p, "_mmcat_live_image.noisiness_method_1", "        0  1\n        1  1\n", "        0  2\n        2  2\n")
    text = p.read_text()
    m = re.search(r"^save__mmcat_live_image\.dozor_spots\n.*?^    save_\n", text, re.S | re.M)
    p.write_text(text + "\n" + m.group(0).replace("dozor_spots", "dozor_spots_main"))
    changes, report = _changes(dict_copy)
    assert not changes[("range-widened", "_mmcat_live_image.noisiness_method_1")].breaking
    assert not changes[("item-added", "_mmcat_live_image.dozor_spots_main")].breaking
    assert report.breaking == []


def test_removed_enumeration_value_and_retargeted_mapping_are_breaking(dict_copy):
    p = dict_copy / "mmcat_processing.dic"
    _frame_replace(p, "_mmcat_processing.status", "        aborted  'Stopped by a user or a time limit.'\n", "")
    pl = dict_copy / "mmcat_live.dic"
    _frame_replace(pl, "_mmcat_live_image.n_spots_4A", "target             n_spots_4A", "target             n_spots_4A_old")
    _frame_replace(pl, "_mmcat_live_image.n_spots_no_ice", "dials      n_spots_no_ice", "dials      n_spots_4A")
    changes, _ = _changes(dict_copy)
    assert changes[("enum-removed", "_mmcat_processing.status")].breaking
    assert changes[("mapping-retargeted", "dials:n_spots_4a")].breaking


def test_deprecation_is_compatible(dict_copy):
    _frame_replace(dict_copy / "mmcat_live.dic", "_mmcat_live_image.dozor_spots", "    save_\n",
                   "    _mmcat_item.status                     deprecated\n    _mmcat_item.replaced_by                '_mmcat_live_image.n_spots_total'\n    save_\n")
    changes, report = _changes(dict_copy)
    assert not changes[("status-changed", "_mmcat_live_image.dozor_spots")].breaking
    assert report.breaking == []


def test_new_restrictions_are_breaking(dict_copy):
    p = dict_copy / "mmcat_collection.dic"
    _frame_replace(p, "_mmcat_collection.beam_shape", "    _item_type.code                        line\n",
                   "    _item_type.code                        code\n    loop_\n    _item_enumeration.value\n        ellipse\n        rectangle\n")
    changes, _ = _changes(dict_copy)
    assert changes[("type-changed", "_mmcat_collection.beam_shape")].breaking
    assert changes[("enum-introduced", "_mmcat_collection.beam_shape")].breaking


def test_changed_mapping_units_are_breaking_and_need_a_major_version(dict_copy):
    p = dict_copy / "mmcat_collection.dic"
    _frame_replace(p, "_mmcat_collection.beam_size_x", "millimetres", "micrometres")
    changes, report = _changes(dict_copy)
    assert changes[("mapping-units", "ispyb:datacollection.beamsizeatsamplex")].breaking
    assert ("version", "mmcat_collection.dic") in changes
    text = p.read_text().replace("_dictionary.version                    1.0.0", "_dictionary.version                    2.0.0", 1)
    text = text.replace("        1.0.0  2026-11-21  'First release.'", "        1.0.0  2026-11-21  'First release.'\n        2.0.0  2026-11-22  'Beam size stored in um.'")
    p.write_text(text)
    changes, _ = _changes(dict_copy)
    assert ("version", "mmcat_collection.dic") not in changes
