"""From a decoded frame to a model input: the one region, crop and resize policy of every video path.

The region of a scan or stream is decided once, in this order:

1. a **manual crop** box (``crop=(top, left, height, width)``) wins;
2. else the **DICOM** Sequence of Ultrasound Regions, when the scan has one
   (``region="auto"`` or ``"dicom"``; ``"dicom"`` without one is an error);
3. else, with ``region="auto"``, **detection** (:func:`crl_uiqa.video.region.detect_region`)
   on the first few frames;
4. else (``region="none"``) the **whole frame**.

Every frame is then cut to the region's box and resized to the model's input
size with antialiased bilinear interpolation, exactly as ``score`` resizes image
files (:func:`crl_uiqa.io.to_tensor`).

:class:`RegionPolicy` holds the user's choice and applies steps 1-4;
:class:`RegionCutter` applies it to a stream of :class:`~crl_uiqa.video.scan.Frame`
objects (buffering the frames detection looks at, then releasing them cut).
``select``, ``live`` and :meth:`ScanSource.find_region <crl_uiqa.video.scan.ScanSource.find_region>`
all go through them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ConfigError, ScanError
from ..io import MIN_IMAGE_SIDE
from .region import Region, RegionDetection, detect_region

if TYPE_CHECKING:
    import torch

    from .scan import Frame

log = logging.getLogger(__name__)

__all__ = ["REGION_MODES", "REGION_FRAMES", "MAX_REGION_FRAMES", "FRAME_BATCH", "RegionPolicy", "RegionCutter", "batch_size_setting",
           "model_input", "whole_frame"]

#: Accepted ``region`` modes.
REGION_MODES = ("auto", "dicom", "none")
#: Default number of frames region auto-detection looks at.
REGION_FRAMES = 30
#: Most frames region auto-detection may look at (``--region-frames``): they are held at the source resolution
#: until the region is found (300 frames of 1920 x 1080 are 2.3 GiB as float32), and 10 s at 30 fps already shows
#: which pixels move.
MAX_REGION_FRAMES = 300
#: Default frames per forward pass of ``select`` and ``live --no-realtime``.
FRAME_BATCH = 32


def batch_size_setting(value: Any) -> int:
    """The frames-per-forward-pass setting, checked before any work (:class:`crl_uiqa.errors.ConfigError`)."""
    from .. import validate as v

    return v.integer(v.flag("batch_size"), value, minimum=1, maximum=v.MAX_BATCH)


def whole_frame(shape: Sequence[int]) -> RegionDetection:
    """The region of ``region="none"``: every pixel of an ``(H, W)`` frame."""
    return RegionDetection(Region(0, 0, int(shape[0]), int(shape[1])), np.ones(tuple(shape[:2]), dtype=bool), "none")


@dataclass(frozen=True)
class RegionPolicy:
    """How to find the region of a scan (see the module docstring).

    Attributes
    ----------
    crop : Region or None
        A manual box (wins over everything).
    mode : {"auto", "dicom", "none"}
        What to do without a manual box.
    frames : int
        Frames auto-detection looks at.
    margin : int
        Pixels the detected box is grown by.
    """

    crop: Region | None = None
    mode: str = "auto"
    frames: int = REGION_FRAMES
    margin: int = 2

    @classmethod
    def create(cls, crop: Region | Sequence[int] | str | None = None, region: str = "auto",
               frames: int = REGION_FRAMES, margin: int = 2) -> RegionPolicy:
        """Validate and build a policy (a bad mode, box or frame count raises :class:`crl_uiqa.errors.ConfigError`)."""
        mode = str(region).strip().lower()
        if mode not in REGION_MODES:
            raise ConfigError(f"region must be one of {', '.join(REGION_MODES)}, got {region!r}")
        from .. import validate as v

        frames = v.integer(v.flag("region_frames"), frames, minimum=1, maximum=MAX_REGION_FRAMES)
        box = None if crop is None else Region.coerce(crop)
        if box is not None:  # every frame would be too small to use
            v.crop_side(box.as_tuple())
        return cls(box, mode, int(frames), int(margin))

    @property
    def needs_pixels(self) -> bool:
        """Whether the region may have to be detected from frames (no manual box, mode ``auto``)."""
        return self.crop is None and self.mode == "auto"

    def check_source(self, where: Any, dicom: Region | None) -> None:
        """Fail before any work when ``region="dicom"`` is asked of a source without a DICOM region."""
        if self.crop is None and self.mode == "dicom" and dicom is None:
            raise ScanError(
                f"{where}: no DICOM Sequence of Ultrasound Regions (tissue) in this scan; "
                "use --region auto, --region none or a --crop box"
            )

    def known(self, shape: Sequence[int], dicom: Region | None, where: Any) -> RegionDetection | None:
        """The region known without looking at pixels (steps 1, 2 and 4), or ``None`` when it must be detected.

        ``shape`` is the ``(H, W)`` of the frames; ``dicom`` the scan's DICOM
        region (``None`` for videos, image sequences and cameras).
        """
        self.check_source(where, dicom)
        shape = (int(shape[0]), int(shape[1]))
        if shape != (0, 0) and min(shape) < MIN_IMAGE_SIDE:  # a 2x2 video was scored, where a 2x2 image is skipped
            raise ScanError(f"{where}: its frames are {shape[0]}x{shape[1]} pixels, below the model pipeline's "
                            f"minimum of {MIN_IMAGE_SIDE} per side")
        if self.crop is not None:
            if shape != (0, 0) and not self.crop.fits(shape):
                raise ConfigError(f"{where}: crop box (top, left, height, width)={self.crop.as_tuple()} does not fit "
                                 f"its {shape[0]}x{shape[1]} frames")
            return RegionDetection.from_box(self.crop, shape, "manual")
        if self.mode != "none" and dicom is not None:
            return RegionDetection.from_box(dicom, shape, "dicom")
        if self.mode == "none":
            return whole_frame(shape)
        return None

    def detect(self, images: Sequence[np.ndarray] | np.ndarray, where: Any) -> RegionDetection:
        """Step 3: detection on ``images`` (frames of another size than the first are left out)."""
        shape = images[0].shape
        same = [im for im in images if im.shape == shape]
        det = detect_region(np.stack(same), margin=self.margin)
        log.info("%s: ultrasound region %s (top, left, height, width) found by %s on %d frames",
                 where, det.box.as_tuple(), det.method, len(same))
        return det

    def resolve(self, shape: Sequence[int], dicom: Region | None, where: Any,
                images: Sequence[np.ndarray] | np.ndarray) -> RegionDetection:
        """The whole policy: :meth:`known`, else :meth:`detect` on ``images``."""
        det = self.known(shape, dicom, where)
        return det if det is not None else self.detect(images, where)


def cut(frame: Frame, det: RegionDetection, where: Any) -> Frame:
    """The frame cut to the region's box (the frame itself for a whole-frame region of its size)."""
    from .scan import Frame

    image = frame.image
    if det.method == "none":  # the whole frame, whatever its size: what the error below tells a sequence of sizes to use
        return frame
    if image.shape != det.mask.shape:
        raise ScanError(
            f"{where}: frame {frame.index} is {image.shape[0]}x{image.shape[1]} but the region was set "
            f"on {det.mask.shape[0]}x{det.mask.shape[1]} frames; frames of different sizes need --region none"
        )
    return Frame(frame.index, frame.time, np.ascontiguousarray(det.box.crop(image)))


