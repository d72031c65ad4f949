"""Input builders shared by several test modules (import with ``from _helpers import ...``).

* seeded test images of the NSS baselines (BRISQUE, NIQE): each test module
  keeps its own reference scores, keyed by these functions;
* writers of the scans the frame-source tests read: gray videos (PyAV) and
  ultrasound DICOM datasets (pydicom);
* a random SonoNet-16 whose batch norms are not the identity (:func:`random_sononet`).

Optional packages (PyAV, pydicom, scikit-image) are imported inside the
functions, so importing this module needs none of them; the test modules
skip on their own when one is missing.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from crl_uiqa.runtime import Runtime

# ----------------------------------------------------------------------------- networks


def random_sononet(affine: bool = False):
    """A SonoNet-16 seeded 0 whose batch norms have non-trivial running statistics (and, with ``affine``, scales
    and shifts): what folding them into the convolutions, or keeping a frozen trunk's outputs, must preserve."""
    from crl_uiqa.backbones.sononet import SonoNet

    torch.manual_seed(0)
    net = SonoNet(16)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                if affine:
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.1, 0.1)
    return net


# ----------------------------------------------------------------------------- NSS test images


def noisy_gradient() -> np.ndarray:
    """224 x 288 gradient with seeded Gaussian noise (sigma 0.05)."""
    yy, xx = np.mgrid[0:224, 0:288] / 288.0
    g = 0.2 + 0.6 * xx * (1 - 0.3 * yy)
    noise = np.random.default_rng(0).normal(0.0, 0.05, g.shape)
    return np.clip(g + noise, 0, 1).astype(np.float32)


def camera_crop() -> np.ndarray:
    """224 x 288 crop of scikit-image's ``camera``."""
    from skimage import data

    return (data.camera()[100:324, 100:388] / 255.0).astype(np.float32)


def moon_odd() -> np.ndarray:
    """Odd-sized (241 x 253) crop of ``moon``: exercises OpenCV's half-to-even output size (BRISQUE);
    two 96-patches once cropped, half-resolution of an odd-free crop (NIQE)."""
    from skimage import data

    return (data.moon()[10:251, 60:313] / 255.0).astype(np.float32)


def fake_ultrasound() -> np.ndarray:
    """Speckle in a fan-shaped sector on black, with a flat white text box (seeded)."""
    import scipy.ndimage

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:224, 0:288].astype(np.float64)
    r = np.hypot(yy, xx - 144.0)
    theta = np.arctan2(xx - 144.0, yy + 1e-9)
    sector = (r < 215) & (np.abs(theta) < 0.6)
    speckle = scipy.ndimage.gaussian_filter(rng.rayleigh(0.25, size=(224, 288)), 1.0)
    img = np.where(sector, np.clip(speckle * (1.2 - r / 300.0), 0, 1), 0.0)
    img[5:15, 5:60] = 1.0
    return img.astype(np.float32)


# ----------------------------------------------------------------------------- videos


def matlab_test_image(name: str) -> np.ndarray:
    """``"camera"``, ``"astronaut_blur"``, ``"camera_noise"``...: an image of benchmarks/baselines_matlab.py's set.

    The 8-bit gray version of a scikit-image data image (MATLAB ``rgb2gray``
    weights, rounded), optionally Gaussian-blurred (sigma 1.5) or with seeded
    Gaussian noise (sigma 15 grey levels), returned in [0, 1].
    """
    import scipy.ndimage
    from skimage import data

    base, _, kind = name.partition("_")
    a = getattr(data, base)()
    if a.ndim == 3:
        a = np.clip(np.round(a[..., :3] @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])), 0, 255)
    x = a.astype(np.uint8).astype(np.float64)
    if kind == "blur":
        x = scipy.ndimage.gaussian_filter(x, 1.5)
    elif kind == "noise":
        x = x + np.random.default_rng([sum(base.encode()), 1]).normal(0.0, 15.0, size=x.shape)
    return (np.clip(np.round(x), 0, 255) / 255.0).astype(np.float32)


