"""Frame sources: videos, DICOM cine loops and image sequences as one stream of frames.

:func:`open_scan` opens a scan and returns a :class:`ScanSource`; iterating it
yields :class:`Frame` objects (index, time, gray float32 image in ``[0, 1]``)
lazily, one decoded frame at a time:

* **Videos** (``.mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .wmv .ogv``), decoded
  with PyAV (``pip install av``). Times come from each frame's presentation
  timestamp (``pts x time_base``, relative to the first frame); AVI has no
  presentation timestamps, so AVI frames are at ``index / fps``. Only one
  decoded frame is held at a time. Frames are turned upright by the stream's
  display matrix (a phone's portrait recording: landscape frames turned by
  +-90 degrees; a mirrored recording: flipped), in quarter turns and flips, as
  players and FFmpeg's autorotate show them;
  :attr:`ScanSource.shape` is the turned shape.
* **DICOM** single- and multi-frame (``.dcm .dicom .dic``, or any file with the
  ``DICM`` preamble), read with pydicom. Frames are decoded one at a time with
  :func:`pydicom.pixels.iter_pixels` from the file, so the pixel data of a
  long cine loop is never loaded whole (the non-pixel elements are read once
  at open). Compressed transfer syntaxes need a pydicom decoding plug-in
  (Pillow for JPEG baseline and JPEG 2000 is usually there; pylibjpeg, gdcm or
  pyjpegls for JPEG-LS, JPEG lossless...); the error names the missing ones.
  Video transfer syntaxes (MPEG-2, H.264, HEVC) are decoded with PyAV; their
  compressed stream is read into memory once, frames are still decoded one
  at a time. Times come from the first present of Frame Time Vector
  (0018,1065), Frame Time (0018,1063), Cine Rate (0018,0040) and Recommended
  Display Frame Rate (0008,2144), else from ``frame_rate`` or
  :data:`DEFAULT_FRAME_RATE`. The Sequence of Ultrasound Regions gives
  :attr:`ScanSource.region`.
* **Image sequences**: a folder, or a glob pattern such as ``"scan/*.png"``,
  of PNG/JPEG/TIFF/BMP (or single-frame DICOM) files, sorted naturally
  (``f2`` before ``f10``); one file is read per frame. A single image file is
  a one-frame sequence. Frames are at ``index / frame_rate``
  (:data:`DEFAULT_FRAME_RATE` when not given).

Gray conversion: 8-bit data is divided by 255, higher bit depths by the
maximum of their stored bits (DICOM BitsStored, 65535 for 16-bit images and
videos); colour (RGB, YBR_FULL, YBR_FULL_422, palette) becomes luma
``0.299 R + 0.587 G + 0.114 B``; image files are decoded by
:func:`crl_uiqa.io.read_gray` like every image crl-uiqa scores; DICOM MONOCHROME1 is inverted. A monochrome
DICOM with a VOI (window or VOI LUT) is read as a viewer shows it: the modality
transform (rescale or modality LUT), then the first VOI, scaled to [0, 1] by
its output range; without one the stored values are read as above (ultrasound
pixel data is stored display-ready).

A corrupt or truncated file raises :class:`ScanReadError` (a
:class:`ValueError`) naming the file and the frame, *after* every frame decoded
before the fault has been yielded, so a caller can keep what it scored. For
videos a fault is a demuxer/decoder error, a packet or frame that FFmpeg flags
as corrupt (the partial last packet of a cut file), or fewer frames than the
container header announces (MP4/MOV/AVI; Matroska/WebM do not store a count,
so a cut at a frame boundary there goes unnoticed).

``open_scan(..., crop=(top, left, height, width))`` cuts every frame to a box;
``crop="auto"`` uses the DICOM region or :func:`crl_uiqa.region.detect_region`
on a few sampled frames (see :meth:`ScanSource.find_region`).
"""
from __future__ import annotations

import abc
import glob as _glob
import io
import logging
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError, InputError, NotFoundError, ScanError, optional_import
from ..io import IMAGE_EXTENSIONS as _IO_IMAGE_EXTENSIONS
from ..io import ImageReadError, read_gray, scaled_gray
from ..sniff import DICOM_EXTENSIONS, SNIFF_BYTES, VIDEO_EXTENSIONS, UnsupportedContent, is_dicom_file, sniff
from .framing import RegionPolicy
from .region import Region, RegionDetection, dicom_number, region_from_dicom

