"""Shared fixtures: where the corpus and the reference dictionaries are, and the shipped ontology.

Real files are read from ../shared/corpus (or $MXCAT_CORPUS); tests that need them skip with the
reason when they are absent, and never copy them into the repository.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def corpus_dir() -> Path | None:
    env = os.environ.get("MXCAT_CORPUS")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "corpus", REPO / ".." / "shared" / "corpus"]:
        if cand.is_dir():
            return cand.resolve()
    return None


def _reference(name_in_corpus: str, env: str, debian: str) -> Path | None:
    if os.environ.get(env) and Path(os.environ[env]).is_file():
        return Path(os.environ[env])
    c = corpus_dir()
    if c is not None and (c / "dictionaries" / name_in_corpus).is_file():
        return c / "dictionaries" / name_in_corpus
    if Path(debian).is_file():
        return Path(debian)
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    c = corpus_dir()
    if c is None:
        pytest.skip("the shared corpus (../shared/corpus or $MXCAT_CORPUS) is not present")
    return c


@pytest.fixture(scope="session")
def ddl_path() -> Path:
    p = _reference("mmcif_ddl.dic", "MXCAT_MMCIF_DDL", "/usr/share/libcifpp/mmcif_ddl.dic")
    if p is None:
        pytest.skip("mmcif_ddl.dic not found (corpus, $MXCAT_MMCIF_DDL or Debian libcifpp-data)")
    return p


@pytest.fixture(scope="session")
def pdbx_path() -> Path:
    p = _reference("mmcif_pdbx_v50_v5.362.dic", "MXCAT_PDBX_DIC", "/usr/share/libcifpp/mmcif_pdbx.dic")
    if p is None:
        pytest.skip("the PDBx dictionary was not found (corpus, $MXCAT_PDBX_DIC or Debian libcifpp-data)")
    return p


@pytest.fixture(scope="session")
def onto():
    from mxcat.ontology import load

    return load()


@pytest.fixture()
def dict_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped dictionaries, for tests that break them on purpose."""
    from mxcat.ontology.loader import default_directory

    dst = tmp_path / "ontology"
    shutil.copytree(default_directory(), dst)
    return dst


@pytest.fixture()
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data directory used for the default outbox and embedded catalogue."""
    d = tmp_path / "data"
    monkeypatch.setenv("MXCAT_DATA_DIR", str(d))
    monkeypatch.delenv("MXCAT_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    return d


@pytest.fixture()
def dataset():
    from mxcat.records import Subject

    return Subject(facility="ESRF", beamline="ID30A-1", proposal="mx2532", session="20261121", sample="lyso1", dataset="lyso1_1_1")
