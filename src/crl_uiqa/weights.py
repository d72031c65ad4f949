"""Where pretrained weights come from.

Resolution order for a weight file (e.g. ``SonoNet16.npz``):

1. an explicit path given by the user (``--weights PATH``: the file itself or a
   folder that holds it);
2. the folder named by the environment variable ``CRL_UIQA_WEIGHTS_DIR``;
3. the copy shipped inside the package (SonoNet-16 and SmallNet, converted to
   safetensors: the same float32 arrays under the same names; Apache-2.0, the
   licence text beside them in ``crl_uiqa/backbones/weights/``), used only
   when its SHA-256 matches the one recorded here;
4. the user cache (``$CRL_UIQA_CACHE`` or ``$XDG_CACHE_HOME/crl-uiqa`` or
   ``~/.cache/crl-uiqa``) ``/weights/``;
5. a download of the public file into that cache, accepted only when its
   SHA-256 matches the published checksum. Setting ``CRL_UIQA_NO_DOWNLOAD=1``
   forbids the download (the test suite does).
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import NotFoundError
from .files import atomic_path

log = logging.getLogger(__name__)

ENV_DIR = "CRL_UIQA_WEIGHTS_DIR"
ENV_CACHE = "CRL_UIQA_CACHE"
ENV_NO_DOWNLOAD = "CRL_UIQA_NO_DOWNLOAD"


@dataclass(frozen=True)
class WeightFile:
    """A public weight file: its name, where to fetch it, and its checksum."""

    filename: str
    url: str
    sha256: str
    licence: str


_SONONET_BASE = "https://github.com/baumgach/SonoNet-weights/raw/master/"

KNOWN_WEIGHTS: dict[str, WeightFile] = {
    "SonoNet16.npz": WeightFile(
        "SonoNet16.npz",
        _SONONET_BASE + "SonoNet16.npz",
        "bbbf9dde2b3af686c247a3074d890ceb685cd63fc1fc2af7e704edc07810c53f",
        "Apache-2.0 (Baumgartner et al., IEEE TMI 2017)",
    ),
    "SmallNet.npz": WeightFile(
        "SmallNet.npz",
        _SONONET_BASE + "SmallNet.npz",
        "5c85b2463cbca099a8db86126a002b1a0f35f70764f182d5d4aa88cef15b581f",
        "Apache-2.0 (Baumgartner et al., IEEE TMI 2017)",
    ),
}


# The published weights shipped as package data (tools/package_weights.py converts them):
# the name asked for -> (the shipped file, its SHA-256, checked at every load).
PACKAGED_DIR = Path(__file__).resolve().parent / "backbones" / "weights"
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    "SonoNet16.npz": ("SonoNet16.safetensors", "6ac78830abe5e4a7d17ce39b8d1dbd11ea06a994c6d95682c05ca98ca0f69e7f"),
    "SmallNet.npz": ("SmallNet.safetensors", "8727b038a4e32beb5459fd116d0fff7f6baf295c08795fdeb230713a0cc78365"),
}


def packaged_weights(filename: str) -> Path | None:
    """The shipped copy of ``filename`` when it is installed and intact, else None (with a warning
    when it is there but its checksum is wrong)."""
    entry = PACKAGED_WEIGHTS.get(filename)
    if entry is None:
        return None
    p = PACKAGED_DIR / entry[0]
    if not p.is_file():
        return None
    if sha256sum(p) != entry[1]:
        log.warning("the packaged %s is damaged (wrong SHA-256); reinstall crl-uiqa. Ignoring it", p)
        return None
    return p


def cache_dir() -> Path:
    """The folder where downloaded weights are kept."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crl-uiqa"


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def resolve_weights(filename: str, path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Find the weight file ``filename`` (see the module docstring for the order).

    Raises
    ------
    FileNotFoundError
        When the file is nowhere to be found and cannot be downloaded; the
        message lists every place that was searched.
    """
    searched: list[str] = []
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / filename
        if p.is_file():
            return p
        raise NotFoundError(f"weights not found at {p} (given with --weights)")
    env = os.environ.get(ENV_DIR)
    if env:
        p = Path(env).expanduser() / filename
        if p.is_file():
            return p
        searched.append(f"${ENV_DIR}={env}")
    shipped = packaged_weights(filename)
    if shipped is not None:
        return shipped
    if filename in PACKAGED_WEIGHTS:
        searched.append(f"the package ({PACKAGED_DIR / PACKAGED_WEIGHTS[filename][0]}: missing or damaged)")
    cached = cache_dir() / "weights" / filename
    known = KNOWN_WEIGHTS.get(filename)
    if cached.is_file():
        if known is None or sha256sum(cached) == known.sha256:
            return cached
        log.warning("cached %s has a wrong checksum; ignoring it", cached)
    searched.append(str(cached))
    no_dl = os.environ.get(ENV_NO_DOWNLOAD, "").strip() not in ("", "0")
    if known is not None and download and not no_dl:
        try:
            return download_weights(known, cached)
        except OSError as exc:  # network errors are OSError subclasses
            searched.append(f"download from {known.url} failed: {exc}")
    elif known is not None:
        searched.append(f"download disabled (${ENV_NO_DOWNLOAD} set or download=False)")
    raise NotFoundError(
        f"{filename} not found. Give it with --weights PATH or set {ENV_DIR}. Searched: "
        + "; ".join(searched)
    )


def download_weights(spec: WeightFile, dest: Path) -> Path:
    """Download ``spec`` to ``dest`` atomically and verify its checksum."""
    from .progress import progress

    log.info("downloading %s (%s) to %s", spec.filename, spec.licence, dest)
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(spec.url, timeout=60) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress(total=total, unit="B", unit_scale=True, desc=spec.filename) as bar:
                while True:
                    block = resp.read(1 << 16)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
        got = sha256sum(tmp)
        if got != spec.sha256:
            raise OSError(f"checksum mismatch for {spec.filename}: got {got}, expected {spec.sha256}")
    return dest
