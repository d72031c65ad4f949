"""Image input: finding images, decoding them to gray [0, 1], batching them.

Sources (:func:`list_images`): a folder (searched recursively, hidden files and
folders left out), a glob pattern,
a manifest CSV with a ``path`` column (optional ``label`` and other columns;
relative paths are taken relative to the CSV's folder), a path list (``.txt``:
one path per line, blank lines and ``#`` comments skipped, relative paths
taken relative to the list's folder), a single image file, or a list of any of
these.

Decoding (:func:`read_gray`): PNG, JPEG, BMP, TIFF; 8- and 16-bit (and 12-bit TIFF); gray, RGB,
RGBA, palette (to gray with ITU-R 601 luma, alpha ignored); turned upright by
an EXIF orientation, as every viewer shows it; an optional crop
box ``(top, left, height, width)`` for vendor overlays. Anything else (float or
32-bit integer images, CMYK, multi-page TIFF and animated PNG, empty or
truncated files) raises :class:`ImageReadError`, which names the file.

Batching (:func:`iter_batches`): decoding and resizing run in DataLoader
worker processes so the model is fed while it computes; unreadable files are
skipped and reported (or raise with ``strict=True``).

Limits (README, "Reliability"): an image of more than :func:`max_pixels`
pixels (default 50 megapixels, ``--max-pixels`` or ``$CRL_UIQA_MAX_PIXELS``)
is refused from its header, before it is decoded, so one decode worker never
holds more than about 6 bytes per allowed pixel (the 8-bit decode, its
float32 copy and the resize); a huge PNG is skipped and listed instead of stopping the run
with PIL's decompression-bomb error. Images are decoded at full resolution
(no JPEG draft scaling), so an image gets the same pixels whichever command
reads it. The model pipeline also skips images with a side below
:data:`MIN_IMAGE_SIDE` pixels (after the crop): a 1x1 frame carries no quality
information and would move every other image's pseudo-label. A folder's
broken or looping symbolic links are listed as skipped, not dropped.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import ImageError, InputError, NotFoundError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

ENV_MAX_PIXELS = "CRL_UIQA_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000  # 7071 x 7071; ultrasound frames are well under 2 megapixels
MIN_IMAGE_SIDE = 4  # smallest side (after the crop) the model pipeline accepts
# Formats whose extra frames are more images (a multi-page TIFF, an animated PNG, GIF or WebP): such a file is refused,
# not read as its first frame. A JPEG's extra MPO pictures (a phone's depth map, a preview) are not frames of it.
MULTI_FRAME_FORMATS = ("TIFF", "PNG", "GIF", "WEBP")
EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how a stored image is turned for display

Crop = tuple[int, int, int, int]  # top, left, height, width

#: ITU-R 601 luma: gray = 0.299 R + 0.587 G + 0.114 B (colour images, arrays and frames alike)
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageReadError(ImageError):
    """An image file that cannot be used; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def max_pixels() -> int:
    """Largest image (width x height) decoded: ``$CRL_UIQA_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        from .errors import ConfigError

        raise ConfigError(f"${ENV_MAX_PIXELS} (--max-pixels) must be a positive integer, got {raw!r}")
    return value


def set_max_pixels(value: int) -> None:
    """Set the image size limit (through the environment, so decoding worker processes see it too)."""
    from . import validate

    validate.integer("--max-pixels", value, minimum=1)
    os.environ[ENV_MAX_PIXELS] = str(int(value))


# --------------------------------------------------------------------------- listing
def list_images(source: str | os.PathLike | Sequence[str | os.PathLike], *, tell: bool = True) -> list[str]:
    """List the image paths of ``source`` (see the module docstring), in a stable order.

    Raises :class:`crl_uiqa.errors.NotFoundError` (a ``FileNotFoundError``) when the source does not exist, each
    entry of a list or tuple of sources included (the entries of a ``.txt`` list or manifest are listed unchecked:
    reading skips a missing one and lists it), and :class:`crl_uiqa.errors.InputError` (a ``ValueError``) when it
    holds no image. ``tell=False``: no line about a folder's files that are not images (for a caller that reads
    folders as scans, where DICOM files are frames and videos are said by the scan reader).
    """
    if isinstance(source, (list, tuple)):
        out: list[str] = []
        for s in source:
            out.extend(list_images(s, tell=tell))
        return out
    from .files import check_utf8_names

    paths = _list_source(source, tell)
    check_utf8_names(paths)
    return paths


def _list_source(source: str | os.PathLike, tell: bool = True) -> list[str]:
    """:func:`list_images` of one source."""
    if not isinstance(source, (str, os.PathLike)):
        # str() of an array would be read as a glob pattern ("[[0. 0. ...]] matches no image")
        raise InputError(f"images are given as paths (a folder, glob, manifest CSV, .txt list or file), not as "
                         f"{type(source).__module__}.{type(source).__qualname__}; images in memory are scored by "
                         f"CRLUIQA.predict (all of them, not mixed with paths) or crl_uiqa.scoring.score_arrays")
    src = str(source)
    p = Path(src)
    if p.is_dir():
        # broken and looping links stay in the list: reading them fails and lists them as skipped. Hidden files and
        # folders are not searched, as a glob and a scan's folder do not: macOS "._x.png" resource forks and
        # ".thumbnails"/".ipynb_checkpoints" copies are not the user's images (a hidden file given by name is read).
        found = [q for q in p.rglob("*")
                 if (q.is_file() or (q.is_symlink() and not q.exists()))
                 and not any(part.startswith(".") for part in q.relative_to(p).parts)]
        paths = sorted(str(q) for q in found if q.suffix.lower() in IMAGE_EXTENSIONS)
        if tell:
            _tell_not_read(src, [q for q in found if q.suffix.lower() not in IMAGE_EXTENSIONS])
        if not paths:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under folder {src}")
        return paths
    if p.is_file() and p.suffix.lower() == ".csv":
        return read_manifest(p).paths
    if p.is_file() and p.suffix.lower() == ".txt":
        return read_path_list(p)
    if p.is_file():
        return [src]
    if glob.has_magic(src):
        paths = sorted(q for q in glob.glob(src, recursive=True) if Path(q).suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise InputError(f"the pattern {src} matches no image")
        return paths
    if p.exists():  # a FIFO, a device, a socket: "not found" sent the user looking for a file that is there
        raise InputError(f"{src}: not a regular file, folder, pattern or list (a pipe or a device?)")
    raise NotFoundError(f"image source not found: {src}")


_TOLD: set[str] = set()  # folders whose other files were reported (a run lists its inputs more than once)


def _tell_not_read(folder: str, others: Sequence[Path]) -> None:
    """Say, once per folder, how many of its files are not read as images, by extension: a DICOM file, a video or a
    WebP among the frames is otherwise dropped without a word."""
    key = os.path.realpath(folder)
    if not others or key in _TOLD:
        return
    _TOLD.add(key)
    from collections import Counter

    from .sniff import DICOM_EXTENSIONS, VIDEO_EXTENSIONS

    kinds = Counter(q.suffix.lower() or "(no extension)" for q in others)
    listed = ", ".join(f"{ext}: {n}" for ext, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:8])
    scans = DICOM_EXTENSIONS | VIDEO_EXTENSIONS | {"(no extension)"}  # DICOM files often have no extension
    log.info("%s: %d file(s) not read, not being images (%s); images are %s%s", folder, len(others), listed,
             ", ".join(IMAGE_EXTENSIONS), "; videos and DICOM go to `crl-uiqa select`" if scans & set(kinds) else "")


def list_references(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """:func:`list_images` for reference planes: a file given more than once (the same folder twice, a link and
    its target) is kept once, with a warning. Each reference is one of the n planes whose k nearest define every
    pseudo-label (Eq. 1), so a repeated one would count twice; images to score keep their repeats."""
    from .tables import path_key

    paths = list_images(source)
    seen: dict[str, str] = {}
    for p in paths:
        seen.setdefault(path_key(p), p)  # one file, however spelled: the key scores and pairs are matched by
    if len(seen) < len(paths):
        log.warning("%d of the %d references name a file given before (the same folder or file twice, or a link "
                    "and its target); each file counts once: %d references", len(paths) - len(seen), len(paths),
                    len(seen))
    return list(seen.values())


@dataclass
class Manifest:
    """A manifest CSV: paths plus every other column (``label`` among them)."""

    paths: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def labels(self) -> list[str] | None:
        return self.columns.get("label")


def read_path_list(path: str | os.PathLike) -> list[str]:
    """The paths of a ``.txt`` list: one per line (surrounding spaces stripped), blank lines and lines starting
    with ``#`` skipped, relative paths taken relative to the list's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"path list {path} is not UTF-8 text") from None
    from .files import refuse_nul

    refuse_nul(path, text)
    lines = [ln.strip() for ln in text.splitlines()]
    paths = [ln if Path(ln).is_absolute() else str(path.parent / ln) for ln in lines if ln and not ln.startswith("#")]
    if not paths:
        raise InputError(f"path list {path} lists no image")
    return paths


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest CSV with a ``path`` column (or headerless ``path[,label]`` rows)."""
    from .files import csv_records, refuse_repeated_columns

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"manifest not found: {path}")
    rows = [(line, r) for line, r in enumerate(csv_records(path), start=1) if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"manifest {path} is empty")
    header = [c.strip() for c in rows[0][1]]
    if "path" in header:
        refuse_repeated_columns(path, header)
        body = rows[1:]
    else:  # headerless path[,label]
        header = ["path", "label"][: len(header)] + [f"col{i}" for i in range(2, len(header))]
        body = rows
    idx = header.index("path")
    base = path.parent
    paths, columns = [], {h: [] for h in header if h != "path"}
    for line, r in body:
        raw = r[idx].strip() if idx < len(r) else ""
        if not raw:
            raise InputError(f"{path}, line {line}: no path in the path column")
        q = Path(raw)
        paths.append(raw if q.is_absolute() else str(base / q))
        for j, h in enumerate(header):
            if h != "path":
                columns[h].append(r[j].strip() if j < len(r) else "")
    if not paths:
        raise InputError(f"manifest {path} lists no image")
    return Manifest(paths, columns)


# --------------------------------------------------------------------------- decoding
def read_gray(path: str | os.PathLike, crop: Crop | None = None) -> np.ndarray:
    """Decode one image to a float32 gray array (H, W) in [0, 1].

    8-bit images are divided by 255, 16-bit by 65535, a 12-bit TIFF (BitsPerSample 12) by 4095, as a DICOM by the
    maximum of its Bits Stored. ``crop`` is
    ``(top, left, height, width)``. Images above :func:`max_pixels` are
    refused from their header, before decoding.
    """
    path = str(path)
    arr = _open_image(path, decode=True)
    if crop is not None:
        arr = apply_crop(arr, crop, path)
    if arr.size == 0:
        raise ImageReadError(path, "image has no pixels")
    return arr


def check_image(path: str | os.PathLike) -> None:
    """Refuse, cheaply, a file :func:`read_gray` would refuse from its header: missing, empty, not an image (a
    video, a DICOM, unknown bytes), above :func:`max_pixels`, several frames. The pixels are not decoded, so data
    damaged past the header is found by :func:`read_gray` alone. Raises :class:`ImageReadError`."""
    _open_image(str(path), decode=False)


def _open_image(path: str, decode: bool) -> np.ndarray | None:
    """:func:`read_gray`'s one reader: open ``path``, check its header, and (``decode``) decode it to gray."""
    import errno
    import warnings

    from PIL import Image, UnidentifiedImageError

    limit = max_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # the user raised our limit above PIL's: theirs to decide
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(path, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path) as im:
                w, h = im.size
                if w * h > limit:
                    raise ImageReadError(path, _too_large(w, h, limit))
                frames = getattr(im, "n_frames", 1) if im.format in MULTI_FRAME_FORMATS else 1
                if frames > 1:
                    raise ImageReadError(path, f"a {im.format} of {frames} frames (pages), not one image: reading "
                                         "its first frame alone would hide the others; save them as separate images")
                if not decode:
                    return None
                im.load()
                return _file_gray(im, path)
    except ImageReadError:
        raise
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageReadError(path, "broken symbolic link") from None
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, _unidentified(path)) from None
    except Image.DecompressionBombError as exc:  # PIL refuses twice its own limit while opening
        import re

        m = re.search(r"\((\d+) pixels\)", str(exc))
        n = f"{int(m.group(1)) / 1e6:.1f} megapixels" if m else "more pixels"
        raise ImageReadError(path, f"image too large: {n}, above the limit of {limit / 1e6:g} "
                             f"(--max-pixels or ${ENV_MAX_PIXELS})") from None
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode the image; lower --workers or --max-pixels") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(path, "symbolic link loop") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
            raise ImageReadError(path, f"cannot open ({exc.strerror})") from None
        raise ImageReadError(path, f"cannot decode image ({exc})") from None  # truncated / corrupt data
    except Exception as exc:  # noqa: BLE001 - any failure of the decoder on hostile bytes is a bad image
        raise ImageReadError(path, _png_text_limit(exc) or f"cannot decode image ({type(exc).__name__}: {exc})") \
            from None


