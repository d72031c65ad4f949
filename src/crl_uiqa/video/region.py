"""The ultrasound image region of a capture.

Real ultrasound captures (screen recordings, exported videos, DICOM cine loops)
carry more than the ultrasound image: vendor text, patient and probe
information, calipers and measurement labels, a grey or colour bar, an ECG
trace, and a black background around a fan-shaped (curvilinear or phased probe)
or rectangular (linear probe) image. Quality scores should only look at the
image itself, so this module finds it:

* :func:`region_from_dicom` reads the *Sequence of Ultrasound Regions*
  (0018,6011) that ultrasound DICOM files carry;
* :func:`detect_region` finds the region from the pixels of a few frames (the
  speckle inside the fan changes from frame to frame, overlays do not) or, for
  a single frame, from its bright textured area;
* :func:`draw_region` renders a detection for a visual check.

A manual box, when the user gives one, always overrides both (see
:func:`crl_uiqa.scan.open_scan`).

Coordinates are pixel rows/columns of the full frame: a :class:`Region` is
``(top, left, height, width)`` with ``bottom = top + height`` and
``right = left + width`` exclusive, like numpy slicing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..errors import ArgumentTypeError, ConfigError, InputError

__all__ = [
    "Region",
    "RegionDetection",
    "region_from_dicom",
    "detect_region",
    "draw_region",
]

#: RegionDataType (0018,6014) value of a tissue (B-mode) region.
TISSUE_DATA_TYPE = 1
#: RegionSpatialFormat (0018,6012) value of a 2D region.
SPATIAL_FORMAT_2D = 1


@dataclass(frozen=True)
class Region:
    """An axis-aligned box of a frame: ``(top, left, height, width)`` in pixels.

    ``bottom`` and ``right`` are exclusive, so ``image[r.top:r.bottom,
    r.left:r.right]`` is the region.
    """

    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("top", "left", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"region {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.top < 0 or self.left < 0:
            raise ConfigError(f"region top/left must be >= 0, got top={self.top}, left={self.left}")
        if self.height <= 0 or self.width <= 0:
            raise ConfigError(f"region height/width must be > 0, got height={self.height}, width={self.width}")

    @property
    def bottom(self) -> int:
        """First row below the region."""
        return self.top + self.height

    @property
    def right(self) -> int:
        """First column right of the region."""
        return self.left + self.width

    @property
    def area(self) -> int:
        """Number of pixels in the box."""
        return self.height * self.width

    def as_tuple(self) -> tuple[int, int, int, int]:
        """Return ``(top, left, height, width)``."""
        return (self.top, self.left, self.height, self.width)

    @classmethod
    def from_bounds(cls, top: int, left: int, bottom: int, right: int) -> Region:
        """Build a region from its edges (``bottom``/``right`` exclusive)."""
        return cls(int(top), int(left), int(bottom) - int(top), int(right) - int(left))

    @classmethod
    def parse(cls, text: str) -> Region:
        """Parse ``"top,left,height,width"`` (commas or spaces), e.g. a ``--crop`` argument.

        Raises
        ------
        crl_uiqa.errors.ConfigError
            If the text is not four non-negative integers with a positive size.
        """
        parts = [p for p in str(text).replace(",", " ").split() if p]
        if len(parts) != 4:
            raise ConfigError(f"crop box must be 'top,left,height,width' (4 integers), got {text!r}")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"crop box must be 'top,left,height,width' (4 integers), got {text!r}") from None
        return cls(*values)

    @classmethod
    def coerce(cls, value: Region | Sequence[int] | str) -> Region:
        """Return ``value`` as a :class:`Region` (a Region, a 4-sequence or a string)."""
        if isinstance(value, Region):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        try:
            items = list(value)
        except TypeError:
            raise ConfigError(f"crop must be (top, left, height, width), got {value!r}") from None
        if len(items) != 4:
            raise ConfigError(f"crop must be (top, left, height, width), got {value!r}")
        if any(isinstance(v, float) and not float(v).is_integer() for v in items):
            raise ConfigError(f"crop values must be whole pixels, got {value!r}")
        return cls(*(int(v) if isinstance(v, float) else v for v in items))

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether the box lies inside a frame of shape ``(H, W, ...)``."""
        return self.bottom <= int(shape[0]) and self.right <= int(shape[1])

    def clip(self, shape: Sequence[int]) -> Region:
        """The part of the box inside a frame of shape ``(H, W, ...)``.

        Raises
        ------
        crl_uiqa.errors.ConfigError
            If the box lies entirely outside the frame.
        """
        h, w = int(shape[0]), int(shape[1])
        top, left = min(self.top, h), min(self.left, w)
        bottom, right = min(self.bottom, h), min(self.right, w)
        if bottom <= top or right <= left:
            raise ConfigError(f"region {self.as_tuple()} lies outside a {h}x{w} frame")
        return Region.from_bounds(top, left, bottom, right)

    def expand(self, margin: int, shape: Sequence[int]) -> Region:
        """Grow the box by ``margin`` pixels on each side, clipped to a frame of ``shape``."""
        m = int(margin)
        if m < 0:
            raise ConfigError(f"margin must be >= 0, got {margin}")
        h, w = int(shape[0]), int(shape[1])
        return Region.from_bounds(
            max(0, self.top - m), max(0, self.left - m), min(h, self.bottom + m), min(w, self.right + m)
        )

    def crop(self, image: np.ndarray) -> np.ndarray:
        """Return ``image[top:bottom, left:right]`` (a view) of an ``(H, W)`` or ``(H, W, C)`` image.

        Raises
        ------
        crl_uiqa.errors.ConfigError
            If the box does not fit inside the image.
        crl_uiqa.errors.InputError
            If ``image`` is not (H, W) or (H, W, C).
        """
        image = np.asarray(image)
        if image.ndim < 2:
            raise InputError(f"cannot crop an array of shape {image.shape}: expected (H, W) or (H, W, C)")
        if not self.fits(image.shape):
            raise ConfigError(
                f"crop box (top={self.top}, left={self.left}, height={self.height}, width={self.width}) "
                f"does not fit in a {image.shape[0]}x{image.shape[1]} image"
            )
        return image[self.top : self.bottom, self.left : self.right]


