"""`mxcat ontology lint`: the shipped dictionaries pass; deliberately broken copies fail with file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mxcat.ontology.lint import lint


def test_shipped_dictionaries_pass(ddl_path, pdbx_path):
    report = lint(ddl=ddl_path, pdbx=pdbx_path)
    assert report.problems == []
    assert report.ddl == ddl_path and report.pdbx == pdbx_path
    assert report.n_items > 300


def test_missing_ddl_is_an_error_unless_skipped_on_purpose(monkeypatch, tmp_path):
    monkeypatch.setattr("mxcat.ontology.lint.DDL_SEARCH", ())
    monkeypatch.delenv("MXCAT_MMCIF_DDL", raising=False)
    report = lint(pdbx=None)
    assert any(p.rule == "ddl-missing" for p in report.errors)
    assert not any(p.rule == "ddl-missing" for p in lint(require_ddl=False).problems)


def _edit(path: Path, old: str, new: str, count: int = 1) -> int:
    """Replace text in a dictionary copy; return the 1-based line of the first replacement."""
    text = path.read_text()
    assert old in text, old
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, count))
    return line


def _frame(text: str, name: str) -> str:
    m = re.search(rf"^save_{re.escape(name)}\n.*?^    save_\n", text, re.S | re.M)
    assert m, name
    return m.group(0)


def _edit_frame(path: Path, name: str, old: str, new: str) -> int:
    text = path.read_text()
    frame = _frame(text, name)
    assert old in frame, (name, old)
    line = text[: text.index(frame) + frame.index(old)].count("\n") + 1
    path.write_text(text.replace(frame, frame.replace(old, new, 1), 1))
    return line


def _run(dict_copy, ddl_path, pdbx_path):
    return lint([dict_copy], ddl=ddl_path, pdbx=pdbx_path)


def _assert_rule(report, rule, file_name, line=None):
    hits = [p for p in report.errors if p.rule == rule]
    assert hits, f"no {rule} problem in {[str(p) for p in report.problems]}"
    assert any(Path(p.path).name == file_name for p in hits), [str(p) for p in hits]
    if line is not None:
        assert any(p.line is not None and abs(p.line - line) <= 6 for p in hits), ([str(p) for p in hits], line)
    return hits


def test_cif_syntax_error(dict_copy, ddl_path, pdbx_path):
    line = _edit(dict_copy / "mmcat_live.dic", "save__mmcat_live_image.hit\n", "save__mmcat_live_image.hit\n    loop_\n    _x.y\n    _x.z\n    1 2 3\n")
    _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "cif-syntax", "mmcat_live.dic", line)


# One broken line in one frame -> the rule that must report it, at that line.
FRAME_EDITS = [
    pytest.param("mmcat_live.dic", "_mmcat_live_image.hit", "_item_type.code",
                 "_item_type.kode", "ddl2", id="ddl2_unknown_attribute"),
    pytest.param("mmcat_collection.dic", "_mmcat_collection.flux", "_item.mandatory_code                   no",
                 "_item.mandatory_code                   maybe", "ddl2", id="ddl2_enumeration"),
    pytest.param("mmcat_collection.dic", "_mmcat_collection.flux", "    _item_units.code                       photons_per_second\n",
                 "", "units-missing", id="numeric_item_without_units"),
    pytest.param("mmcat_collection.dic", "_mmcat_collection.flux", "photons_per_second",
                 "photons_per_fortnight", "units-unknown", id="unknown_unit"),
    pytest.param("mmcat_collection.dic", "_mmcat_collection.flux", "_item_type.code                        float",
                 "_item_type.code                        real", "type-unknown", id="unknown_type"),
    pytest.param("mmcat_live.dic", "_mmcat_live_image.noisiness_method_1", "        0  1\n",
                 "        1  0\n", "range", id="inverted_range"),
    pytest.param("mmcat_processing.dic", "_reflns.mmcat_ISa", "    _pdbx_item_range.maximum\n        5    5\n",
                 "    _pdbx_item_range.maximum\n        -5   -5\n", "range", id="advisory_range_outside_the_hard_range"),
    pytest.param("mmcat_live.dic", "_mmcat_live_image.n_spots_4A", "target             n_spots_4A",
                 "target             n_spots_total", "mapping-duplicate", id="mapping_target_claimed_by_two_items"),
    pytest.param("mmcat_live.dic", "_mmcat_live_image.n_spots_4A", "scheme             dials",
                 "scheme             dialz", "mapping-scheme", id="mapping_to_an_undeclared_scheme"),
    pytest.param("mmcat_live.dic", "_mmcat_live_image.dozor_spots", "    save_\n",
                 "    _mmcat_item.status                     deprecated\n    save_\n", "deprecation", id="deprecated_item_needs_a_replacement"),
    pytest.param("mmcat_live.dic", "_mmcat_live_image.dozor_spots", "_item.category_id                      mmcat_live_image",
                 "_item.category_id                      mmcat_live_imaje", "category-unknown", id="unknown_category"),
    pytest.param("mmcat_pdbx.dic", "_reflns.pdbx_Rmerge_I_obs", "_item_units.code                       none",
                 "_item_units.code                       percent", "pdbx-redefined", id="unitless_pdbx_item_cannot_become_a_percentage"),
]


@pytest.mark.parametrize(("file_name", "frame", "old", "new", "rule"), FRAME_EDITS)
def test_a_broken_frame_is_reported(dict_copy, ddl_path, pdbx_path, file_name, frame, old, new, rule):
    line = _edit_frame(dict_copy / file_name, frame, old, new)
    _assert_rule(_run(dict_copy, ddl_path, pdbx_path), rule, file_name, line)


def test_ddl2_value_form(dict_copy, ddl_path, pdbx_path):
    # a category id with a space breaks the idname type of mmcif_ddl.dic
    line = _edit_frame(dict_copy / "mmcat_collection.dic", "_mmcat_collection.flux", "_item.category_id                      mmcat_collection",
                       "_item.category_id                      'mmcat collection'")
    report = _run(dict_copy, ddl_path, pdbx_path)
    _assert_rule(report, "ddl2", "mmcat_collection.dic", line)


def test_bad_type_regex(dict_copy, ddl_path, pdbx_path):
    _edit(dict_copy / "mmcat_ddl-ext.dic", "idname                 uchar  '[A-Za-z0-9_]+'", "idname                 uchar  '[A-Za-z0-9_+'")
    report = _run(dict_copy, ddl_path, pdbx_path)
    assert any(p.rule == "regex" for p in report.errors), [str(p) for p in report.problems]


def test_non_exact_mapping_needs_a_note(dict_copy, ddl_path, pdbx_path):
    _edit_frame(dict_copy / "mmcat_live.dic", "_mmcat_live_image.n_spots_4A", "  exact", "  close")
    _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "mapping-note", "mmcat_live.dic")


def test_mapping_selector_must_be_declared(dict_copy, ddl_path, pdbx_path):
    text = (dict_copy / "mmcat_pdbx.dic").read_text()
    frame = _frame(text, "_reflns_shell.pdbx_CC_half")
    (dict_copy / "mmcat_pdbx.dic").write_text(text.replace(frame, frame.replace("  outer  ", "  middle ", 1)))
    _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "mapping-selector", "mmcat_pdbx.dic")


def test_icat_name_and_units_must_stay_unique(dict_copy, ddl_path, pdbx_path):
    # two items that both claim the same ESRF name (under different row conditions) export the same ICAT pair
    _edit_frame(dict_copy / "mmcat_collection.dic", "_mmcat_collection.flux_end", "MX_fluxEnd               .", "MX_flux                  a=1")
    _edit_frame(dict_copy / "mmcat_collection.dic", "_mmcat_collection.flux", "MX_flux                              .", "MX_flux                              a=2")
    report = _run(dict_copy, ddl_path, pdbx_path)
    assert any(p.rule == "icat-unique" for p in report.errors), [str(p) for p in report.problems]


def test_adopted_pdbx_item_cannot_change_units(dict_copy, ddl_path, pdbx_path):
    line = _edit_frame(dict_copy / "mmcat_pdbx.dic", "_reflns.d_resolution_high", "_item_units.code                       angstroms",
                       "_item_units.code                       nanometres")
    hits = _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "pdbx-redefined", "mmcat_pdbx.dic", line)
    assert "units" in hits[0].message


def test_new_items_need_the_mmcat_prefix(dict_copy, ddl_path, pdbx_path):
    _edit(dict_copy / "mmcat_processing.dic", "save__reflns.mmcat_ISa\n", "save__reflns.ISa\n")
    _edit(dict_copy / "mmcat_processing.dic", "'_reflns.mmcat_ISa'", "'_reflns.ISa'")
    _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "pdbx-redefined", "mmcat_processing.dic")


def test_duplicate_definition(dict_copy, ddl_path, pdbx_path):
    frame = _frame((dict_copy / "mmcat_live.dic").read_text(), "_mmcat_live_image.hit")
    with (dict_copy / "mmcat_collection.dic").open("a") as f:
        f.write("\n" + frame)
    hits = _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "duplicate", "mmcat_live.dic")
    assert "mmcat_collection.dic" in hits[0].message  # both places are named


def test_duplicate_frame_in_one_file_is_a_syntax_error(dict_copy, ddl_path, pdbx_path):
    text = (dict_copy / "mmcat_live.dic").read_text()
    (dict_copy / "mmcat_live.dic").write_text(text + "\n" + _frame(text, "_mmcat_live_image.hit"))
    hits = _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "cif-syntax", "mmcat_live.dic")
    assert "duplicate" in hits[0].message and hits[0].line == text.count("\n") + 2


def test_version_must_be_semantic_and_in_the_history(dict_copy, ddl_path, pdbx_path):
    _edit(dict_copy / "mmcat_live.dic", "_dictionary.version                    1.0.0", "_dictionary.version                    1.1")
    report = _run(dict_copy, ddl_path, pdbx_path)
    _assert_rule(report, "version", "mmcat_live.dic")
    _assert_rule(report, "history", "mmcat_live.dic")


def test_flattening_selector_values_come_from_the_enumeration(dict_copy, ddl_path, pdbx_path):
    _edit(dict_copy / "mmcat_pdbx.dic", "    _mmcat_category_selector.value\n        inner\n", "    _mmcat_category_selector.value\n        innermost\n")
    _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "flatten", "mmcat_pdbx.dic")


def test_loose_mapping_of_an_unknown_item(dict_copy, ddl_path, pdbx_path):
    with (dict_copy / "mmcat_live.dic").open("a") as f:
        f.write("\nloop_\n_mmcat_item_mapping.name\n_mmcat_item_mapping.scheme\n_mmcat_item_mapping.target\n"
                "_mmcat_item_mapping.target_selector\n'_reflns.pdbx_CC_halff' dials cc .\n")
    _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "mapping-item", "mmcat_live.dic")


def test_mappings_of_flattened_items_need_a_selector(dict_copy, ddl_path, pdbx_path):
    _edit_frame(dict_copy / "mmcat_pdbx.dic", "_reflns_shell.pdbx_CC_half", "  outer  ", "  .      ")
    hits = _assert_rule(_run(dict_copy, ddl_path, pdbx_path), "mapping-selector", "mmcat_pdbx.dic")
    assert "needs a selector" in hits[0].message