def _png_text_limit(exc: Exception) -> str | None:
    """Why a PNG was refused by Pillow's limit on its text chunks (metadata), in words, or None for another error.

    Pillow refuses a compressed text chunk (zTXt, iTXt) that unpacks to more than ``PngImagePlugin.MAX_TEXT_CHUNK``
    (1 MiB), and text chunks above ``MAX_TEXT_MEMORY`` (64 MiB) in all: a guard against decompression bombs, kept
    here (the pixels are fine, but the limit is not ours to lift for every image)."""
    if not isinstance(exc, ValueError):
        return None
    from PIL import PngImagePlugin

    text = str(exc)
    for name, what in (("MAX_TEXT_CHUNK", "a compressed text chunk (metadata) that unpacks to more than"),
                       ("MAX_TEXT_MEMORY", "text chunks (metadata) of more than")):
        if name in text:
            limit = getattr(PngImagePlugin, name)
            return (f"the PNG holds {what} {limit / 2**20:g} MiB, above Pillow's safety limit against "
                    f"decompression bombs (PngImagePlugin.{name}), so its pixels are not read; save the image "
                    "again without that text metadata")
    return None


def _file_gray(im, what: str) -> np.ndarray:
    """A decoded PIL image as gray [0, 1]: turned upright, its maximum read from the file's header first (a turned
    image is a new one, without the TIFF tags)."""
    return _to_gray(_upright(im), what, max16=_tiff_max_value(im))