def model_input(image: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """A cut frame as the model's ``(1, h, w)`` input (antialiased bilinear, as ``score`` does)."""
    from ..io import to_tensor

    return to_tensor(image, tuple(size))


class RegionCutter:
    """Applies a :class:`RegionPolicy` to a stream of frames.

    :meth:`push` takes decoded frames in stream order and returns the frames
    ready to score, cut to the region. While the region must still be
    detected, frames are held (up to ``policy.frames`` of them) and released
    together once it is known; :meth:`flush` releases what is held when the
    stream ends early (a short scan, a read error).

    Parameters
    ----------
    policy : RegionPolicy
    where : str
        The scan or camera, for messages.
    shape : (int, int), optional
        Frame size when known before reading (``None`` or ``(0, 0)``: taken from the first frame).
    dicom : Region, optional
        The scan's DICOM region.

    Attributes
    ----------
    det : RegionDetection or None
        The region, once known.
    first_image : numpy.ndarray or None
        The first full (uncut) frame, for drawing the region.
    """

    def __init__(self, policy: RegionPolicy, where: Any, shape: Sequence[int] | None = None,
                 dicom: Region | None = None) -> None:
        self.policy = policy
        self.where = where
        self.dicom = dicom
        policy.check_source(where, dicom)
        known_shape = shape is not None and tuple(shape) != (0, 0)
        self.det: RegionDetection | None = policy.known(shape, dicom, where) if known_shape else None
        self.first_image: np.ndarray | None = None
        self._head: list[Frame] = []

    def push(self, frame: Frame) -> list[Frame]:
        """Frames ready to score after ``frame`` arrived (none while the region is being detected)."""
        if self.first_image is None:
            self.first_image = frame.image
        if self.det is not None:
            return [cut(frame, self.det, self.where)]
        self._head.append(frame)
        if self.policy.needs_pixels and self.dicom is None and len(self._head) < self.policy.frames:
            return []
        return self.flush()

    def flush(self) -> list[Frame]:
        """Settle the region on the frames held (if any) and return them cut."""
        head, self._head = self._head, []
        if not head:
            return []
        if self.det is None:
            self.det = self.policy.resolve(head[0].image.shape, self.dicom, self.where, [f.image for f in head])
        return [cut(f, self.det, self.where) for f in head]
