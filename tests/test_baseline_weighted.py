"""Weighted score: class-confidence and structure-detection versions, by hand."""
from __future__ import annotations

import numpy as np
import pytest

from crl_uiqa.baselines import run_baseline
from crl_uiqa.baselines.weighted import (
    class_weighted_score,
    detection_weighted_score,
    read_detections,
    read_structure_weights,
    target_plane,
    weighted_score,
)


# ----------------------------------------------------------------------------- plane confidences
def test_class_weighted_hand_values():
    probs = np.array([[0.2, 0.8, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    names = ("4CH", "3VV", "Abdominal")
    # (1 * 0.2 + 3 * 0.8) / 4 = 0.65 ; (0.5 + 1.5) / 4 = 0.5 ; 0
    np.testing.assert_allclose(class_weighted_score(probs, {"4ch": 1, "3VV": 3}, names), [0.65, 0.5, 0.0])
    # a single class is its probability; indices work as keys; abdomen is an alias of Abdominal
    np.testing.assert_allclose(class_weighted_score(probs, {"abdomen": 2.0}, names), [0, 0, 1])
    np.testing.assert_allclose(class_weighted_score(probs, {1: 1.0}, names), [0.8, 0.5, 0.0])


def test_target_plane_is_most_frequent_prediction():
    probs = np.array([[0.1, 0.9], [0.6, 0.4], [0.2, 0.8]])
    assert target_plane(probs) == 1
    assert target_plane(np.array([[0.9, 0.1], [0.1, 0.9]])) == 0  # tie: first class


@pytest.mark.parametrize(
    "weights, match",
    [
        ({}, "non-empty"),
        ({"4CH": -1}, ">= 0"),
        ({"4CH": 0}, "sum to 0"),
        ({"4CH": "x"}, "must be a number"),
        ({"Liver": 1}, "unknown plane"),
        ({7: 1}, "out of range"),
    ],
)
def test_class_weights_errors(weights, match):
    with pytest.raises(ValueError, match=match):
        class_weighted_score(np.full((1, 2), 0.5), weights, ("4CH", "3VV"))


# ----------------------------------------------------------------------------- detector version
@pytest.fixture
def det_files(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "detections.csv").write_text(
        "path,structure,confidence\n"
        "imgs/a.png,LV,0.9\n"
        "imgs/a.png,LV,0.5\n"      # the best detection of a structure counts
        "imgs/a.png,RV,0.6\n"
        "imgs/b.png,LA,1.0\n"
        "imgs/b.png,spine,0.7\n"   # no weight: ignored
    )
    (tmp_path / "weights.csv").write_text("structure,weight\nLV,2\nRV,1\nLA,1\n")
    return tmp_path


def test_detection_score_hand_values(det_files, caplog):
    paths = [det_files / "imgs" / "a.png", det_files / "imgs" / "b.png", det_files / "imgs" / "c.png"]
    q = detection_weighted_score(paths, det_files / "detections.csv", det_files / "weights.csv")
    # a: (2 * 0.9 + 1 * 0.6 + 0) / 4 = 0.6 ; b: (0 + 0 + 1 * 1.0) / 4 = 0.25 ; c: nothing detected = 0
    np.testing.assert_allclose(q, [0.6, 0.25, 0.0])
    assert "spine" in caplog.text
    # the same through the registry, with the images' files as paths
    imgs = [np.zeros((8, 8), np.float32)] * 3
    q2 = run_baseline("weighted", imgs, detections=str(det_files / "detections.csv"),
                      structure_weights=str(det_files / "weights.csv"), paths=[str(p) for p in paths])
    np.testing.assert_allclose(q2, q)
    # mappings instead of files
    q3 = detection_weighted_score(paths[:1], {str(paths[0]): {"LV": 0.9, "RV": 0.6}}, {"LV": 2, "RV": 1, "LA": 1})
    np.testing.assert_allclose(q3, [0.6])


def test_read_detection_files(det_files):
    det = read_detections(det_files / "detections.csv")
    assert det[str((det_files / "imgs" / "a.png").resolve())] == {"LV": 0.9, "RV": 0.6}
    assert read_structure_weights(det_files / "weights.csv") == {"LV": 2.0, "RV": 1.0, "LA": 1.0}


@pytest.mark.parametrize(
    "det, wts, match",
    [
        ("path,structure\nx.png,LV\n", "structure,weight\nLV,1\n", "missing column"),
        ("path,structure,confidence\nx.png,LV,1.5\n", "structure,weight\nLV,1\n", r"line 2: confidence must lie"),
        ("path,structure,confidence\nx.png,LV,high\n", "structure,weight\nLV,1\n", "not a number"),
        ("path,structure,confidence\nx.png,,0.5\n", "structure,weight\nLV,1\n", "empty path or structure"),
        ("path,structure,confidence\nx.png,LV,0.5\n", "structure,weight\nLV,1\nLV,2\n", "listed twice"),
        ("path,structure,confidence\nx.png,LV,0.5\n", "structure,weight\nLV,0\n", "sum to 0"),
        ("path,structure,confidence\nx.png,LV,0.5\n", "structure,weight\nLV,-1\n", ">= 0"),
        ("path,structure,confidence\nother.png,LV,0.5\n", "structure,weight\nLV,1\n", "none of the 1 images appears"),
    ],
)
def test_detection_file_errors(tmp_path, det, wts, match):
    (tmp_path / "d.csv").write_text(det)
    (tmp_path / "w.csv").write_text(wts)
    with pytest.raises(ValueError, match=match):
        detection_weighted_score([tmp_path / "x.png"], tmp_path / "d.csv", tmp_path / "w.csv")


def test_option_errors():
    imgs = [np.zeros((8, 8), np.float32)]
    with pytest.raises(ValueError, match="needs both"):
        weighted_score(imgs, detections="d.csv")
    with pytest.raises(ValueError, match="give paths="):
        weighted_score(imgs, detections="d.csv", structure_weights="w.csv")
    with pytest.raises(ValueError, match="2 paths for 1 images"):
        weighted_score(imgs, detections="d.csv", structure_weights="w.csv", paths=["a", "b"])
    with pytest.raises(ValueError, match="not both"):
        weighted_score(imgs, detections="d.csv", structure_weights="w.csv", plane="4CH", paths=["a"])
    with pytest.raises(ValueError, match="not both"):
        weighted_score(imgs, plane="4CH", class_weights={"4CH": 1})
    with pytest.raises(ValueError, match=r"images\[0\]: expected a grayscale"):
        weighted_score([np.zeros((2, 2, 2))])
    with pytest.raises(ValueError, match="has no option"):
        run_baseline("weighted", imgs, bogus=1)


# ----------------------------------------------------------------------------- with SonoNet
def test_plane_probability_on_example_planes(sononet16_path, examples_dir):
    import torch

    from crl_uiqa.backbones import get_backbone
    from crl_uiqa.io import read_gray, to_tensor

    torch.set_num_threads(1)
    net = get_backbone("sononet16", sononet16_path)
    crop = (115, 81, 620, 794)
    names = ["4CH", "3VV", "ABDOMINAL"]
    imgs = [read_gray(examples_dir / f"{n}.png", crop) for n in names]
    q = weighted_score(imgs, weights=net, device="cpu", plane="4CH")
    with torch.inference_mode():
        probs = net.embed(torch.stack([to_tensor(im, (224, 288)) for im in imgs]), "probs").double().numpy()
    np.testing.assert_allclose(q, probs[:, 1], atol=1e-6)  # 4CH is SonoNet class 1
    assert q.argmax() == 0
    # the references' most frequent plane is the target when no plane is given
    q_ref = run_baseline("weighted", imgs, references=imgs[:1], weights=net, device="cpu")
    np.testing.assert_allclose(q_ref, q, atol=1e-9)
    qc = weighted_score(imgs, weights=net, device="cpu", class_weights={"4CH": 1, "3VV": 1})
    np.testing.assert_allclose(qc, (probs[:, 1] + probs[:, 0]) / 2, atol=1e-6)