def _upright(im):
    """The image as viewers show it: turned by its EXIF orientation (a phone's or camera's JPEG), else as stored."""
    from PIL import ImageOps

    if im.getexif().get(EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(im)
    return im


def _unidentified(path: str) -> str:
    """Why Pillow could not open ``path``: a scan (DICOM, video) is named as one, anything else is not an image."""
    from .sniff import DICOM_EXTENSIONS, SNIFF_BYTES, VIDEO_EXTENSIONS, UnsupportedContent, is_dicom_file, sniff

    ext = Path(path).suffix.lower()
    if ext in DICOM_EXTENSIONS or is_dicom_file(path):
        what = "a DICOM file"
    elif ext in VIDEO_EXTENSIONS:
        what = f"a video ({ext})"
    else:
        try:  # a video under an image's name (clip.png) is named by its bytes, as the web page's uploads are
            with open(path, "rb") as fh:
                found = sniff(fh.read(SNIFF_BYTES))
        except (OSError, UnsupportedContent):
            found = None
        if found is None or found.kind != "video":
            return "not a readable image (unknown or corrupt format)"
        what = f"a video ({found.format} in a file named {ext or 'without an extension'}: rename it {found.suffix})"
    return (f"{what}, not an image ({', '.join(IMAGE_EXTENSIONS)}): scans are read by `crl-uiqa select` "
            "(Python: crl_uiqa.video.scan.open_scan), or export their frames as images")


def _too_large(w: int, h: int, limit: int) -> str:
    return (f"image too large: {w}x{h} = {w * h / 1e6:.1f} megapixels, above the limit of {limit / 1e6:g} "
            f"(--max-pixels or ${ENV_MAX_PIXELS})")


def _to_gray(im, path: str, max16: float | None = None) -> np.ndarray:
    """``im`` as gray [0, 1]: 8-bit / 255, 16-bit / ``max16`` (65535 unless the file says fewer bits:
    :func:`_tiff_max_value`), colour to luma."""
    mode = im.mode
    if mode in ("L", "P", "RGB", "RGBA", "LA", "1", "YCbCr"):
        if mode in ("LA", "1"):
            im = im.convert("L")
        elif mode in ("P", "RGBA", "YCbCr"):
            im = im.convert("RGB")
        # colour to luma in float (LUMA_WEIGHTS, as DICOM and video frames), not rounded to 8 bits: a colour
        # frame scores the same from a PNG as from its DICOM or video
        if im.mode == "RGB":
            return _rgb_luma(im)
        a = np.asarray(im, dtype=np.float32)
        a /= np.float32(255.0)  # in place: one float32 copy per decode
        return a
    if mode.startswith("I;16"):
        a = np.asarray(im, dtype=np.uint16).astype(np.float32)
        a /= np.float32(max16 or 65535.0)
        return a
    if mode == "I":  # PIL opens 16-bit PNG/TIFF as 32-bit signed ints
        a = np.asarray(im, dtype=np.int32)
        if _signed_tiff(im):  # a signed 16-bit TIFF opens as "I" too: refused whatever its values, not as "32-bit"
            raise ImageReadError(path, "signed integer image (TIFF SampleFormat 2): only unsigned 8- and 16-bit "
                                 "images are supported")
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageReadError(path, "32-bit integer image: only 8- and 16-bit images are supported")
        return a.astype(np.float32) / 65535.0
    if mode == "F":
        raise ImageReadError(path, "32-bit float image: only 8- and 16-bit images are supported")
    raise ImageReadError(path, f"unsupported image mode {mode!r} (8/16-bit gray, RGB or RGBA expected)")


def _rgb_luma(im) -> np.ndarray:
    """A PIL RGB image's float luma in [0, 1], converted a band of rows at a time so that no second full-size
    float image is held beside the result (the decode limit of the module docstring)."""
    w, h = im.size
    out = np.empty((h, w), dtype=np.float32)
    rows = max(1, (1 << 22) // max(w, 1))  # about 4 megapixels per band
    for top in range(0, h, rows):
        band = im.crop((0, top, w, min(h, top + rows))).convert("F")  # PIL's float luma: LUMA_WEIGHTS
        np.divide(np.asarray(band), np.float32(255.0), out=out[top:top + band.size[1]])
    return out


def gray_array(image, what: str = "<array>") -> np.ndarray:
    """An image in memory as crl-uiqa's gray input: a float32 array (H, W) in [0, 1].

    Taken as a file of the same pixels is decoded (:func:`read_gray`): ``uint8`` is divided by 255 and
    ``uint16`` by 65535; ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA become ITU-R 601 luma (:data:`LUMA_WEIGHTS`,
    in float), alpha ignored, so an array scores as its file; ``(H, W, 1)`` is gray;
    ``bool`` is 0/1. A float array must already be finite and within [0, 1] (it is not rescaled: divide by
    your data's maximum). A ``PIL.Image`` is converted as a decoded file; a ``torch.Tensor`` as its numpy
    array. Anything else raises :class:`ImageReadError` naming ``what``.
    """
    if type(image).__module__.startswith("PIL."):
        return _file_gray(image, what)  # as its file is read: turned by its EXIF orientation
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if isinstance(image, (str, bytes, os.PathLike)):
        raise ImageReadError(what, f"is a path ({image!r}), not an image in memory: give paths or images, not both")
    a = np.asarray(image)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint8:
        if a.ndim == 3 and a.shape[2] in (3, 4):
            from PIL import Image

            return _to_gray(Image.fromarray(np.ascontiguousarray(a)), what)
        return scaled_gray(a, 255.0, what)
    if a.dtype == np.uint16:
        return scaled_gray(a, 65535.0, what)
    if a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise ImageReadError(what, f"float image with values outside [0, 1] or not finite (range "
                                 f"{np.nanmin(a) if np.isfinite(a).any() else float('nan'):g} to "
                                 f"{np.nanmax(a) if np.isfinite(a).any() else float('nan'):g}); scale it to [0, 1], "
                                 "or give uint8/uint16 data")
        return scaled_gray(a, 1.0, what)
    raise ImageReadError(what, f"unsupported array type {a.dtype} (uint8, uint16, bool or float in [0, 1])")


def scaled_gray(a: np.ndarray, max_value: float, what: str = "<array>") -> np.ndarray:
    """Pixel values ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3|4)`` as a float32 gray image ``(H, W)`` divided by
    ``max_value``: colour to luma (:data:`LUMA_WEIGHTS`, alpha ignored). The one shape and luma rule of arrays in
    memory (:func:`gray_array`) and of DICOM and video frames (:mod:`crl_uiqa.video.scan`); anything else raises
    :class:`ImageReadError` naming ``what``."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageReadError(what, f"expected an image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    out = a[..., :3].astype(np.float32) @ LUMA_WEIGHTS if a.ndim == 3 else a.astype(np.float32)
    out /= np.float32(max_value)
    return out


def _tiff_max_value(im) -> float | None:
    """The largest value of a TIFF whose samples have fewer than 16 bits (BitsPerSample, tag 258: 12 for a 12-bit
    acquisition), ``2**bits - 1``, which Pillow decodes unscaled into a 16-bit image (4095 stays 4095); ``None``
    for anything else (a 16-bit TIFF, any other format), which is divided by 65535. TIFF's MaxSampleValue is not
    used: the TIFF 6.0 specification says it must not change how an image is shown."""
    bits = getattr(im, "tag_v2", {}).get(258)  # BitsPerSample, one value per sample
    bits = set(bits) if isinstance(bits, tuple) else {bits}
    if len(bits) == 1 and isinstance(b := bits.pop(), int) and 1 <= b < 16:
        return float(2**b - 1)
    return None


def _signed_tiff(im) -> bool:
    """Whether a TIFF stores signed integers (SampleFormat 2), which Pillow opens as unsigned-looking "I"."""
    fmt = getattr(im, "tag_v2", {}).get(339, 1)  # SampleFormat, one value per sample
    return 2 in (fmt if isinstance(fmt, tuple) else (fmt,))


def apply_crop(arr: np.ndarray, crop: Crop, path: str = "<array>") -> np.ndarray:
    """Crop ``arr`` to ``(top, left, height, width)``, with a clear error if it does not fit."""
    top, left, h, w = (int(v) for v in crop)
    H, W = arr.shape[:2]
    if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > H or left + w > W:
        raise ImageReadError(path, f"crop box (top={top}, left={left}, height={h}, width={w}) does not fit a {H}x{W} image")
    return arr[top : top + h, left : left + w]


def write_gray_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a float [0, 1] gray image as an 8-bit PNG, atomically."""
    from PIL import Image

    from .files import atomic_path

    a = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(a * 255.0).astype(np.uint8), mode="L").save(tmp, format="PNG")
    return Path(path)


# --------------------------------------------------------------------------- batching
def to_tensor(image: np.ndarray, size: tuple[int, int] | None):
    """(H, W) float array in [0, 1] -> (1, h, w) float tensor resized to ``size`` (antialiased bilinear).

    The resize's weights sum to 1 only up to rounding, so a white pixel can come out at 1 + 1e-7; the
    result is clipped back to [0, 1], the range every consumer (corruptions, figures) checks.
    """
    import torch
    from torch.nn import functional as F

    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if size is not None and tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)
    return t[0]


