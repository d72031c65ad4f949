"""What a user installing a wheel (not a checkout) gets: package data, metadata, `python -m crl_uiqa`,
one-line errors for missing or too old extras.

No wheel is built here (slow); these check the declarations a build reads and the code paths a bare
install takes. The wheel itself was tried by hand: README, "Install".
"""
from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

import crl_uiqa
from crl_uiqa import errors
from crl_uiqa.cli import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(crl_uiqa.__file__).resolve().parent
# tomllib is Python 3.11+; on 3.10 its model, tomli, comes with pytest (one of pytest's own requirements there)
tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _declared(path: Path) -> bool:
    """Whether pyproject's package-data globs put the file ``path`` (inside the package) into a wheel."""
    rel = path.relative_to(PACKAGE.parent)  # crl_uiqa/serving/static/app.js
    for pkg, globs in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        base = Path(*pkg.split("."))
        if base in rel.parents:
            inner = rel.relative_to(base).as_posix()
            if any(fnmatch.fnmatch(inner, g) and inner.count("/") == g.count("/") for g in globs):
                return True
    return False


def test_every_data_file_in_the_package_is_declared_as_package_data():
    """A non-Python file under src/crl_uiqa/ that no glob names is in a checkout but not in a wheel."""
    if not (ROOT / "src" / "crl_uiqa") == PACKAGE:
        pytest.skip("crl_uiqa is imported from an install, not this checkout")
    data = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    assert {p.name for p in data} >= {"py.typed", "SonoNet16.safetensors", "niqe_live_modelparameters.npz",
                                      "index.html", "app.js", "style.css", "LICENSE", "README-LIVE.txt"}
    missing = [str(p.relative_to(PACKAGE)) for p in data if not _declared(p)]
    assert not missing, f"not in pyproject's [tool.setuptools.package-data]: {missing}"


def test_licence_files_exist_and_name_the_shipped_third_party_notices():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["requires-python"] == ">=3.10"
    files = project["license-files"]
    for f in files:
        assert (ROOT / f).is_file(), f
    assert "src/crl_uiqa/backbones/weights/LICENSE" in files  # the SonoNet weights' Apache-2.0 text
    assert "src/crl_uiqa/baselines/data/README-LIVE.txt" in files  # the LIVE notice of BRISQUE/NIQE
    assert project["scripts"]["crl-uiqa"] == "crl_uiqa.cli:main"


def test_sdist_leaves_out_the_tests_it_could_not_run():
    manifest = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "prune tests" in manifest


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "crl_uiqa", "--version"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == f"crl-uiqa {crl_uiqa.__version__}"


def test_too_old_optional_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "json.too_new", None)  # a submodule the installed version lacks
    with pytest.raises(errors.MissingDependencyError) as exc:
        errors.optional_import("json", "dicom", purpose="reading X", minimum=("9.0", "json.too_new"))
    msg = str(exc.value)
    assert "\n" not in msg and "json >= 9.0" in msg and "pip install -U 'crl-uiqa[dicom]'" in msg
    assert errors.optional_import("json", "dicom", minimum=("2.0", "json.decoder")).dumps(1) == "1"


def test_select_on_a_dicom_with_pydicom_2_says_upgrade_the_extra(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pydicom")
    import numpy as np

    from _helpers import tiny_run, write_dicom_cine

    cine = write_dicom_cine(tmp_path / "cine.dcm", [np.full((48, 64), 40 * i, np.uint8) for i in range(3)])
    run = tiny_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)  # as in pydicom 2.x, which has no pydicom.pixels
    rc = main(["select", "--model", str(run), "--input", str(cine), "--out", str(tmp_path / "out"), "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == errors.EXIT_USER and len(err) == 1, err
    assert "pydicom >= 3.0" in err[0] and "crl-uiqa[dicom]" in err[0] and "Traceback" not in err[0]
