import os
import stat

import numpy as np
import pytest

from crl_uiqa.files import atomic_path, read_csv, write_csv, write_text


def test_atomic_write_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_outputs_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_csv_numpy_values_round_trip(tmp_path):
    write_csv(tmp_path / "s.csv", [{"path": "a.png", "score": np.float64(0.25), "n": np.int64(3)}], ["path", "score", "n"])
    assert read_csv(tmp_path / "s.csv") == [{"path": "a.png", "score": "0.25", "n": "3"}]


def test_safe_name_stays_one_component():
    from crl_uiqa.files import safe_name

    assert safe_name("..") == "output" and safe_name(".") == "output" and safe_name(" .. ", "scan") == "scan"
    assert safe_name("../x") == "_x" and safe_name("a/b\\c") == "a_b_c" and safe_name(".hidden") == "hidden"
    assert safe_name("scan 1") == "scan 1" and safe_name("ü.mp4") == "ü.mp4"
    assert "\n" not in safe_name("a\nb") and len(safe_name("x" * 500)) == 200