__all__ = [
    "Frame",
    "ScanSource",
    "VideoScan",
    "DicomScan",
    "ImageSequenceScan",
    "ArrayScan",
    "ScanReadError",
    "FrameSampler",
    "open_scan",
    "scan_kind",
    "is_dicom_file",
    "read_image_file",
    "natural_key",
    "DEFAULT_FRAME_RATE",
    "VIDEO_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(_IO_IMAGE_EXTENSIONS)

#: Frame rate (frames per second) assumed for image sequences and for DICOM
#: files without timing elements, when ``frame_rate`` is not given. 30 fps is
#: the usual display rate of ultrasound scanners and screen recorders.
DEFAULT_FRAME_RATE = 30.0


class ScanReadError(ScanError):
    """A scan could not be decoded (corrupt, truncated or unsupported data).

    Attributes
    ----------
    path : pathlib.Path
        The file at fault.
    frame_index : int or None
        The source frame that could not be read; ``None`` when the file's
        header (before any frame) is unreadable.
    message : str
        What went wrong.
    """

    def __init__(self, path: str | os.PathLike, frame_index: int | None, message: str) -> None:
        self.path = Path(path)
        self.frame_index = frame_index
        self.message = message
        where = "header" if frame_index is None else f"frame {frame_index}"
        super().__init__(f"{self.path}: cannot read {where}: {message}")

    def __reduce__(self):  # keep pickling (multiprocessing) working with the 3-argument constructor
        return (type(self), (self.path, self.frame_index, self.message))


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame of a scan.

    Attributes
    ----------
    index : int
        Frame number in the source (0-based, before any sub-sampling).
    time : float
        Seconds from the first frame of the source.
    image : numpy.ndarray
        float32 ``(H, W)`` gray image in ``[0, 1]`` (cropped when the source crops).
    """

    index: int
    time: float
    image: np.ndarray


class FrameSampler:
    """Decide which source frames to keep: every N-th, then at most F per second.

    ``every`` keeps source frames ``0, N, 2N, ...``; ``fps`` then keeps, among
    those, the first frame of each ``1/F``-second slot counted from the first
    kept frame's time, so no more than ``F`` frames fall in any second and
    gaps in the timestamps never cause bursts. ``indices``, when given, keeps
    only those source frames (used for spread-out samples). A sampler is
    stateful: use one per pass over a scan.
    """

    def __init__(self, every: int = 1, fps: float | None = None, *, indices: Sequence[int] | None = None) -> None:
        self.every = _check_every(every)
        self.fps = _check_fps(fps, "fps")
        self.indices = None if indices is None else frozenset(int(i) for i in indices)
        self._t0: float | None = None
        self._last_slot = -1

    def keep(self, index: int, time: float) -> bool:
        """Whether frame ``index`` at ``time`` seconds is kept (call in frame order)."""
        if index % self.every:
            return False
        if self.indices is not None and index not in self.indices:
            return False
        if self.fps is None:
            return True
        if self._t0 is None:
            self._t0 = time
        slot = math.floor((time - self._t0) * self.fps + 1e-6)
        if slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True


def _check_every(every: Any) -> int:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ConfigError(f"every must be an integer >= 1, got {every!r}")
    return int(every)


def _check_fps(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return v


# ----------------------------------------------------------------------------- base class


class ScanSource(abc.ABC):
    """A scan opened by :func:`open_scan`: iterate it to get :class:`Frame` objects.

    Attributes
    ----------
    path : pathlib.Path
        The file, folder or glob pattern opened.
    name : str
        Short name (file or folder name without extension), e.g. for reports.
    kind : str
        ``"video"``, ``"dicom"`` or ``"images"``.
    fps : float or None
        Nominal frame rate of the source, the one frame times are based on
        where timestamps are missing (``None`` when unknown: a video
        container without a rate, or a single DICOM frame).
    n_frames : int or None
        Number of frames in the source, before sub-sampling (``None`` when
        the container does not say).
    shape : tuple of int
        ``(H, W)`` of the source frames before cropping.
    region : Region or None
        The tissue region from DICOM metadata (full-frame coordinates), else ``None``.
    timing : str
        Where frame times come from: ``"pts"``, ``"FrameTime"``,
        ``"FrameTimeVector"``, ``"CineRate"``, ``"RecommendedDisplayFrameRate"``,
        ``"constant-rate"`` (``index / fps`` with the container's rate: AVI),
        ``"frame_rate"`` (``index / frame_rate`` as given), ``"default"``
        (``index /`` :data:`DEFAULT_FRAME_RATE`, nothing known) or
        ``"single-frame"``.
    every, sample_fps :
        The sub-sampling applied when iterating.
    crop : Region or None
        The box every yielded frame is cut to; with ``crop="auto"`` it is
        resolved (DICOM region, else detection) on first use.

    Iteration is re-entrant: each ``iter()`` re-opens the file and decodes
    from the start.
    """

    kind = "scan"

    def __init__(
        self,
        path: Path,
        *,
        every: int = 1,
        fps: float | None = None,
        crop: Region | Sequence[int] | str | None = None,
        frame_rate: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = _scan_name(self.path)
        self.every = _check_every(every)
        self.sample_fps = _check_fps(fps, "fps")
        self._auto_crop = isinstance(crop, str) and crop.strip().lower() == "auto"
        self._crop = None if (crop is None or self._auto_crop) else Region.coerce(crop)
        # Set by _read_header.
        self.fps: float | None = None
        self.n_frames: int | None = None
        self.shape: tuple[int, int] = (0, 0)
        self.region: Region | None = None
        self.timing = "frame_rate"
        self._read_header(frame_rate)
        self._check_crop()

    def _check_crop(self) -> None:
        """Reject a manual crop box that does not fit the frames (called once the shape is known)."""
        if self._crop is not None and self.shape != (0, 0) and not self._crop.fits(self.shape):
            raise ScanError(
                f"{self.path}: crop box (top, left, height, width)={self._crop.as_tuple()} does not fit "
                f"its {self.shape[0]}x{self.shape[1]} frames"
            )

    # -- public API ---------------------------------------------------------------

    @property
    def crop(self) -> Region | None:
        """The box applied to yielded frames (resolves ``crop="auto"`` on first access)."""
        if self._auto_crop and self._crop is None:
            det = self.find_region()
            log.info(
                "%s: cropping to %s (top, left, height, width) found by %s", self.path, det.box.as_tuple(), det.method
            )
            self._crop = det.box
        return self._crop

    def __iter__(self) -> Iterator[Frame]:
        crop = self.crop
        sampler = FrameSampler(self.every, self.sample_fps)
        for index, time, image in self._frames(sampler):
            if crop is not None:
                try:
                    image = crop.crop(image)
                except ValueError as exc:
                    raise ScanError(f"{self.path}: frame {index}: {exc}") from None
            yield Frame(index=index, time=float(time), image=np.ascontiguousarray(image, dtype=np.float32))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(path={str(self.path)!r}, fps={self.fps}, n_frames={self.n_frames}, "
            f"shape={self.shape}, every={self.every}, sample_fps={self.sample_fps}, crop={self._crop})"
        )

    def sample_frames(self, n: int = 16, *, min_interval: float = 0.5) -> np.ndarray:
        """A few full (uncropped, un-subsampled) frames for region detection.

        Sources with random access (DICOM, image sequences) give ``n`` frames
        spread evenly over the whole scan. Videos are read from the start,
        keeping one frame per ``min_interval`` seconds (a :class:`FrameSampler`
        at ``1 / min_interval`` fps) until ``n`` are collected, so about
        ``n x min_interval`` seconds are decoded, not the whole video. A read
        error after at least one frame ends the sample.

        Returns
        -------
        numpy.ndarray
            float32 ``(N, H, W)`` with ``1 <= N <= n``.
        """
        if int(n) < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        images: list[np.ndarray] = []
        try:
            for _, _, image in self._sample(int(n), float(min_interval)):
                images.append(np.asarray(image, dtype=np.float32))
        except ScanReadError:
            if not images:
                raise
        if not images:
            raise ScanReadError(self.path, 0, "the scan has no frames")
        return np.stack(images)

    def find_region(self, *, samples: int = 16, margin: int = 2) -> RegionDetection:
        """The ultrasound region of this scan, in full-frame coordinates.

        A manual crop (``crop=(top, left, height, width)``) wins, then the DICOM
        Sequence of Ultrasound Regions, then :func:`crl_uiqa.region.detect_region`
        on :meth:`sample_frames` (``samples`` frames, box grown by ``margin``
        pixels): the policy of :mod:`crl_uiqa.video.framing`. Detection decodes the sampled frames on every call; the
        ``crop="auto"`` box is computed once.
        """
        policy = RegionPolicy(crop=None if self._auto_crop else self._crop, mode="auto", margin=margin)
        det = policy.known(self.shape, self.region, self.path)
        return det if det is not None else policy.detect(self.sample_frames(samples), self.path)

    # -- subclass hooks -------------------------------------------------------------

    @abc.abstractmethod
    def _read_header(self, frame_rate: float | None) -> None:
        """Open the source and set :attr:`fps`, :attr:`n_frames`, :attr:`shape`, :attr:`region`, :attr:`timing`.

        ``frame_rate`` is the user's rate for sources without timing.
        """

    @abc.abstractmethod
    def _frames(self, sampler: FrameSampler) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield ``(index, time, image)`` for the frames the sampler keeps, in source order.

        ``image`` is the full gray float32 frame; cropping is done by :meth:`__iter__`.
        """

    def _sample(self, n: int, min_interval: float) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield up to ``n`` frames spread evenly over a scan of known length."""
        total = self.n_frames or 1
        yield from self._frames(FrameSampler(indices=np.linspace(0, total - 1, min(n, total)).round().astype(int)))


def _is_pattern(text: str) -> bool:
    """Whether ``text`` is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return any(ch in text for ch in "*?[")


def _scan_name(path: Path) -> str:
    text = str(path)
    if _is_pattern(text):
        # A glob: name it after the folder holding the pattern.
        parent = Path(text).parent
        return parent.name or "scan"
    name = path.name
    for ext in sorted(VIDEO_EXTENSIONS | DICOM_EXTENSIONS | IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)] or name
    return name


# ----------------------------------------------------------------------------- gray conversion


def _to_gray(arr: np.ndarray, *, max_value: float, what: str) -> np.ndarray:
    """Integer or float ``(H, W)`` / ``(H, W, 1|3|4)`` array -> float32 gray in [0, 1] (:func:`crl_uiqa.io.scaled_gray`,
    clipped: bits above the stored ones are masked, but a float frame may overshoot)."""
    out = scaled_gray(np.asarray(arr), max_value, what)
    return np.clip(out, 0.0, 1.0, out=out)


# ----------------------------------------------------------------------------- video


def _import_av():
    return optional_import("av", "video", purpose="reading videos")


def _first_frame_display(container: Any, stream: Any) -> tuple[tuple[int, ...] | None, float]:
    """The display matrix of ``stream`` (its nine int32 values, FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``) and its
    rotation (degrees counter-clockwise, PyAV's ``VideoFrame.rotation``), read from its first frame; ``(None, 0)``
    when there is none, when the first frame does not decode (the frames' own reading then says what is wrong),
    and no matrix (the rotation alone) when PyAV does not hand the side data over."""
    av = _import_av()
    try:
        for frame in container.decode(stream):
            matrix = None
            for side in getattr(frame, "side_data", None) or ():
                if getattr(getattr(side, "type", None), "name", "") == "DISPLAYMATRIX":
                    raw = bytes(side)
                    matrix = struct.unpack("=9i", raw) if len(raw) == 36 else None
            return matrix, float(getattr(frame, "rotation", 0) or 0)
    except (av.error.FFmpegError, ValueError, TypeError):
        return None, 0.0
    return None, 0.0


def _quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0-3) that show a frame upright for a display rotation in degrees: a
    phone's portrait recording is stored as landscape frames with -90 or 90. Other angles are not turned."""
    k = round(rotation / 90.0)
    return k % 4 if abs(rotation - 90.0 * k) <= 1.0 else 0