def model_tensor(image: np.ndarray, size: tuple[int, int] | None, what: str = "<array>"):
    """A decoded (and cropped) gray image as the model pipeline's ``(1, h, w)`` input: refused when a side is
    below :data:`MIN_IMAGE_SIDE`, then resized (:func:`to_tensor`)."""
    if min(image.shape) < MIN_IMAGE_SIDE:
        raise ImageReadError(what, f"image too small: {image.shape[0]}x{image.shape[1]} pixels, below the "
                             f"minimum of {MIN_IMAGE_SIDE} per side")
    return to_tensor(image, size)


class ImageDataset:
    """A map-style dataset of image files, decoded to ``(1, H, W)`` tensors in [0, 1].

    Unreadable files yield ``ok=False`` and a zero image (the loader's consumer
    drops them) unless ``strict`` is set, in which case the error is raised.
    """

    def __init__(self, paths: Sequence[str], size: tuple[int, int] | None = (224, 288), crop: Crop | None = None, strict: bool = False):
        self.paths = list(paths)
        self.size = tuple(size) if size is not None else None
        self.crop = crop
        self.strict = strict

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        import torch

        path = self.paths[i]
        try:
            img = model_tensor(read_gray(path, self.crop), self.size, path)
            return {"image": img, "index": i, "ok": True, "error": ""}
        except ImageReadError as exc:
            if self.strict:
                raise
            shape = (1, *self.size) if self.size else (1, 1, 1)
            return {"image": torch.zeros(shape), "index": i, "ok": False, "error": exc.reason}


