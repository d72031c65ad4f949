"""Tests of weight resolution (crl_uiqa.weights). Nothing here downloads."""
from __future__ import annotations

import hashlib

import pytest

from crl_uiqa import weights
from crl_uiqa.weights import KNOWN_WEIGHTS, WeightFile, cache_dir, resolve_weights, sha256sum

SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector


@pytest.fixture
def tiny_known(monkeypatch):
    """Register a small 'published' file whose checksum is that of b"abc" (URL never contacted)."""
    spec = WeightFile("tiny.bin", "https://example.invalid/tiny.bin", SHA256_ABC, "test")
    monkeypatch.setitem(KNOWN_WEIGHTS, "tiny.bin", spec)
    return spec


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setenv(weights.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(weights.ENV_NO_DOWNLOAD, "1")
    # as if the package shipped no weights: these tests are about the other places
    monkeypatch.setattr(weights, "PACKAGED_DIR", tmp_path / "no-packaged-weights")
    return tmp_path


def test_sha256sum_known_vectors(tmp_path):
    p = tmp_path / "abc.txt"
    p.write_bytes(b"abc")
    assert sha256sum(p) == SHA256_ABC
    assert sha256sum(p, chunk=1) == SHA256_ABC  # chunking does not matter
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * 5000
    big.write_bytes(data)
    assert sha256sum(big, chunk=4096) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256sum(tmp_path / "empty") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.ENV_CACHE, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(weights.ENV_CACHE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "crl-uiqa"


def test_explicit_file_and_folder(clean_env):
    d = clean_env / "mine"
    d.mkdir()
    (d / "SonoNet16.npz").write_bytes(b"x")
    assert resolve_weights("SonoNet16.npz", d / "SonoNet16.npz") == d / "SonoNet16.npz"
    assert resolve_weights("SonoNet16.npz", d) == d / "SonoNet16.npz"
    # an explicit path is used as given, whatever its name
    (d / "other.npz").write_bytes(b"y")
    assert resolve_weights("SonoNet16.npz", d / "other.npz") == d / "other.npz"


def test_explicit_path_missing_is_an_error_even_if_env_has_it(clean_env, monkeypatch):
    env = clean_env / "envdir"
    env.mkdir()
    (env / "SonoNet16.npz").write_bytes(b"x")
    monkeypatch.setenv(weights.ENV_DIR, str(env))
    with pytest.raises(FileNotFoundError, match="--weights"):
        resolve_weights("SonoNet16.npz", clean_env / "nowhere")
    empty = clean_env / "emptydir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="emptydir"):
        resolve_weights("SonoNet16.npz", empty)


def test_env_dir_before_cache(clean_env, monkeypatch, tiny_known):
    env = clean_env / "envdir"
    env.mkdir()
    (env / "tiny.bin").write_bytes(b"not abc")  # the env folder is trusted: no checksum check
    cached = cache_dir() / "weights" / "tiny.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"abc")
    monkeypatch.setenv(weights.ENV_DIR, str(env))
    assert resolve_weights("tiny.bin") == env / "tiny.bin"
    # env folder without the file: fall through to the cache
    (env / "tiny.bin").unlink()
    assert resolve_weights("tiny.bin") == cached


def test_cache_with_good_checksum_is_used(clean_env, tiny_known):
    cached = cache_dir() / "weights" / "tiny.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"abc")
    assert resolve_weights("tiny.bin") == cached


def test_cache_with_wrong_checksum_is_ignored(clean_env, tiny_known, monkeypatch):
    cached = cache_dir() / "weights" / "tiny.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"abd")  # corrupt / partial download
    monkeypatch.setenv(weights.ENV_DIR, str(clean_env / "envdir"))
    with pytest.raises(FileNotFoundError) as exc:
        resolve_weights("tiny.bin")
    msg = str(exc.value)
    assert "tiny.bin not found" in msg
    assert str(cached) in msg  # every place searched is listed
    assert weights.ENV_DIR in msg and str(clean_env / "envdir") in msg
    assert "download disabled" in msg


def test_unknown_file_in_cache_is_used_without_checksum(clean_env):
    cached = cache_dir() / "weights" / "custom.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"whatever")
    assert resolve_weights("custom.pt") == cached


def test_download_disabled_lists_searched_places(clean_env):
    with pytest.raises(FileNotFoundError) as exc:
        resolve_weights("SonoNet16.npz")
    msg = str(exc.value)
    assert str(cache_dir() / "weights" / "SonoNet16.npz") in msg
    assert "download disabled" in msg and weights.ENV_NO_DOWNLOAD in msg
    assert "--weights" in msg and weights.ENV_DIR in msg
    assert "the package" in msg and "missing or damaged" in msg


def test_download_false_without_env_never_downloads(clean_env, monkeypatch, tiny_known):
    monkeypatch.delenv(weights.ENV_NO_DOWNLOAD)

    def _fail(*a, **k):  # would be a network access
        raise AssertionError("download attempted")

    monkeypatch.setattr(weights, "download_weights", _fail)
    with pytest.raises(FileNotFoundError, match="download disabled"):
        resolve_weights("tiny.bin", download=False)


def test_unknown_name_has_no_download(clean_env, monkeypatch):
    monkeypatch.delenv(weights.ENV_NO_DOWNLOAD)
    with pytest.raises(FileNotFoundError) as exc:
        resolve_weights("nothing-like-this.npz")
    assert "download" not in str(exc.value).split("Searched:")[1]


def test_published_checksums_are_sha256_hex():
    for name, spec in KNOWN_WEIGHTS.items():
        assert spec.filename == name
        assert len(spec.sha256) == 64 and all(c in "0123456789abcdef" for c in spec.sha256)
        assert spec.url.startswith("https://")


@pytest.mark.parametrize("name", ["SonoNet16.npz", "SmallNet.npz"])
def test_shared_weights_match_published_checksums(sononet16_path, name):
    path = sononet16_path.parent / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    assert sha256sum(path) == KNOWN_WEIGHTS[name].sha256