def _display_rotation(matrix: Sequence[int]) -> float:
    """FFmpeg's ``av_display_rotation_get`` (libavutil/display.c): the matrix's rotation in degrees
    counter-clockwise, NaN for a degenerate matrix. The values are 16.16 fixed point; the scale cancels."""
    s0, s1 = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if s0 == 0 or s1 == 0:
        return math.nan
    return -math.atan2(matrix[1] / s1, matrix[0] / s0) * 180 / math.pi


def _upright_transform(matrix: Sequence[int] | None, rotation: float) -> tuple[int, bool]:
    """How a stored frame is shown upright: ``(k, mirror)``, turn it ``k`` counter-clockwise quarter turns
    (``np.rot90``), then mirror it left to right if ``mirror``. The display matrix is read as FFmpeg's command-line
    tools autorotate it (fftools ``get_rotation`` and the transpose/hflip/vflip filters they insert), a mirrored
    recording (negative determinant) included; another angle than a quarter turn is not turned (FFmpeg would
    rotate by it). Without the matrix (an older PyAV), the rotation alone gives quarter turns, unmirrored."""
    if matrix is None:
        return _quarter_turns(rotation), False
    theta = _display_rotation(matrix)
    if math.isnan(theta):
        return 0, False
    theta = -math.copysign(math.floor(abs(theta) + 0.5), theta)  # C's round(): halves away from zero
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1.0:  # transpose: cclock_flip (the transpose, a mirrored turn) or clock
        return (3, True) if matrix[3] > 0 else (3, False)
    if abs(theta - 180) < 1.0:  # hflip if matrix[0] < 0, then vflip if matrix[4] < 0
        return {(True, True): (2, False), (True, False): (0, True), (False, True): (2, True),
                (False, False): (0, False)}[(matrix[0] < 0, matrix[4] < 0)]
    if abs(theta - 270) < 1.0:  # transpose: clock_flip (the anti-transpose) or cclock
        return (1, True) if matrix[3] < 0 else (1, False)
    if abs(theta) < 1.0 and matrix[4] < 0:  # vflip
        return 2, True
    return 0, False