@dataclass
class Batch:
    images: object  # torch.Tensor (B, 1, H, W) of the readable images
    indices: list[int]  # their positions in the path list


@dataclass
class ReadFailure:
    path: str
    reason: str


def default_workers() -> int:
    """Decoding workers: one per core beyond the first, at least one, at most four."""
    n = os.cpu_count() or 1
    return max(1, min(4, n - 1)) if n > 1 else 0


def iter_batches(
    paths: Sequence[str],
    *,
    size: tuple[int, int] | None = (224, 288),
    batch_size: int = 32,
    crop: Crop | None = None,
    strict: bool = False,
    num_workers: int | None = None,
    failures: list[ReadFailure] | None = None,
    progress: bool | str = False,
) -> Iterator[Batch]:
    """Decode ``paths`` in background workers and yield batches of readable images.

    Unreadable files are appended to ``failures`` (and logged) or, with
    ``strict=True``, raise :class:`ImageReadError`. ``size=None`` keeps the
    native size (then ``batch_size`` must be 1 unless all images agree).
    """
    import torch
    from torch.utils.data import DataLoader

    from . import validate
    from .progress import progress as _progress

    if len(paths) == 0:
        raise InputError("no images to read")
    validate.integer(validate.flag("batch_size"), batch_size, minimum=1, maximum=validate.MAX_BATCH)
    max_pixels()  # a bad $CRL_UIQA_MAX_PIXELS is a setting error here, not a failure in every worker
    if num_workers is not None:
        validate.integer(validate.flag("workers"), num_workers, minimum=0, maximum=validate.MAX_WORKERS)
    # Errors are raised here in the main process, not in the dataset: a DataLoader worker
    # re-raises an ImageReadError as a RuntimeError wrapping the worker's traceback text.
    ds = ImageDataset(paths, size=size, crop=crop, strict=False)
    workers = default_workers() if num_workers is None else num_workers
    workers = min(workers, max(0, (len(paths) + batch_size - 1) // batch_size))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers else None,
    )
    desc = progress if isinstance(progress, str) else "images"
    with _progress(total=len(paths), desc=desc, unit="img", enabled=bool(progress)) as bar:
        for items in loader:
            good = [it for it in items if it["ok"]]
            for it in items:
                if not it["ok"]:
                    if strict:
                        raise ImageReadError(paths[it["index"]], it["error"])
                    log.warning("skipping %s: %s", paths[it["index"]], it["error"])
                    if failures is not None:
                        failures.append(ReadFailure(paths[it["index"]], it["error"]))
            bar.update(len(items))
            if good:
                yield Batch(torch.stack([it["image"] for it in good]), [it["index"] for it in good])


def _collate(items: list[dict]) -> list[dict]:
    return items


def load_images(paths: Iterable[str | os.PathLike], crop: Crop | None = None) -> list[np.ndarray]:
    """Read several images at native size (for the classical baselines)."""
    return [read_gray(p, crop) for p in paths]