@dataclass(frozen=True, eq=False)
class RegionDetection:
    """The ultrasound region of a capture.

    Attributes
    ----------
    box : Region
        Bounding box of the region (grown by the detection margin).
    mask : numpy.ndarray
        Boolean ``(H, W)`` mask of the image area itself (the fan or sector), in
        full-frame coordinates.
    method : str
        How it was found: ``"manual"`` (a user box), ``"dicom"`` (the Sequence
        of Ultrasound Regions), ``"temporal-std"`` (pixels that change over the
        frames), ``"intensity"`` (the largest bright non-text area of one frame
        or of the mean frame) or ``"full-frame"`` (nothing found: the whole
        frame).
    """

    box: Region
    mask: np.ndarray = field(repr=False)
    method: str

    @property
    def coverage(self) -> float:
        """Fraction of the frame covered by :attr:`mask`."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @classmethod
    def from_box(cls, box: Region, shape: Sequence[int], method: str) -> RegionDetection:
        """A detection whose mask is the filled box, for manual and DICOM regions."""
        box = box.clip(shape)
        mask = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
        mask[box.top : box.bottom, box.left : box.right] = True
        return cls(box=box, mask=mask, method=method)


# ----------------------------------------------------------------------------- DICOM


def region_from_dicom(ds: Any) -> Region | None:
    """The tissue image region from a DICOM dataset's Sequence of Ultrasound Regions.

    Ultrasound DICOM files describe their image areas in the Sequence of
    Ultrasound Regions (0018,6011). Each item gives a box
    ``RegionLocationMinX0/MinY0/MaxX1/MaxY1`` (inclusive pixel coordinates) and
    a ``RegionDataType`` (0018,6014), 1 being tissue (B-mode). This function
    returns the largest tissue region that is 2D (``RegionSpatialFormat``
    (0018,6012) equal to 1, or absent), the first one on ties, clipped to the
    frame (Rows x Columns) when those are known. Dual or quad views therefore
    give the largest view.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A dataset (pixel data not needed; ``dcmread(..., stop_before_pixels=True)``
        is enough).

    Returns
    -------
    Region or None
        ``None`` when the dataset has no usable tissue region.
    """
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if not regions:
        return None
    rows = _int_or_none(getattr(ds, "Rows", None))
    cols = _int_or_none(getattr(ds, "Columns", None))
    best: Region | None = None
    for item in regions:
        data_type = _int_or_none(getattr(item, "RegionDataType", None))
        if data_type != TISSUE_DATA_TYPE:
            continue
        spatial = _int_or_none(getattr(item, "RegionSpatialFormat", None))
        if spatial is not None and spatial != SPATIAL_FORMAT_2D:
            continue
        coords = [
            _int_or_none(getattr(item, k, None))
            for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")
        ]
        if any(c is None for c in coords):
            continue
        x0, y0, x1, y1 = coords
        if x1 < x0 or y1 < y0 or x0 < 0 or y0 < 0:
            continue
        region = Region.from_bounds(y0, x0, y1 + 1, x1 + 1)
        if rows is not None and cols is not None:
            try:
                region = region.clip((rows, cols))
            except ValueError:
                continue
        if best is None or region.area > best.area:
            best = region
    return best


def dicom_number(value: Any, default: Any = None, cast: Any = int) -> Any:
    """A DICOM attribute value as a number (``cast`` of it), or ``default`` when absent, empty or malformed."""
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except (TypeError, ValueError):
        return default


def _int_or_none(value: Any) -> int | None:
    return dicom_number(value)


# ----------------------------------------------------------------------------- detection

#: Most frames used for the temporal statistics (more are subsampled evenly).
MAX_DETECTION_FRAMES = 64
#: Smallest region kept, as a fraction of the frame; smaller finds fall back.
MIN_REGION_FRACTION = 0.02
#: Single frame: brightness above the background (5th percentile) that counts
#: as image (2 gray levels of 8 bits). Capture backgrounds are black, while
#: tissue, however dark, is not.
BACKGROUND_STEP = 2.0 / 255.0
#: Single frame: local (5 x 5) standard deviation above which a pixel is
#: textured (1 gray level); speckle is, flat bars and backgrounds are not.
TEXTURE_THRESHOLD = 1.0 / 255.0


def detect_region(
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    margin: int = 2,
    std_threshold: float | None = None,
    intensity_threshold: float | None = None,
) -> RegionDetection:
    """Find the ultrasound image region (fan, sector or rectangle) of a capture.

    With two or more frames the region is where the pixels change over time
    (method ``"temporal-std"``); with one frame, or frames that do not change,
    it is the largest bright area that is not text (``"intensity"``); when
    neither finds anything (a black frame) it is the whole frame
    (``"full-frame"``). See Notes for the method and its failure modes.

    Parameters
    ----------
    frames : sequence of numpy.ndarray or numpy.ndarray
        Gray frames ``(H, W)`` in ``[0, 1]``, as a list or an ``(N, H, W)``
        array; one ``(H, W)`` array means a single frame. More than
        ``MAX_DETECTION_FRAMES`` are subsampled evenly.
    margin : int
        Pixels added on each side of the box (clipped to the frame).
    std_threshold : float, optional
        Temporal standard deviation above which a pixel belongs to the image.
    intensity_threshold : float, optional
        Brightness above which a pixel may belong to the image (single-frame
        method).

    Returns
    -------
    RegionDetection

    Notes
    -----
    *Temporal method.* Speckle inside the image changes from frame to frame
    while vendor text, calipers, colour bars and the black background do not.
    The per-pixel standard deviation over the frames is smoothed (uniform
    filter of 3 pixels, 0.5 % of larger frames) and thresholded at
    ``std_threshold`` (default ``max(0.01, 0.1 x`` its 99th percentile ``)``,
    a tenth of the typical speckle change, above the compression noise around
    static text). The mask is closed (disk of about 2 % of the frame size) to
    bridge dark speckle gaps and hole-filled (dark fluid inside the fan),
    opened (about 3 %) to cut thin bridges to nearby overlays, reduced to its
    largest connected component, and dilated back by the opening radius within
    the closed mask, which restores the fan's acute corners that the opening
    rounded off. If the result covers under 2 % of the frame (a frozen loop)
    the intensity method runs on the mean frame.

    *Intensity method.* Pixels that are both brighter than
    ``intensity_threshold`` (default: the 5th percentile, i.e. the black
    background, plus 2/255) and textured (standard deviation over 5 x 5
    pixels above 1/255, which drops flat bars and uniform panels) go through
    the same steps with a larger opening (about 4 % of the frame size), which
    removes text lines, caliper marks and thin bars. It finds where the image
    is, not only its bright tissue, because even dark tissue is not black.

    *Failure modes.*

    * Moving overlays (a running clock, a scrolling ECG trace, a cine progress
      bar) change over time; they are dropped as smaller components unless
      they touch the fan, in which case the box grows to include them.
      Anything static within the opening radius of the fan can add a sliver
      of a few pixels to the mask.
    * Dark areas on the fan border (shadowing, deep far field with low gain)
      have little speckle change and brightness: the box can be a few pixels
      to a few percent too small there.
    * A frozen loop or a single frame uses the intensity method, which can
      merge an overlay, header bar or colour bar that touches or nearly
      touches the fan (on vendor screen grabs the box often reaches up into
      the header bar above the fan). A background that is not uniform (a
      gradient, a photo) defeats it.
    * Several image areas (dual view, B-mode beside a Doppler trace): only the
      largest is kept.
    * Large bright overlays (a big logo, thick colour bars) bigger than the fan
      would win the largest-component test: check with :func:`draw_region` or
      give a manual crop.
    """
    stack = _as_stack(frames)
    if int(margin) < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    n, h, w = stack.shape
    scale = min(h, w)
    min_area = MIN_REGION_FRACTION * h * w

    mask: np.ndarray | None = None
    method = "intensity"
    if n >= 2:
        std = stack.std(axis=0)
        std = ndimage.uniform_filter(std, size=_odd(max(3, round(0.005 * scale))), mode="nearest")
        thr = std_threshold if std_threshold is not None else max(0.01, 0.1 * float(np.percentile(std, 99)))
        candidate = _clean_mask(std > thr, close_r=max(2, round(0.02 * scale)), open_r=max(1, round(0.03 * scale)))
        if candidate.sum() >= min_area:
            mask, method = candidate, "temporal-std"
    if mask is None:
        image = stack.mean(axis=0) if n > 1 else stack[0]
        thr = (
            intensity_threshold
            if intensity_threshold is not None
            else float(np.percentile(image, 5)) + BACKGROUND_STEP
        )
        textured = _local_std(image, 5) > TEXTURE_THRESHOLD
        candidate = _clean_mask(
            (image > thr) & textured, close_r=max(2, round(0.02 * scale)), open_r=max(3, round(0.04 * scale))
        )
        if candidate.sum() >= min_area:
            mask, method = candidate, "intensity"
    if mask is None:
        return RegionDetection(box=Region(0, 0, h, w), mask=np.ones((h, w), dtype=bool), method="full-frame")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = Region.from_bounds(rows[0], cols[0], rows[-1] + 1, cols[-1] + 1).expand(int(margin), (h, w))
    return RegionDetection(box=box, mask=mask, method=method)


def _local_std(image: np.ndarray, size: int) -> np.ndarray:
    """Standard deviation of ``image`` in a ``size`` x ``size`` window around each pixel."""
    mean = ndimage.uniform_filter(image, size, mode="nearest")
    mean_sq = ndimage.uniform_filter(image * image, size, mode="nearest")
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


def _as_stack(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Validate frames and return a float32 ``(N, H, W)`` stack (subsampled to at most 64)."""
    if isinstance(frames, np.ndarray):
        arr = frames
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InputError(f"frames must be (H, W) or (N, H, W) gray images, got shape {arr.shape}")
        if arr.shape[0] > MAX_DETECTION_FRAMES:
            arr = arr[np.linspace(0, arr.shape[0] - 1, MAX_DETECTION_FRAMES).round().astype(int)]
    else:
        items = list(frames)
        if not items:
            raise InputError("detect_region needs at least one frame")
        if len(items) > MAX_DETECTION_FRAMES:
            items = [items[i] for i in np.linspace(0, len(items) - 1, MAX_DETECTION_FRAMES).round().astype(int)]
        shapes = {np.shape(f) for f in items}
        if len(shapes) != 1:
            raise InputError(f"all frames must have the same shape, got {sorted(shapes)}")
        shape = shapes.pop()
        if len(shape) != 2:
            raise InputError(f"frames must be gray (H, W) images, got shape {shape}")
        arr = np.stack([np.asarray(f) for f in items])
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError(f"frames must not be empty, got shape {arr.shape}")
    return np.asarray(arr, dtype=np.float32)