class VideoScan(ScanSource):
    """A video file decoded with PyAV (see the module docstring)."""

    kind = "video"
    _turns = 0  # counter-clockwise quarter turns that show the frames upright (the display matrix)
    _mirror = False  # then mirrored left to right (a display matrix with a flip: a mirrored recording)

    def __init__(self, path: str | os.PathLike, *, _opener: Callable[[], Any] | None = None,
                 _constant_rate: bool = False, **kwargs: Any) -> None:
        self._opener = _opener
        self._constant_rate = _constant_rate
        super().__init__(Path(path), **kwargs)

    def _read_header(self, frame_rate: float | None) -> None:
        _import_av()
        container = self._open(None)
        try:
            if not container.streams.video:
                raise ScanError(f"{self.path}: the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fmt_names = set((container.format.name or "").split(","))
            # AVI (and raw elementary streams inside DICOM) have no presentation timestamps.
            self._constant_rate = self._constant_rate or "avi" in fmt_names
            self.fps = float(frame_rate) if frame_rate else (float(rate) if rate else None)
            self.n_frames = int(stream.frames) if stream.frames else None
            self._turns, self._mirror = _upright_transform(*_first_frame_display(container, stream))
            h, w = int(stream.height), int(stream.width)
            self.shape = (w, h) if self._turns % 2 else (h, w)
            self.timing = "constant-rate" if self._constant_rate else "pts"
        finally:
            container.close()

    def _open(self, frame_index: int | None):
        av = _import_av()
        try:
            return self._opener() if self._opener is not None else av.open(str(self.path))
        except av.error.FFmpegError as exc:
            raise ScanReadError(self.path, frame_index, f"not a readable video ({exc})") from None

    def _frames(self, sampler: FrameSampler) -> Iterator[tuple[int, float, np.ndarray]]:
        av = _import_av()
        container = self._open(None)
        decoded = 0
        try:
            stream = container.streams.video[0]
            state = {"first_pts": None, "prev": None}
            fault: str | None = None

            def kept(frames):
                """Number the decoded ``frames`` and yield those the sampler keeps."""
                nonlocal decoded
                for frame in frames:
                    item = self._frame(frame, decoded, stream, state, sampler)
                    decoded += 1
                    if item is not None:
                        yield item

            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                    if packet.is_corrupt:
                        # A partial packet (cut at the end of a truncated file) would
                        # decode into a half-grey frame: stop before it.
                        fault = "incomplete compressed frame (truncated or damaged file)"
                        break
                    frames = packet.decode()
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    fault = f"damaged or truncated video data ({exc})"
                    break
                yield from kept(frames)
            if fault is not None:
                # Frames still inside the decoder (B-frame delay) were decoded
                # from intact data: hand them out before reporting the fault.
                try:
                    remaining = stream.codec_context.decode(None)
                except av.error.FFmpegError:
                    remaining = []
                yield from kept(remaining)
                raise ScanReadError(self.path, decoded, fault)
            if self.n_frames is not None and decoded < self.n_frames:
                raise ScanReadError(
                    self.path,
                    decoded,
                    f"the video ends after {decoded} frames but its header announces {self.n_frames} "
                    "(truncated file)",
                )
        finally:
            container.close()

    def _frame(self, frame: Any, index: int, stream: Any, state: dict, sampler: FrameSampler):
        if frame.is_corrupt:
            raise ScanReadError(
                self.path, index, "the decoder flagged the frame as corrupt (damaged or truncated data)"
            )
        time = self._time(frame, index, stream, state)
        if not sampler.keep(index, time):
            return None
        bits = max((c.bits for c in frame.format.components), default=8)
        if bits > 8:
            image = _to_gray(frame.to_ndarray(format="gray16le"), max_value=65535.0, what=str(self.path))
        else:
            image = _to_gray(frame.to_ndarray(format="gray"), max_value=255.0, what=str(self.path))
        if self._turns or self._mirror:  # upright, as a player shows it (the header's shape is already turned)
            image = np.rot90(image, self._turns)
            image = np.ascontiguousarray(image[:, ::-1] if self._mirror else image)
        return index, time, image

    def _time(self, frame: Any, index: int, stream: Any, state: dict) -> float:
        """Seconds from the first frame: pts-based, or ``index / fps`` for constant-rate sources."""
        step = 1.0 / self.fps if self.fps else 0.0
        if self._constant_rate and self.fps:
            t = index / self.fps
        elif frame.pts is not None and stream.time_base is not None:
            if state["first_pts"] is None:
                state["first_pts"] = frame.pts
            t = float((frame.pts - state["first_pts"]) * stream.time_base)
            if state["prev"] is not None and t <= state["prev"]:
                # Out-of-order or repeated timestamps (broken muxing): keep time monotonic.
                t = state["prev"] + step
        else:
            t = (state["prev"] + step) if state["prev"] is not None else 0.0
        state["prev"] = t
        return t

    def _sample(self, n: int, min_interval: float) -> Iterator[tuple[int, float, np.ndarray]]:
        got = 0
        for item in self._frames(FrameSampler(1, 1.0 / min_interval if min_interval > 0 else None)):
            yield item
            got += 1
            if got >= n:
                return


# ----------------------------------------------------------------------------- DICOM

#: DICOM video transfer syntaxes (MPEG-2, H.264, HEVC), decoded with PyAV.
_DICOM_VIDEO_SYNTAXES = {
    "1.2.840.10008.1.2.4.100": "mpegvideo",
    "1.2.840.10008.1.2.4.100.1": "mpegvideo",
    "1.2.840.10008.1.2.4.101": "mpegvideo",
    "1.2.840.10008.1.2.4.101.1": "mpegvideo",
    "1.2.840.10008.1.2.4.102": "h264",
    "1.2.840.10008.1.2.4.102.1": "h264",
    "1.2.840.10008.1.2.4.103": "h264",
    "1.2.840.10008.1.2.4.103.1": "h264",
    "1.2.840.10008.1.2.4.104": "h264",
    "1.2.840.10008.1.2.4.104.1": "h264",
    "1.2.840.10008.1.2.4.105": "h264",
    "1.2.840.10008.1.2.4.105.1": "h264",
    "1.2.840.10008.1.2.4.106": "h264",
    "1.2.840.10008.1.2.4.106.1": "h264",
    "1.2.840.10008.1.2.4.107": "hevc",
    "1.2.840.10008.1.2.4.108": "hevc",
}

#: Photometric interpretations read (YBR_* are converted to RGB by pydicom, then to luma).
_SUPPORTED_PHOTOMETRIC = (
    "MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR",
)


def _quiet_pydicom_decoders() -> None:
    """pydicom logs every failed frame decode with its traceback; the ScanReadError raised here says it once."""
    logger = logging.getLogger("pydicom.pixels.decoders.base")
    if not any(isinstance(f, _DropTracebacks) for f in logger.filters):
        logger.addFilter(_DropTracebacks())


class _DropTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def _import_pydicom():
    # 3.0 (pyproject.toml): pydicom.pixels, the decoders and iter_pixels read below, came with it
    return optional_import("pydicom", "dicom", purpose="reading DICOM", minimum=("3.0", "pydicom.pixels"))


class DicomScan(ScanSource):
    """A DICOM single- or multi-frame image read with pydicom (see the module docstring)."""

    kind = "dicom"

    def _read_header(self, frame_rate: float | None) -> None:
        pydicom = _import_pydicom()
        try:
            ds = pydicom.dcmread(str(self.path), stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many types for broken headers
            raise ScanReadError(self.path, None, f"not a readable DICOM file ({exc})") from None
        self._meta = ds
        if "Rows" not in ds or "Columns" not in ds:
            raise ScanReadError(self.path, None, self._no_image())
        self.shape = (int(ds.Rows), int(ds.Columns))
        self.n_frames = max(1, int(_num(ds.get("NumberOfFrames"), 1)))
        self.region = region_from_dicom(ds)
        meta = getattr(ds, "file_meta", None)
        # No file meta (a bare dataset, no preamble): the encoding pydicom found when it read the header
        # (Implicit VR Little Endian, the DICOM default, when it cannot tell); the pixel decoder is then
        # told so, as it reads only files that name their transfer syntax.
        self._bare = not getattr(meta, "TransferSyntaxUID", "")
        self.transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or _bare_syntax(ds))
        self.photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        self._video_codec = _DICOM_VIDEO_SYNTAXES.get(self.transfer_syntax)
        if self._video_codec is None and self.photometric not in _SUPPORTED_PHOTOMETRIC:
            raise ScanError(
                f"{self.path}: unsupported Photometric Interpretation {self.photometric!r} "
                f"(supported: {', '.join(_SUPPORTED_PHOTOMETRIC)})"
            )
        self._bits_stored = int(_num(ds.get("BitsStored"), _num(ds.get("BitsAllocated"), 8)))
        self._signed = int(_num(ds.get("PixelRepresentation"), 0)) == 1
        # a VOI (window or VOI LUT) of a monochrome image: frames are read as a viewer shows them
        self._voi = self.photometric in ("MONOCHROME1", "MONOCHROME2") and self._video_codec is None and (
            "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds))
        if self._voi:  # a VOI that cannot be applied is refused at open, before any frame is scored
            self._displayed(np.zeros((1, 1), dtype=np.int32 if self._signed else np.uint16))
        if self.photometric == "PALETTE COLOR" and self._video_codec is None:  # so is a palette without its table
            self._convert(np.zeros((1, 1), dtype=np.uint16 if self._bits_stored > 8 else np.uint8))
        self._times, self.fps, self.timing = _dicom_times(ds, self.n_frames, frame_rate)
        if self._video_codec is None:
            self._check_decoder()

    def _no_image(self) -> str:
        """Why a file read as DICOM has no Rows/Columns: a DICOM without an image (a report), or not DICOM at all."""
        if is_dicom_file(self.path):
            return "the DICOM file has no image (Rows/Columns missing: a structured report or other non-image object?)"
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
        except OSError:
            head = b"?"
        if not head:
            return "empty file"
        try:
            found = sniff(head)
            content = f"its content is {found.kind} data ({found.format}), not DICOM; rename it {found.suffix}"
        except UnsupportedContent:
            content = "it has no DICM marker and no DICOM image elements"
        return f"not a DICOM file: {content}"

    def _check_decoder(self) -> None:
        from pydicom.pixels import get_decoder  # noqa: PLC0415
        from pydicom.uid import UID  # noqa: PLC0415

        uid = UID(self.transfer_syntax)
        label = f"{uid.name} ({uid})" if uid.name != uid else str(uid)
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise ScanError(f"{self.path}: pydicom cannot decode the transfer syntax {label}") from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a pydicom decoding plug-in"
            raise ScanError(
                f"{self.path}: no installed decoder for the transfer syntax {label}. "
                f"Install one of these pydicom plug-ins: {needs}"
            )

    def _convert(self, arr: np.ndarray) -> np.ndarray:
        if self.photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut  # noqa: PLC0415

            try:
                rgb = apply_color_lut(arr, self._meta)
            except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:  # a missing or broken table
                raise ScanError(f"{self.path}: its PALETTE COLOR lookup table cannot be applied ({exc})") from None
            return _to_gray(rgb, max_value=float(np.iinfo(rgb.dtype).max), what=str(self.path))
        if self._voi:
            image = self._displayed(arr)
        else:
            bits = self._bits_stored
            if self._signed:
                arr = arr.astype(np.float32) + np.float32(2 ** (bits - 1))
            image = _to_gray(arr, max_value=float(2**bits - 1), what=str(self.path))
        if self.photometric == "MONOCHROME1":
            image = 1.0 - image
        return image

    def _displayed(self, arr: np.ndarray) -> np.ndarray:
        """A monochrome frame with a VOI (a window, or a VOI LUT) as a viewer shows it: the modality transform
        (rescale slope and intercept, or a modality LUT), then the first VOI transform (pydicom), scaled to [0, 1]
        by that transform's own output range (what it gives far below and far above the window)."""
        from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: PLC0415

        ds = self._meta
        try:
            with np.errstate(over="ignore"):  # SIGMOID windows: exp overflows to the range's ends
                values = apply_voi_lut(apply_modality_lut(arr, ds), ds, prefer_lut=True)
                if "VOILUTSequence" in ds:  # a table: 0 to its descriptor's bits (or its largest entry, if larger)
                    item = ds.VOILUTSequence[0]
                    lo, hi = 0.0, float(max(2 ** int(item.LUTDescriptor[2]) - 1, np.max(np.asarray(item.LUTData))))
                else:  # a window: what it gives far below and far above it
                    ends = apply_voi_lut(np.array([-1e30, 1e30]), ds).astype(np.float64)
                    lo, hi = float(ends.min()), float(ends.max())
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ScanError(f"{self.path}: the DICOM VOI (window) cannot be applied ({exc})") from None
        if not np.isfinite([lo, hi]).all() or hi <= lo:
            raise ScanError(f"{self.path}: the DICOM VOI (window) has no output range ({lo:g} to {hi:g})")
        image = ((np.asarray(values, dtype=np.float64) - lo) / (hi - lo)).astype(np.float32)
        return np.clip(image, 0.0, 1.0, out=image)

    def _frames(self, sampler: FrameSampler) -> Iterator[tuple[int, float, np.ndarray]]:
        indices = [i for i in range(self.n_frames) if sampler.keep(i, self._times[i])]
        if not indices:
            return
        if self._video_codec is not None:
            yield from self._video_frames(indices)
            return
        from pydicom.pixels import iter_pixels  # noqa: PLC0415

        _quiet_pydicom_decoders()
        syntax = {"transfer_syntax_uid": self.transfer_syntax} if self._bare else {}
        frames = iter_pixels(str(self.path), indices=indices if len(indices) < self.n_frames else None, **syntax)
        k = 0
        try:
            while k < len(indices):
                try:
                    arr = next(frames)
                except StopIteration:
                    raise ScanReadError(
                        self.path,
                        indices[k],
                        f"the pixel data ends early: {self.n_frames} frames announced (truncated file)",
                    ) from None
                except Exception as exc:  # decoders raise ValueError, RuntimeError, struct.error...
                    raise ScanReadError(self.path, indices[k], f"damaged or truncated pixel data ({exc})") from None
                index = indices[k]
                yield index, self._times[index], self._convert(arr)
                k += 1
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _video_frames(self, indices: list[int]) -> Iterator[tuple[int, float, np.ndarray]]:
        """Decode a DICOM video transfer syntax (MPEG-2/H.264/HEVC stream) with PyAV."""
        pydicom = _import_pydicom()
        from pydicom.encaps import generate_fragments  # noqa: PLC0415

        try:
            ds = pydicom.dcmread(str(self.path), force=True)
            data = b"".join(generate_fragments(ds.PixelData))
        except Exception as exc:
            raise ScanReadError(self.path, 0, f"cannot read the encapsulated video stream ({exc})") from None
        codec = self._video_codec
        av = _import_av()

        def opener():
            # Let FFmpeg probe the stream (elementary, program or transport
            # stream); fall back to the elementary-stream demuxer of the codec.
            try:
                return av.open(io.BytesIO(data))
            except av.error.FFmpegError:
                return av.open(io.BytesIO(data), format=codec)

        video = VideoScan(self.path, frame_rate=self.fps or DEFAULT_FRAME_RATE, _opener=opener, _constant_rate=True)
        video.n_frames = self.n_frames  # the DICOM count, to detect truncation
        for index, _, image in video._frames(FrameSampler(indices=indices)):
            if index >= self.n_frames:
                return
            if self.photometric == "MONOCHROME1":
                image = 1.0 - image
            yield index, self._times[index], image


def _bare_syntax(ds: Any) -> str:
    """The transfer syntax of a dataset without file meta: the VR and byte order it was read with."""
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is False:
        return "1.2.840.10008.1.2.1" if little is not False else "1.2.840.10008.1.2.2"
    return "1.2.840.10008.1.2"


def _num(value: Any, default: float) -> float:
    return dicom_number(value, default, float)


def _dicom_times(ds: Any, n: int, frame_rate: float | None) -> tuple[list[float], float | None, str]:
    """Frame times (s), nominal fps and the timing source of a DICOM dataset."""
    if n == 1:
        return [0.0], _check_fps(frame_rate, "frame_rate"), "single-frame"
    vector = ds.get("FrameTimeVector")
    if vector is not None:
        try:
            steps = np.atleast_1d(np.asarray(vector, dtype=np.float64)).tolist()
        except (TypeError, ValueError):
            steps = []
        if len(steps) == n and all(math.isfinite(s) and s >= 0 for s in steps):
            times = np.cumsum(steps) / 1000.0
            times = (times - times[0]).tolist()
            positive = [s for s in steps[1:] if s > 0]
            fps = 1000.0 / float(np.median(positive)) if positive else None
            return times, fps, "FrameTimeVector"
    frame_time = _num(ds.get("FrameTime"), 0.0)
    if frame_time > 0 and math.isfinite(frame_time):
        return [i * frame_time / 1000.0 for i in range(n)], 1000.0 / frame_time, "FrameTime"
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _num(ds.get(keyword), 0.0)
        if rate > 0 and math.isfinite(rate):
            return [i / rate for i in range(n)], rate, keyword
    rate, timing = _fallback_rate(frame_rate)
    return [i / rate for i in range(n)], rate, timing


def _fallback_rate(frame_rate: Any) -> tuple[float, str]:
    """The rate of a source without timing, and its timing label: ``frame_rate`` when given, else the default."""
    given = _check_fps(frame_rate, "frame_rate")
    return (given, "frame_rate") if given else (DEFAULT_FRAME_RATE, "default")


# ----------------------------------------------------------------------------- image sequences


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value: ``f2`` < ``f10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Read one image file (PNG, JPEG, TIFF, BMP, or single-frame DICOM) as float32 gray in [0, 1].

    Image files are decoded by :func:`crl_uiqa.io.read_gray`, like every image
    crl-uiqa scores (8-bit / 255, 16-bit / 65535, colour to BT.601 luma, alpha
    ignored). DICOM files are read as by :class:`DicomScan`; a multi-frame
    DICOM is a scan of its own and is refused (open it with :func:`open_scan`).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ScanReadError
        If the file cannot be decoded (``frame_index`` is ``None``).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"image not found: {path}")
    if path.suffix.lower() in DICOM_EXTENSIONS or is_dicom_file(path):
        try:
            scan = DicomScan(path)
        except ScanReadError:
            raise
        except ScanError as exc:  # a photometric or transfer syntax nothing here reads: this file cannot be decoded
            raise ScanReadError(path, None, str(exc).removeprefix(f"{path}: ")) from None
        if scan.n_frames != 1:
            raise ScanReadError(path, None, f"a multi-frame DICOM ({scan.n_frames} frames) is not a single image: "
                                "give it as a scan of its own (select --input FILE; Python: open_scan)")
        frames = scan._frames(FrameSampler())
        try:
            return next(frames)[2]
        except StopIteration:
            raise ScanReadError(path, 0, "the DICOM file has no frames") from None
        finally:
            frames.close()
    try:
        return read_gray(path)
    except ImageReadError as exc:
        raise ScanReadError(path, None, exc.reason) from None


def _list_images(path: Path) -> list[Path]:
    text = str(path)
    if _is_pattern(text):
        # Keep images and DICOM files (also extension-less ones such as IM0001).
        matched = [Path(p) for p in _glob.glob(text) if Path(p).is_file()]
        files = [p for p in matched if p.suffix.lower() in IMAGE_EXTENSIONS | DICOM_EXTENSIONS or is_dicom_file(p)]
        _tell_videos(text, sorted((p for p in matched if p.suffix.lower() in VIDEO_EXTENSIONS),
                                  key=lambda p: natural_key(p.name)), frames=bool(files), holder="a glob pattern")
        what = f"the pattern {text!r}"
    elif path.is_dir():
        entries = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        files = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS | DICOM_EXTENSIONS]
        _tell_videos(path, sorted((p for p in entries if p.suffix.lower() in VIDEO_EXTENSIONS),
                                  key=lambda p: natural_key(p.name)), frames=bool(files))
        what = f"the folder {path}"
    else:
        files = [path]
        what = str(path)
    if not files:
        raise NotFoundError(
            f"no image files match {what} (looked for {', '.join(sorted(IMAGE_EXTENSIONS | DICOM_EXTENSIONS))})"
        )
    return sorted(files, key=lambda p: natural_key(p.name))


