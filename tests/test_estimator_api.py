"""CRLUIQA's front: settings that contradict each other are refused, predict honours strict."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crl_uiqa import CRLUIQA
from crl_uiqa.errors import ConfigError
from crl_uiqa.io import write_gray_png
from crl_uiqa.model import ModelConfig, build_model, save_model
from crl_uiqa.training import TrainConfig


def test_conflicting_settings_are_refused():
    with pytest.raises(ConfigError, match="not both"):
        CRLUIQA(train_config=TrainConfig(), epochs=3)  # epochs used to be dropped silently
    with pytest.raises(ConfigError, match="contradicts model_config"):
        CRLUIQA(model_config=ModelConfig(image_size=(112, 144)), image_size=(224, 288))
    est = CRLUIQA(model_config=ModelConfig(image_size=(112, 144)), image_size=(112, 144), device="cpu")
    assert est.model_config.image_size == (112, 144)
    assert CRLUIQA(epochs=3, device="cpu").train_config.epochs == 3
    assert CRLUIQA(image_size=(112, 144), device="cpu").model_config.image_size == (112, 144)


def test_predict_strict_false_gives_nan_for_unreadable(tmp_path):
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(32, 48)), pretrained=False), tmp_path / "run")
    est = CRLUIQA.load(tmp_path / "run", device="cpu", num_workers=0, progress=False)
    good = [str(write_gray_png(tmp_path / f"{i}.png", np.full((40, 52), 0.2 * (i + 1)))) for i in range(2)]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    paths = [good[0], str(bad), good[1]]
    with pytest.raises(ValueError, match="broken.png"):
        est.predict(paths)
    scores = est.predict(paths, strict=False)
    assert scores.shape == (3,) and np.isnan(scores[1]) and np.isfinite(scores[[0, 2]]).all()
    np.testing.assert_allclose(scores[[0, 2]], est.predict(good), rtol=1e-5, atol=1e-6)


def test_moved_names_stay_importable():
    import crl_uiqa.export as export
    import crl_uiqa.model as model
    import crl_uiqa.runtime as runtime
    import crl_uiqa.training as training

    assert export.load_runtime is runtime.load_runtime and export.Runtime is runtime.Runtime
    assert training.load_model is model.load_model and training.save_model is model.save_model


def _random_model_estimator(tmp_path):
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(image_size=(32, 48)), pretrained=False), tmp_path / "run")
    return CRLUIQA.load(tmp_path / "run", device="cpu", num_workers=0, progress=False)


def test_images_in_memory_score_as_their_files(tmp_path):
    """predict on arrays (gray, RGB, 16-bit, a stack), PIL images and tensors gives the scores of the same pixels
    saved as files: one conversion policy for both (crl_uiqa.io.gray_array / read_gray)."""
    from PIL import Image

    est = _random_model_estimator(tmp_path)
    rng = np.random.default_rng(0)
    gray = (rng.random((40, 52)) * 255).astype(np.uint8)
    rgb = (rng.random((40, 52, 3)) * 255).astype(np.uint8)
    deep = (rng.random((40, 52)) * 65535).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(deep).save(tmp_path / "d.png")
    files = est.predict([str(tmp_path / f) for f in ("g.png", "c.png", "d.png")])
    np.testing.assert_allclose(est.predict([gray, rgb, deep]), files, rtol=1e-6, atol=1e-6)
    # one image, a stack, a PIL image, a tensor, float in [0, 1], (H, W, 1), RGBA
    np.testing.assert_allclose(est.predict(gray), files[:1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(est.predict(np.stack([gray, gray])), files[[0, 0]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(est.predict(Image.open(tmp_path / "c.png")), files[1:2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(est.predict(torch.from_numpy(gray.copy())), files[:1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(est.predict(gray.astype(np.float32) / 255), files[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.predict(gray[..., None]), files[:1], rtol=1e-6, atol=1e-6)
    rgba = np.concatenate([rgb, np.zeros((40, 52, 1), np.uint8)], axis=2)
    np.testing.assert_allclose(est.predict(rgba), files[1:2], rtol=1e-6, atol=1e-6)
    # a crop box applies to arrays as to files
    box = (4, 6, 30, 40)
    np.testing.assert_allclose(est.predict(gray, crop=box), est.predict([str(tmp_path / "g.png")], crop=box),
                               rtol=1e-6, atol=1e-6)


def test_images_in_memory_that_cannot_be_scored_are_named(tmp_path):
    from crl_uiqa.io import ImageReadError, gray_array

    est = _random_model_estimator(tmp_path)
    ok = np.zeros((40, 52), np.uint8)
    with pytest.raises(ImageReadError, match=r"image 1: .*outside \[0, 1\]"):
        est.predict([ok, np.full((40, 52), 200.0)])  # 0-255 data as float: not silently clipped
    with pytest.raises(ImageReadError, match="int32"):
        est.predict(ok.astype(np.int32))
    with pytest.raises(ImageReadError, match="not finite"):
        gray_array(np.full((8, 8), np.nan))
    with pytest.raises(ImageReadError, match="too small"):
        est.predict(np.zeros((3, 52), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        est.predict(np.zeros((2, 2, 40, 52, 1), np.uint8))
    assert gray_array(np.array([[True, False]])).tolist() == [[1.0, 0.0]]
    assert gray_array(np.array([[65535, 0]], np.uint16)).tolist() == [[1.0, 0.0]]


def _sklearn_clone(est):
    """What sklearn.base.clone does (sklearn is not a dependency): rebuild from get_params(deep=False), deep-copying
    each parameter, and check the constructor kept every parameter as given."""
    import copy

    params = {k: copy.deepcopy(v) for k, v in est.get_params(deep=False).items()}
    new = type(est)(**params)
    for name, value in new.get_params(deep=False).items():
        assert value is params[name], name
    return new


def test_settings_follow_the_sklearn_protocol(tmp_path):
    """repr shows the settings given, get_params/set_params/clone work, bad values are ConfigErrors when the
    estimator is made, and using it unfitted is a NotFittedError (a CRLUIQAError, still a RuntimeError)."""
    from crl_uiqa.errors import CRLUIQAError, NotFittedError

    est = CRLUIQA(k=3, image_size=(112, 144), epochs=2, device="cpu")
    assert repr(est) == "CRLUIQA(k=3, image_size=(112, 144), device='cpu', epochs=2)"
    twin = _sklearn_clone(est)
    assert twin.get_params() == est.get_params() and twin.train_config.epochs == 2 and twin.pseudo.k == 3
    assert est.set_params(k=4, lr=0.1) is est and est.pseudo.k == 4 and est.train_config.lr == 0.1
    assert est.train_config.epochs == 2 and est.model_config.anchor["k"] == 4
    with pytest.raises(ConfigError, match="k .--k. must be >= 1"):
        est.set_params(k=0)
    assert est.pseudo.k == 4  # a refused change leaves the settings as they were
    loaded = _random_model_estimator(tmp_path)
    _sklearn_clone(loaded)
    # sklearn's check_is_fitted asks this first; the trailing-underscore attributes exist (None) before fit
    assert loaded.__sklearn_is_fitted__() and not est.__sklearn_is_fitted__()
    assert loaded.set_params(batch_size_eval=8).model_ is not None  # set_params keeps the fitted model
    for bad in (dict(image_size=5), dict(progress="x"), dict(paper="yes"), dict(calibrate_margins=1),
                dict(train_config={"epochs": 2}), dict(model_config={}), dict(epoch=2)):
        with pytest.raises(ConfigError):
            CRLUIQA(device="cpu", **bad)
    with pytest.raises(NotFittedError, match="not fitted") as info:
        CRLUIQA(device="cpu").predict(np.zeros((40, 52), np.uint8))
    assert isinstance(info.value, CRLUIQAError) and isinstance(info.value, RuntimeError)


def test_load_takes_the_settings_of_use_only(tmp_path):
    _random_model_estimator(tmp_path)
    with pytest.raises(ConfigError, match="k is the saved model's"):
        CRLUIQA.load(tmp_path / "run", device="cpu", k=3)  # was a TypeError: multiple values for 'k'
    assert CRLUIQA.load(tmp_path / "run", device="cpu", batch_size_eval=4).batch_size_eval == 4


def test_an_estimator_pickles_with_its_model(tmp_path):
    """In memory (process pools, deepcopy) an estimator pickles; files stay safetensors (save/load)."""
    import pickle

    est = _random_model_estimator(tmp_path)
    frames = np.random.default_rng(1).integers(0, 256, (3, 40, 52)).astype(np.uint8)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(est)).predict(frames), est.predict(frames), atol=1e-7)


def test_channel_first_batches_score_as_their_images(tmp_path):
    """(N, C, H, W) batches, torch's and MONAI's layout, are N images (they were refused), as (N, H, W, C) are."""
    est = _random_model_estimator(tmp_path)
    rng = np.random.default_rng(2)
    rgb = (rng.random((2, 40, 52, 3)) * 255).astype(np.uint8)
    expected = est.predict(list(rgb))
    np.testing.assert_allclose(est.predict(torch.from_numpy(rgb).permute(0, 3, 1, 2)), expected, atol=1e-6)
    np.testing.assert_allclose(est.predict(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))), expected, atol=1e-6)
    gray = torch.rand(2, 1, 40, 52)
    np.testing.assert_allclose(est.predict(gray), est.predict(list(gray[:, 0])), atol=1e-6)


def test_evaluate_without_pairs_says_so(tmp_path):
    from crl_uiqa.errors import InputError

    with pytest.raises(InputError, match="no pairs to evaluate"):
        _random_model_estimator(tmp_path).evaluate([])  # was list_images' 'no images to read'


def test_a_missing_input_is_a_crl_uiqa_error_and_still_file_not_found(tmp_path):
    """Missing images, models, CSVs and weights raise NotFoundError: a CRLUIQAError as errors.py promises for every
    input problem (they were plain FileNotFoundError) and still a FileNotFoundError."""
    from crl_uiqa.errors import CRLUIQAError, NotFoundError
    from crl_uiqa.io import list_images
    from crl_uiqa.runtime import load_runtime
    from crl_uiqa.tables import read_pairs
    from crl_uiqa.weights import resolve_weights

    missing = tmp_path / "absent"
    for call in (lambda: list_images(str(missing / "a.png")), lambda: CRLUIQA.load(missing, device="cpu"),
                 lambda: load_runtime(missing), lambda: read_pairs(missing / "pairs.csv"),
                 lambda: resolve_weights("SonoNet16.npz", missing / "w.npz")):
        with pytest.raises(NotFoundError) as info:
            call()
        assert isinstance(info.value, CRLUIQAError) and isinstance(info.value, FileNotFoundError)
        assert "\n" not in str(info.value)


def test_runtime_takes_a_nested_list_and_raises_crl_uiqa_errors(tmp_path):
    """A Runtime scores a batch given as a nested list as its array (it raised AttributeError: no .shape); a
    wrong shape and an unknown kind are CRLUIQAErrors (still ValueError)."""
    from crl_uiqa.errors import ConfigError, InputError
    from crl_uiqa.runtime import load_runtime

    _random_model_estimator(tmp_path)
    rt = load_runtime(tmp_path / "run", device="cpu")
    batch = np.random.default_rng(3).random((2, 1, 32, 48)).astype(np.float32)
    np.testing.assert_allclose(rt(batch.tolist()), rt(batch), atol=1e-6)
    with pytest.raises(InputError, match=r"expected a batch \(B, 1, 32, 48\)"):
        rt(batch[:, 0])
    with pytest.raises(ConfigError, match="runtime must be one of"):
        load_runtime(tmp_path / "run", kind="tf")


def test_predict_input_mistakes_are_crl_uiqa_errors_that_say_what(tmp_path):
    """No images, an empty folder, a path among arrays, a 5-D array: InputError/ImageReadError (CRLUIQAError and
    ValueError), each saying what is wrong (a path among arrays was 'got shape ()')."""
    from crl_uiqa.errors import InputError
    from crl_uiqa.io import ImageReadError

    est = _random_model_estimator(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images to read"):
        est.predict([])
    with pytest.raises(InputError, match="no images .* found under folder"):
        est.predict(str(tmp_path / "empty"))
    with pytest.raises(ImageReadError, match=r"image 1: is a path .*not both"):
        est.predict([np.zeros((40, 52), np.uint8), str(tmp_path / "a.png")])
    with pytest.raises(InputError, match="shape"):
        est.predict(np.zeros((2, 2, 40, 52, 1), np.uint8))


def test_the_public_surface():
    import crl_uiqa

    assert "CRLUIQA" in dir(crl_uiqa)  # tab completion finds the lazily loaded estimator
    assert set(crl_uiqa.__all__) <= set(dir(crl_uiqa)) and crl_uiqa.CRLUIQA is CRLUIQA


def test_a_malformed_crop_or_strict_is_a_setting_error(tmp_path):
    """A crop that is not four integers was Python's unpacking ValueError (or int('...')); strict='no' was
    taken as true. Both are ConfigErrors, with the rule of the command line's --crop."""
    est = _random_model_estimator(tmp_path)
    frame = np.zeros((40, 52), np.uint8)
    for crop in ((1, 2, 3), "0,0,10,10", (0, 0, 10.5, 10), (-1, 0, 10, 10)):
        with pytest.raises(ConfigError, match="crop"):
            est.predict(frame, crop=crop)
    with pytest.raises(ConfigError, match="strict must be true or false"):
        est.predict(frame, strict="no")
    np.testing.assert_allclose(est.predict(frame, crop=np.array([2, 3, 30, 40])), est.predict(frame, crop=(2, 3, 30, 40)))
