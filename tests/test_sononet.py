"""Tests of the SonoNet-16 port (crl_uiqa.backbones.sononet) and its use via crl_uiqa.embed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crl_uiqa.backbones import CLASS_NAMES, SonoNet, available_backbones, get_backbone
from crl_uiqa.backbones.sononet import standardize
from crl_uiqa.classify import classify_images, plane_index
from crl_uiqa.embed import Embeddings, compute_embeddings

torch.set_num_threads(1)

EXAMPLES_CROP = (115, 81, 620, 794)  # rows 115-734, columns 81-874 (removes the vendor overlay)

# the 13 example files and the class each one shows
EXPECTED_PLANES = {
    "3VV": "3VV",
    "4CH": "4CH",
    "ABDOMINAL": "Abdominal",
    "BRAIN-CB": "Brain (Cb.)",
    "BRAIN-TV": "Brain (Tv.)",
    "FEMUR": "Femur",
    "KIDNEYS": "Kidneys",
    "LIPS": "Lips",
    "LVOT": "LVOT",
    "PROFILE": "Profile",
    "RVOT": "RVOT",
    "SPINE-CORONAL": "Spine (cor.)",
    "SPINE-SAGITTAL": "Spine (sag.)",
}


@pytest.fixture(scope="module")
def model(sononet16_path):
    return get_backbone("sononet16", sononet16_path)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 224, 288, generator=g)


def test_plane_index_maps_file_names():
    for stem, plane in EXPECTED_PLANES.items():
        assert CLASS_NAMES[plane_index(stem)] == plane
    assert CLASS_NAMES[plane_index("abdomen")] == "Abdominal"
    with pytest.raises(ValueError, match="unknown plane"):
        plane_index("elbow")


def test_examples_are_classified_as_their_file_names(model, examples_dir):
    res = classify_images(examples_dir, backbone=model, crop=EXAMPLES_CROP, device="cpu", num_workers=0,
                          progress=False, batch_size=13)
    assert len(res.paths) == 13 and not res.failures
    got = {p.rsplit("/", 1)[-1].removesuffix(".png"): plane for p, plane in zip(res.paths, res.planes)}
    want = {stem: CLASS_NAMES[plane_index(stem)] for stem in EXPECTED_PLANES}
    assert got == want
    np.testing.assert_allclose(res.probs.sum(axis=1), 1.0, atol=1e-5)


def test_embedding_shapes_per_layer(model, batch):
    dims = {"block1": 16, "block2": 32, "block3": 64, "block4": 128, "block5": 128, "adaptation": 64,
            "logits": 14, "probs": 14}
    assert set(dims) == set(model.embedding_layers)
    with torch.inference_mode():
        out = {layer: model.embed(batch, layer) for layer in dims}
        logits = model(batch)
        fmap = model.feature_maps(batch)
    for layer, d in dims.items():
        assert out[layer].shape == (2, d), layer
        assert torch.isfinite(out[layer]).all(), layer
    np.testing.assert_allclose(out["probs"].sum(dim=1).numpy(), 1.0, atol=1e-5)
    torch.testing.assert_close(out["logits"], logits)
    torch.testing.assert_close(out["probs"], logits.softmax(dim=1))
    assert fmap.shape == (2, model.out_channels, 14, 18)  # 224/16 x 288/16
    torch.testing.assert_close(out["block5"], fmap.mean(dim=(2, 3)))
    assert (out["adaptation"] >= 0).all()  # pooled after a ReLU
    with pytest.raises(ValueError, match="unknown SonoNet layer"):
        model.embed(batch, "block6")


def test_standardize_zero_mean_std_255():
    g = torch.Generator().manual_seed(1)
    x = torch.stack([torch.rand(1, 20, 30, generator=g) * 0.1 + 0.4, torch.rand(1, 20, 30, generator=g)])
    y = standardize(x).double()
    np.testing.assert_allclose(y.flatten(1).mean(dim=1).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(y.flatten(1).std(dim=1).numpy(), 255.0, rtol=1e-3)
    # gain and offset invariance (the consequence noted in the docstring)
    torch.testing.assert_close(standardize(3 * x + 0.2), standardize(x), atol=1e-2, rtol=1e-4)


def test_constant_image_gives_no_nan(model):
    x = torch.full((2, 1, 224, 288), 0.5)
    x[1] = 0.0
    # exact: sums of 0.5 over 64512 pixels are exact in float32, so x - mean is exactly 0
    assert torch.equal(standardize(x), torch.zeros_like(x))
    with torch.inference_mode():
        for layer in model.embedding_layers:
            assert torch.isfinite(model.embed(x, layer)).all(), layer


def _save_npz(path, arrays):
    np.savez(path, **{f"arr_{i}": a for i, a in enumerate(arrays)})


def test_wrong_array_count_is_a_clear_error(tmp_path, sononet16_path):
    with np.load(sononet16_path) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    assert len(arrays) == 75
    _save_npz(tmp_path / "short.npz", arrays[:70])
    with pytest.raises(ValueError, match="expected 75 arrays.*found 70"):
        SonoNet(16).load_lasagne(tmp_path / "short.npz")


def test_wrong_shape_is_a_clear_error(tmp_path, sononet16_path):
    with np.load(sononet16_path) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    arrays[5] = arrays[5][:, :, :1, :1]  # layer 1's 3x3 kernel cut to 1x1
    _save_npz(tmp_path / "shape.npz", arrays)
    with pytest.raises(ValueError, match="layer 1 has shape"):
        SonoNet(16).load_lasagne(tmp_path / "shape.npz")


def test_unreadable_weights_are_a_clear_error(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a .npz weight file"):
        SonoNet(16).load_lasagne(tmp_path / "junk.npz")


def test_registry():
    assert "sononet16" in available_backbones()
    with pytest.raises(ValueError, match="unknown backbone"):
        get_backbone("resnet9000", pretrained=False)
    with pytest.raises(ValueError, match="cannot import backbone builder"):
        get_backbone("python:no_such_module_xyz:build")
    m = get_backbone("sononet16", pretrained=False)
    assert not m.training and m.input_size == (224, 288)


def test_compute_embeddings_from_files_and_save(model, examples_dir, tmp_path):
    paths = [str(examples_dir / "4CH.png"), str(tmp_path / "broken.png"), str(examples_dir / "FEMUR.png")]
    (tmp_path / "broken.png").write_text("nope")
    emb = compute_embeddings(paths, model, layer="adaptation", crop=EXAMPLES_CROP, device="cpu", num_workers=0,
                             progress=False)
    assert emb.paths == [paths[0], paths[2]]
    assert emb.vectors.shape == (2, 64) and emb.vectors.dtype == np.float32
    assert [f.path for f in emb.failures] == [paths[1]]
    for name in ("e.npy", "e.safetensors"):
        emb.save(tmp_path / name)
        back = Embeddings.load(tmp_path / name)
        np.testing.assert_array_equal(back.vectors, emb.vectors)
        assert back.paths == emb.paths
    assert Embeddings.load(tmp_path / "e.safetensors").layer == "adaptation"
    with pytest.raises(ValueError, match=".npy or .safetensors"):
        emb.save(tmp_path / "e.txt")


def test_embedding_paths_keep_unusual_names_and_match_their_vectors(tmp_path):
    """The .paths.txt beside an .npy was read with splitlines, which also splits names at \\r, \\x85 or \\u2028, and a
    name with a line break was written over two lines: either way every later path named the wrong vector, silently.
    Such names are kept (only \\n ends a line), a name with \\n is refused, and a count mismatch is an error."""
    from crl_uiqa.errors import InputError

    names = ["a b.png", "c\rd.png", "e\x85f\u2028g.png", "h.png"]
    emb = Embeddings(names, np.arange(8, dtype=np.float32).reshape(4, 2), "block4")
    for name in ("e.npy", "e.safetensors"):
        emb.save(tmp_path / name)
        assert Embeddings.load(tmp_path / name).paths == names
    with pytest.raises(InputError, match="line break"):
        Embeddings(["x\ny.png"], np.zeros((1, 2), np.float32), "block4").save(tmp_path / "n.npy")
    (tmp_path / "e.paths.txt").write_text("a.png\nb.png\n", encoding="utf-8")
    with pytest.raises(ValueError, match="2 paths for 4 embeddings"):
        Embeddings.load(tmp_path / "e.npy")


def test_smallnet_port_classifies_12_of_13_examples(examples_dir, sononet16_path):
    """SmallNet (flipped Lasagne kernels) gets every example plane but the abdominal one."""
    from crl_uiqa.backbones import get_backbone
    from crl_uiqa.classify import classify_images

    net = get_backbone("smallnet", sononet16_path.parent)
    res = classify_images(str(examples_dir), backbone=net, crop=(115, 81, 620, 794), num_workers=0, progress=False)
    truth = {"3VV": "3VV", "4CH": "4CH", "ABDOMINAL": "Abdominal", "BRAIN-CB": "Brain (Cb.)",
             "BRAIN-TV": "Brain (Tv.)", "FEMUR": "Femur", "KIDNEYS": "Kidneys", "LIPS": "Lips", "LVOT": "LVOT",
             "PROFILE": "Profile", "RVOT": "RVOT", "SPINE-CORONAL": "Spine (cor.)", "SPINE-SAGITTAL": "Spine (sag.)"}
    right = [truth[Path(p).stem] == plane for p, plane in zip(res.paths, res.planes)]
    assert sum(right) == 12
    assert [Path(p).stem for p, ok in zip(res.paths, right) if not ok] == ["ABDOMINAL"]


def test_smallnet_as_quality_trunk(sononet16_path):
    import torch

    from crl_uiqa.model import ModelConfig, build_model

    m = build_model(ModelConfig(backbone="smallnet", image_size=(112, 144)), weights=sononet16_path.parent)
    assert m(torch.rand(2, 1, 112, 144)).shape == (2,)


def test_class_maps_average_to_the_logits(model, batch):
    """The category-specific maps (weakly supervised localisation) are what the logits average: one map per class
    at 1/16 of the input size, for SonoNet-16 and SmallNet."""
    from crl_uiqa.backbones.sononet import SmallNet

    with torch.inference_mode():
        maps = model.eval().class_maps(batch)
        assert maps.shape == (2, 14, 14, 18)
        torch.testing.assert_close(maps.mean(dim=(2, 3)), model(batch), rtol=1e-5, atol=1e-5)
        small = SmallNet().eval()
        torch.testing.assert_close(small.class_maps(batch).mean(dim=(2, 3)), small(batch), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- batch norm folded for inference
def test_fold_batch_norm_by_hand():
    """A 1x1 convolution (weight 2, no bias) and a batch norm (mean 1, variance 3, eps 1, scale 4, shift 0.5) fold
    into one convolution of weight 2 * 4 / sqrt(3 + 1) = 4 and bias (0 - 1) * 4 / 2 + 0.5 = -1.5: an input 3 gives
    (6 - 1) / 2 * 4 + 0.5 = 10.5 either way."""
    from crl_uiqa.devices import fold_batch_norm

    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    bn = torch.nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(3.0)
        bn.weight.fill_(4.0)
        bn.bias.fill_(0.5)
    net = torch.nn.Sequential(conv, bn, torch.nn.ReLU()).eval()
    folded = fold_batch_norm(net)
    assert isinstance(folded[1], torch.nn.Identity) and isinstance(net[1], torch.nn.BatchNorm2d)  # a copy
    assert float(folded[0].weight.detach()) == pytest.approx(4.0) and float(folded[0].bias.detach()) == pytest.approx(-1.5)
    x = torch.full((1, 1, 2, 2), 3.0)
    assert torch.allclose(folded(x), torch.full_like(x, 10.5)) and torch.allclose(net(x), folded(x))
    # a batch norm that trains (its statistics move) or that keeps no statistics is left as it is
    assert fold_batch_norm(net.train()) is net
    stateless = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1, track_running_stats=False)).eval()
    assert fold_batch_norm(stateless) is stateless


def test_folded_sononet_scores_as_the_original_and_leaves_it_unchanged():
    """Every embedding layer of a SonoNet-16 with non-trivial batch-norm statistics is the same, to float rounding,
    from :func:`prepare_model`'s folded copy; the caller's network keeps its layers and weights; SmallNet (no batch
    norm) is returned as it is."""
    from _helpers import random_sononet
    from crl_uiqa.backbones.sononet import SmallNet
    from crl_uiqa.devices import prepare_model

    net = random_sononet(affine=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = prepare_model(net, torch.device("cpu"))
    assert folded is not net and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in folded.parameters() if p.dim() == 4)
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    x = torch.rand(3, 1, 64, 80)
    with torch.inference_mode():
        for layer in SonoNet.embedding_layers:
            a, b = net.embed(x, layer), folded.embed(x, layer)
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max())), layer
        assert torch.allclose(net.class_maps(x), folded.class_maps(x), rtol=1e-4, atol=1e-4)
    assert prepare_model(net, torch.device("cpu"), fold=False) is net
    small = SmallNet()
    assert prepare_model(small, torch.device("cpu")) is small


def test_prepare_model_folds_once_per_state_of_the_weights():
    """A caller that scores a frame at a time gets the copy folded at the first call; a weight changed in place
    (training, ``load_state_dict``) gives a new copy that computes with it."""
    from crl_uiqa.devices import prepare_model

    torch.manual_seed(0)
    net = SonoNet(16)
    cpu = torch.device("cpu")
    first = prepare_model(net, cpu)
    assert prepare_model(net, cpu) is first
    x = torch.rand(2, 1, 64, 80)
    with torch.no_grad():
        net.blocks[0][0][1].bias.add_(0.5)  # the first batch norm's shift
    second = prepare_model(net, cpu)
    assert second is not first
    with torch.inference_mode():
        assert torch.allclose(second.embed(x, "block1"), net.eval().embed(x, "block1"), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(first.embed(x, "block1"), second.embed(x, "block1"), atol=1e-3)
    net.load_state_dict(SonoNet(16).state_dict())
    assert prepare_model(net, cpu) is not second


def test_prepare_model_in_inference_mode_keeps_the_model_trainable_and_frees_it():
    """Scoring calls prepare_model in inference mode: the caller's model is still trainable afterwards, the copy can
    be run with gradients, a model made in inference mode (no version counters) is folded without the cache, and a
    model is freed when its caller drops it (also one with nothing to fold, kept as itself)."""
    import gc
    import weakref

    from crl_uiqa.backbones.sononet import SmallNet
    from crl_uiqa.devices import _FOLDED, prepare_model

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    net = SonoNet(16)
    x = torch.rand(1, 1, 64, 80)
    with torch.inference_mode():
        folded = prepare_model(net, cpu)
    assert not any(p.is_inference() for p in (*net.parameters(), *folded.parameters()))
    net.train()
    net.embed(x, "block2").sum().backward()  # the caller's model trains after scoring
    assert net.blocks[0][0][0].weight.grad is not None
    xg = x.clone().requires_grad_(True)
    folded.embed(xg, "block2").sum().backward()  # so does a gradient through the copy (a saliency map)
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    with torch.inference_mode():
        made_in_inference = SonoNet(16)
    a, b = prepare_model(made_in_inference, cpu), prepare_model(made_in_inference, cpu)
    assert a is not b and not any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    small = SmallNet()
    assert prepare_model(small, cpu) is small and prepare_model(small, cpu) is small
    refs = [weakref.ref(net), weakref.ref(small)]
    del net, small, folded
    gc.collect()
    assert all(r() is None for r in refs) and all(r() not in _FOLDED for r in refs)