def _tell_videos(folder: Path | str, videos: list[Path], *, frames: bool, holder: str = "a folder") -> None:
    """A folder (or a glob pattern, ``holder``) is one scan of its image frames: say so when it also holds videos,
    which it skips (a warning), or holds only videos (an error); either way, name how to score a video (give the
    file)."""
    if not videos:
        return
    import shlex

    how = (f"{holder} is read as one scan of its image frames; to score a video, give the file itself (e.g. --input "
           f"{shlex.quote(str(videos[0]))})")
    where = "in the folder" if holder == "a folder" else "matching the pattern"
    if not frames:
        raise InputError(f"{folder}: {'holds' if holder == 'a folder' else 'matches'} {len(videos)} video file(s) "
                         f"and no image frames; {how}")
    log.warning("%s: %d video file(s) %s skipped; %s", folder, len(videos), where, how)


class ImageSequenceScan(ScanSource):
    """A folder, glob pattern or single file of frame images (see the module docstring)."""

    kind = "images"

    def _read_header(self, frame_rate: float | None) -> None:
        self.files = _list_images(self.path)
        self.fps, self.timing = _fallback_rate(frame_rate)
        self.n_frames = len(self.files)
        self.shape = tuple(read_image_file(self.files[0]).shape[:2])

    def _frames(self, sampler: FrameSampler) -> Iterator[tuple[int, float, np.ndarray]]:
        for index, file in enumerate(self.files):
            time = index / self.fps
            if not sampler.keep(index, time):
                continue
            try:
                image = read_image_file(file)
            except ScanReadError as exc:
                raise ScanReadError(file, index, exc.message) from None
            except FileNotFoundError:
                raise ScanReadError(file, index, "the file disappeared while reading the sequence") from None
            yield index, time, image


