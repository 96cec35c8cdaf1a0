"""The wheel ships the dictionaries: build it, install it in a fresh virtual environment, load mmCAT there."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                   check=True, timeout=300)
    (whl,) = out.glob("mxcat-*.whl")
    return whl


def test_wheel_contains_the_dictionaries(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("mxcat/_ontology/") and n.endswith(".dic"))
    assert [Path(n).name for n in shipped] == sorted(p.name for p in (REPO / "ontology").glob("*.dic"))
    assert "mxcat/py.typed" in names


@pytest.mark.slow
def test_fresh_venv_loads_the_packaged_ontology(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--prefer-binary", str(wheel)], check=True, timeout=900)
    code = (
        "import mxcat, importlib.resources as r; from mxcat import ontology;"
        "o = ontology.load(); d = r.files('mxcat') / '_ontology';"
        "assert d.is_dir(), d; assert str(o.components[0].path).startswith(str(d)), o.components[0].path;"
        "print(mxcat.__file__, len(o.items), o.resolve('MX_detectorDistance'))"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(env_dir) in r.stdout and "mmcat_collection.detector_distance" in r.stdout
    r = subprocess.run([str(env_dir / "bin" / "mxcat"), "ontology", "lint", "--no-ddl"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