def _odd(k: int) -> int:
    return int(k) | 1


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


def _clean_mask(mask: np.ndarray, *, close_r: int, open_r: int) -> np.ndarray:
    """Close, open, keep the largest component, restore its corners and fill its holes.

    The opening that cuts text and thin bridges also rounds the acute corners
    of a fan; a dilation by the same radius, limited to the closed mask, gives
    them back (and at most ``open_r`` pixels of anything touching the fan).
    """
    if not mask.any():
        return mask
    # Pad so that closing near the frame border does not erode the region.
    pad = close_r + open_r + 1
    m = np.pad(mask, pad, mode="constant")
    closed = ndimage.binary_fill_holes(ndimage.binary_closing(m, structure=_disk(close_r)))
    opened = ndimage.binary_opening(closed, structure=_disk(open_r))
    labels, count = ndimage.label(opened)
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = labels == int(np.argmax(sizes))
    largest = ndimage.binary_dilation(largest, structure=_disk(open_r)) & closed
    return ndimage.binary_fill_holes(largest[pad:-pad, pad:-pad])


# ----------------------------------------------------------------------------- drawing


def draw_region(
    image: np.ndarray,
    detection: RegionDetection | Region,
    *,
    mask_color: tuple[float, float, float] = (0.0, 1.0, 0.0),
    box_color: tuple[float, float, float] = (1.0, 0.2, 0.0),
    thickness: int | None = None,
) -> np.ndarray:
    """Draw a detected region on a frame for a visual check.

    Parameters
    ----------
    image : numpy.ndarray
        The full frame, gray ``(H, W)`` or RGB ``(H, W, 3)`` in ``[0, 1]``.
    detection : RegionDetection or Region
        The region; the mask outline is drawn when it has a mask.
    mask_color, box_color : tuple of float
        RGB colours in ``[0, 1]`` of the mask outline and of the box.
    thickness : int, optional
        Line width in pixels (default: 1 pixel per 250 pixels of frame size, at least 1).

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W, 3)`` RGB image in ``[0, 1]``.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        rgb = np.repeat(img[..., None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 3:
        rgb = img.copy()
    else:
        raise InputError(f"image must be (H, W) or (H, W, 3), got shape {img.shape}")
    rgb = np.clip(rgb, 0.0, 1.0)
    h, w = rgb.shape[:2]
    t = int(thickness) if thickness is not None else max(1, math.ceil(min(h, w) / 250))
    if t < 1:
        raise ConfigError(f"thickness must be >= 1, got {thickness}")
    if isinstance(detection, RegionDetection):
        box, mask = detection.box, detection.mask
        if mask.shape != (h, w):
            raise InputError(f"detection mask has shape {mask.shape} but the image is {h}x{w}")
    elif isinstance(detection, Region):
        box, mask = detection, None
    else:
        raise ArgumentTypeError(f"detection must be a RegionDetection or Region, got {type(detection).__name__}")
    if mask is not None and mask.any() and not mask.all():
        edge = mask & ~ndimage.binary_erosion(mask, structure=_disk(1), border_value=1)
        if t > 1:
            edge = ndimage.binary_dilation(edge, iterations=t - 1)
        rgb[edge] = mask_color
    box = box.clip((h, w))
    outline = np.zeros((h, w), dtype=bool)
    outline[box.top : min(box.top + t, box.bottom), box.left : box.right] = True
    outline[max(box.bottom - t, box.top) : box.bottom, box.left : box.right] = True
    outline[box.top : box.bottom, box.left : min(box.left + t, box.right)] = True
    outline[box.top : box.bottom, max(box.right - t, box.left) : box.right] = True
    rgb[outline] = box_color
    return rgb.astype(np.float32, copy=False)