class ArrayScan(ScanSource):
    """Frames already in memory as a scan: an ``(N, H, W)`` or ``(N, H, W, C)`` array, or a sequence of
    frames (arrays, PIL images, tensors), for a pipeline that holds its own frames.

    Each frame is converted as a file of the same pixels is read (:func:`crl_uiqa.io.gray_array`: ``uint8``
    / 255, ``uint16`` / 65535, colour to luma, float frames already in [0, 1]); frames are at
    ``index / frame_rate`` (:data:`DEFAULT_FRAME_RATE` when not given). ``name`` names the scan in results
    and reports. A frame that cannot be converted raises :class:`ScanReadError` naming its index, after the
    frames before it (as a damaged file does).
    """

    kind = "array"

    def __init__(self, frames: Any, *, name: str = "frames", **kwargs: Any) -> None:
        from ..scoring import as_image_list

        if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name:
            raise ConfigError(f"name must be a short scan name (no path separators), got {name!r}")
        self._items = as_image_list(frames)
        super().__init__(Path(name), **kwargs)
        self.name = name

    def _read_header(self, frame_rate: float | None) -> None:
        if not self._items:
            raise ScanReadError(self.path, 0, "the scan has no frames")
        self.n_frames = len(self._items)
        self.fps, self.timing = _fallback_rate(frame_rate)
        self.shape = tuple(self._gray(0).shape[:2])

    def _gray(self, index: int) -> np.ndarray:
        from ..io import gray_array

        try:
            return gray_array(self._items[index], f"frame {index}")
        except ImageReadError as exc:
            raise ScanReadError(self.path, index, exc.reason) from None

    def _frames(self, sampler: FrameSampler) -> Iterator[tuple[int, float, np.ndarray]]:
        for index in range(len(self._items)):
            time = index / self.fps
            if sampler.keep(index, time):
                yield index, time, self._gray(index)