def write_video(path, frames, *, fps, codec="libx264", pix_fmt="yuv420p", in_format="gray", options=None,
                stream_options=None, rotation=None, display_matrix=None) -> Path:
    """Encode uint8/uint16 (H, W) ``frames`` into a video file with PyAV.

    ``options`` are container (muxer) options such as ``{"movflags": "+faststart"}``,
    ``stream_options`` encoder options such as ``{"crf": "12"}``, ``rotation`` a display rotation in degrees
    counter-clockwise (a phone's portrait recording; needs a PyAV with ``set_display_rotation``),
    ``display_matrix`` the nine int32 values of a whole display matrix (FFmpeg's layout: 16.16 fixed point, the last
    column 2.30; a flip included; needs a PyAV with ``set_display_matrix``).
    """
    import av

    container = av.open(str(path), "w", options=options or {})
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
    if stream_options:
        stream.options = stream_options
    if rotation is not None:
        stream.set_display_rotation(rotation)
    if display_matrix is not None:
        stream.set_display_matrix(display_matrix)
    for img in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format=in_format)):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return Path(path)


# ----------------------------------------------------------------------------- DICOM


def us_dicom_dataset(ts, rows: int, cols: int, n_frames: int | None = None):
    """File meta and identifying elements of an ultrasound multi-frame DICOM, without pixel data.

    ``ts`` is the transfer syntax UID; ``NumberOfFrames`` is set only when
    ``n_frames`` is given. The caller adds the image pixel module and saves.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UltrasoundMultiFrameImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = rows, cols
    if n_frames is not None:
        ds.NumberOfFrames = n_frames
    return ds


def us_region(x0, y0, x1, y1):
    """A Sequence of Ultrasound Regions item: a 2D tissue region with corners (x0, y0), (x1, y1)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionDataType = 1
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    return item


# ----------------------------------------------------------------------------- scans and models for app tests


def fan_mask(h: int = 96, w: int = 128) -> np.ndarray:
    """The fan (sector) of a curvilinear probe capture, apex at the top centre."""
    y, x = np.mgrid[0:h, 0:w]
    r, ang = np.hypot(y - 6, x - w / 2), np.degrees(np.arctan2(x - w / 2, y - 6))
    return (r >= 10) & (r <= 0.85 * h) & (np.abs(ang) <= 40)


def fan_frames(levels, *, seed: int = 0, h: int = 96, w: int = 128) -> list[np.ndarray]:
    """uint8 frames of a speckle fan whose mean follows ``levels``, a static text block top-left, black elsewhere."""
    rng = np.random.default_rng(seed)
    fan = fan_mask(h, w)
    frames = []
    for lv in levels:
        f = np.zeros((h, w), np.uint8)
        speckle = np.clip(lv * rng.uniform(0.8, 1.2, (h, w)), 0, 255).astype(np.uint8)
        f[fan] = speckle[fan]
        f[2:8, 2:30] = 220
        frames.append(f)
    return frames


def write_dicom_cine(path, frames, *, frame_time_ms: float = 40.0, region=None) -> Path:
    """An uncompressed 8-bit ultrasound multi-frame DICOM of ``frames`` (optionally with a region (x0, y0, x1, y1))."""
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian

    arr = np.stack(frames).astype(np.uint8)
    ds = us_dicom_dataset(ExplicitVRLittleEndian, arr.shape[1], arr.shape[2], arr.shape[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = float(frame_time_ms)
    if region is not None:
        ds.SequenceOfUltrasoundRegions = DicomSequence([us_region(*region)])
    ds.PixelData = arr.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def tiny_run(folder, image_size=(48, 64), seed: int = 0) -> Path:
    """A run folder holding an untrained quality model (random head, no pretrained weights): fast to load and run."""
    import torch

    from crl_uiqa.model import ModelConfig, build_model
    from crl_uiqa.training import save_model

    run = Path(folder)
    if not (run / "model.safetensors").exists():
        torch.manual_seed(seed)
        save_model(build_model(ModelConfig(image_size=tuple(image_size)), pretrained=False), run)
    return run


class MeanRuntime(Runtime):
    """Score = mean intensity of the (resized) frame: a scorer whose ranking is known by construction.

    ``delay`` seconds per call make it slow on purpose; ``calls`` counts the batches scored.
    """

    kind = "mean"

    def __init__(self, size=(48, 64), delay: float = 0.0):
        super().__init__(size, "mean-intensity")
        self.delay = delay
        self.calls = 0

    def _run(self, batch):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return torch.as_tensor(batch).float().mean(dim=(1, 2, 3)).numpy()