# ----------------------------------------------------------------------------- entry point


def scan_kind(path: str | os.PathLike) -> str:
    """``"video"``, ``"dicom"`` or ``"images"`` for a path, by extension then by content.

    Raises
    ------
    crl_uiqa.errors.NotFoundError
        If the file or folder does not exist (also a ``FileNotFoundError``).
    crl_uiqa.errors.ScanError
        If the extension is not supported and the file is not DICOM.
    """
    p = Path(path)
    text = str(path)
    if _is_pattern(text) and not p.exists():
        return "images"
    if not p.exists():
        raise NotFoundError(f"scan not found: {p}")
    if p.is_dir():
        return "images"
    if not p.is_file():  # a named pipe waited for ever for a writer (reading its header), a device too
        raise ScanError(f"{p}: not a regular file or folder (a pipe or a device?); a scan is read from a file "
                        "(a camera: give its index to live, --input 0)")
    ext = p.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in DICOM_EXTENSIONS or is_dicom_file(p):
        return "dicom"
    if ext in IMAGE_EXTENSIONS:
        return "images"
    raise ScanError(
        f"{p}: unsupported scan file type {ext or '(no extension)'!r}; expected a video "
        f"({', '.join(sorted(VIDEO_EXTENSIONS))}), a DICOM file, an image "
        f"({', '.join(sorted(IMAGE_EXTENSIONS))}), a folder of images or a glob pattern"
    )


def open_scan(
    path: str | os.PathLike,
    *,
    every: int = 1,
    fps: float | None = None,
    crop: Region | Sequence[int] | str | None = None,
    frame_rate: float | None = None,
) -> ScanSource:
    """Open a video, DICOM file or image sequence as a stream of frames.

    Parameters
    ----------
    path : str or os.PathLike
        A video file, a DICOM file (by extension or ``DICM`` preamble), an
        image file, a folder of images or a glob pattern (``"dir/*.png"``).
    every : int
        Keep every ``every``-th source frame (frames ``0, every, 2*every...``).
    fps : float, optional
        Then keep at most ``fps`` frames per second, by frame time.
    crop : Region, (top, left, height, width), "top,left,height,width" or "auto", optional
        Cut every frame to this box. ``"auto"`` uses the DICOM ultrasound
        region when present, else :func:`crl_uiqa.region.detect_region` on a
        few sampled frames (resolved on first iteration). A manual box always
        overrides the DICOM region and detection.
    frame_rate : float, optional
        Frame rate of image sequences, and of DICOM files without timing
        elements (default :data:`DEFAULT_FRAME_RATE`); for videos it overrides
        the container's nominal rate (used only where timestamps are missing).

    Returns
    -------
    ScanSource
        Iterate it for :class:`Frame` objects.

    Raises
    ------
    FileNotFoundError
        The path does not exist (or a pattern/folder matches no image).
    ScanReadError
        The header is unreadable (during iteration: a corrupt frame).
    crl_uiqa.errors.ScanError
        Unsupported file type, or a video's or DICOM's frames above
        :func:`crl_uiqa.io.max_pixels` (``--max-pixels``).
    crl_uiqa.errors.ConfigError
        Bad arguments (not a path, ``every``, ``fps``, ``frame_rate``, ``crop``).
    crl_uiqa.errors.MissingDependencyError
        A missing decoder package (PyAV, pydicom).
    crl_uiqa.errors.InputError
        A path that is not UTF-8.
    """
    from ..files import check_utf8_names  # noqa: PLC0415

    if not isinstance(path, (str, os.PathLike)):  # a generator of frames failed in pathlib with a TypeError
        what = "an empty list" if isinstance(path, (list, tuple)) and not path else type(path).__name__
        raise ConfigError(f"a scan is a path (video, DICOM file, image folder or glob) or frames in memory (an "
                          f"array, or a list of arrays or images, e.g. list(frames)); got {what}")
    check_utf8_names([str(path)])  # its name goes into every output: refused before any frame is decoded
    kind = scan_kind(path)
    frame_rate = _check_fps(frame_rate, "frame_rate")
    if kind in ("video", "dicom"):
        scan = (VideoScan if kind == "video" else DicomScan)(path, every=every, fps=fps, crop=crop,
                                                              frame_rate=frame_rate)
        _check_frame_pixels(scan, path)
        return scan
    return ImageSequenceScan(path, every=every, fps=fps, crop=crop, frame_rate=frame_rate)  # read_gray checks


def _check_frame_pixels(scan: ScanSource, path: str | os.PathLike) -> None:
    """Refuse a video's or DICOM's frames above :func:`crl_uiqa.io.max_pixels` from the header, before one is
    decoded, as a still image is refused (a 0.5 MB H.264 of 8192x8192 frames took 3.3 GB: BENCHMARKS.md)."""
    from ..io import _too_large, max_pixels  # noqa: PLC0415

    (rows, cols), limit = scan.shape, max_pixels()
    if rows * cols > limit:
        raise ScanError(f"{path}: {_too_large(cols, rows, limit)}")
