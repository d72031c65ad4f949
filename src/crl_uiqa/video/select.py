"""From a scan to its best frames: stream, crop, score, check the plane, pick the top K.

:func:`select_frames` runs one pass over a scan (video, DICOM cine loop or
image sequence, see :mod:`crl_uiqa.video.scan`):

1. **Region.** The one policy of :mod:`crl_uiqa.video.framing`: a manual crop
   box, else the DICOM Sequence of Ultrasound Regions, else (``region="auto"``)
   detection on the first ``region_frames`` sampled frames (buffered, then
   scored like the others: no second decode); ``region="none"`` scores whole frames.
2. **Scoring.** Sampled frames (``every``, ``fps``) are cut to the region,
   resized to the model's ``image_size`` (antialiased bilinear, as ``score``
   does) and scored in batches through a :class:`crl_uiqa.runtime.Runtime`
   (PyTorch, TorchScript or ONNX Runtime). Decoding, region detection,
   cropping and resizing run in a background thread
   (:mod:`crl_uiqa.video.prefetch`), overlapping the model.
3. **Plane check** (optional, ``plane=``). The same batch, resized to
   SonoNet's input size, goes through the SonoNet-16 plane classifier; a
   frame is *eligible* when the probability of the target plane is at least
   ``plane_threshold``. As in the paper, the best frame is the one of best
   quality among standard planes: plane and quality are both required.
4. **Smoothing** (optional, ``smooth=S`` seconds) and 5. **picks**: the top
   ``top_k`` eligible frames by (smoothed) quality at distinct moments, at
   least ``min_gap`` seconds apart, with bounded memory on long scans
   (:mod:`crl_uiqa.video.temporal`).

A corrupt or truncated scan (:class:`crl_uiqa.video.scan.ScanReadError`) does not
lose work: the frames decoded before the fault are scored and picked from,
and the error is kept in :attr:`SelectionResult.error`.

:func:`write_selection` (in :mod:`crl_uiqa.reporting.selection`, importable
from here too) writes the picks (PNG), the per-frame CSV, the
quality-over-time plot, the region picture and an HTML report.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..errors import ModelError
from .framing import (
    FRAME_BATCH,
    REGION_FRAMES,
    REGION_MODES,
    RegionCutter,
    RegionPolicy,
    batch_size_setting,
    model_input,
)
from .prefetch import prefetch, prefetch_depth
from .region import Region, RegionDetection
from .scan import ArrayScan, Frame, ScanReadError, ScanSource, open_scan
from .temporal import ScoreTrack, TrackedFrame, smooth_scores, temporal_nms

if TYPE_CHECKING:
    import torch

    from ..runtime import Device, ModelSource, Runtime

log = logging.getLogger(__name__)

#: most frames ``top_k`` (``--top``) may pick: the images of at least twice as many candidates are held, cut to the
#: region at the source resolution, until the scan ends (:class:`~crl_uiqa.video.temporal.CandidatePool`; 2000 frames
#: of 800 x 600 are 3.6 GiB as float32), and a longer list of picks, however far apart, is no longer a selection
MAX_TOP_K = 1000

__all__ = [
    "MAX_TOP_K",
    "Pick",
    "SelectionResult",
    "SelectionSettings",
    "PlaneCheck",
    "REGION_MODES",
    "FRAME_COLUMNS",
    "SUMMARY_COLUMNS",
    "select_frames",
    "smooth_scores",
    "temporal_nms",
    "write_selection",
    "write_summary",
    "quality_figure",
    "resolve_region",
]

#: Columns of the per-frame CSV.
FRAME_COLUMNS = ["frame", "time", "plane", "plane_probability", "quality", "quality_smoothed", "eligible"]
#: Columns of the picks CSV.
PICK_COLUMNS = ["rank", "frame", "time", "quality", "quality_smoothed", "plane_probability", "file"]
#: Columns of the multi-scan summary.
SUMMARY_COLUMNS = ["scan", "frames_scored", "eligible", "best_frame", "time", "score", "error"]

@dataclass
class Pick:
    """One selected frame.

    Attributes
    ----------
    rank : int
        1 for the best pick.
    frame : int
        Source frame index.
    time : float
        Seconds from the start of the scan.
    quality, quality_smoothed : float
        Raw and smoothed quality score (equal without smoothing).
    plane_probability : float or None
        Probability of the target plane (``None`` without a plane check).
    image : numpy.ndarray
        The frame cut to the region, float32 ``(H, W)`` in ``[0, 1]`` (full
        resolution, before resizing to the model's size).
    path : pathlib.Path or None
        Where :func:`write_selection` saved it.
    """

    rank: int
    frame: int
    time: float
    quality: float
    quality_smoothed: float
    plane_probability: float | None
    image: np.ndarray = field(repr=False)
    path: Path | None = None


@dataclass
class SelectionResult:
    """Per-frame scores and picks of one scan (see :func:`select_frames`).

    Arrays hold one entry per scored frame, in stream order.
    """

    scan: str
    name: str
    kind: str
    frames: np.ndarray
    times: np.ndarray
    quality: np.ndarray
    quality_smoothed: np.ndarray
    eligible: np.ndarray
    picks: list[Pick]
    region: RegionDetection | None
    region_frame: np.ndarray | None = field(default=None, repr=False)
    plane: str | None = None
    plane_threshold: float | None = None
    plane_predicted: list[str] | None = None
    plane_probability: np.ndarray | None = None
    error: ScanReadError | None = None
    runtime: str = "torch"
    image_size: tuple[int, int] = (0, 0)
    source_fps: float | None = None
    source_frames: int | None = None
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_scored(self) -> int:
        """Number of frames scored."""
        return int(self.frames.size)

    @property
    def best(self) -> Pick | None:
        """The best pick (``None`` when no frame was eligible)."""
        return self.picks[0] if self.picks else None

    @property
    def frames_per_second(self) -> float:
        """Frames scored per second of wall time (decode + region + scoring)."""
        return self.n_scored / self.seconds if self.seconds > 0 else float("nan")

    def rows(self) -> list[dict]:
        """One dict per scored frame with the :data:`FRAME_COLUMNS` keys."""
        out = []
        for i in range(self.n_scored):
            out.append({
                "frame": int(self.frames[i]),
                "time": round(float(self.times[i]), 6),
                "plane": self.plane_predicted[i] if self.plane_predicted is not None else "",
                "plane_probability": (float(self.plane_probability[i]) if self.plane_probability is not None else ""),
                "quality": float(self.quality[i]),
                "quality_smoothed": float(self.quality_smoothed[i]),
                "eligible": int(bool(self.eligible[i])),
            })
        return out

    def plane_census(self) -> str | None:
        """Which plane classes the frames were given, e.g. ``"all 60 frames classified Background; highest
        4CH probability 0.77"`` (``None`` without a plane check)."""
        if not self.plane or self.plane_predicted is None or self.n_scored == 0:
            return None
        names, counts = np.unique(np.asarray(self.plane_predicted), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        if len(names) == 1:
            found = f"all {self.n_scored} frames classified {names[0]}"
        else:
            found = "frames classified " + ", ".join(f"{names[i]} {counts[i]}" for i in order[:5])
            if len(names) > 5:
                found += f", {len(names) - 5} other classes"
        p = self.plane_probability
        top = float(np.nanmax(p)) if p is not None and np.isfinite(p).any() else float("nan")
        return f"{found}; highest {self.plane} probability {top:.2f} (threshold {self.plane_threshold:g})"

    def shortfall(self) -> str | None:
        """Why fewer frames were picked than asked for (``None`` when ``top_k`` were picked)."""
        top_k = int(self.settings.get("top_k", 1))
        if len(self.picks) >= top_k:
            return None
        n_ok = int(self.eligible.sum())
        asked = f"{len(self.picks)} of the {top_k} frames asked for"
        if self.n_scored == 0:
            return f"{asked}: no frame was scored"
        if n_ok == 0:
            why = f"no frame was eligible ({self.plane_census()})" if self.plane else "no frame had a finite score"
            return f"{asked}: {why}"
        if n_ok < top_k:
            return f"{asked}: only {n_ok} of {self.n_scored} scored frames were eligible"
        gap = self.settings.get("min_gap", 0.0)
        return (f"{asked}: the other {n_ok - len(self.picks)} eligible frames are within {gap:g} s "
                "(--min-gap) of a pick")

    def summary_row(self) -> dict:
        """The :data:`SUMMARY_COLUMNS` row of this scan."""
        best = self.best
        return {
            "scan": self.scan,
            "frames_scored": self.n_scored,
            "eligible": int(self.eligible.sum()),
            "best_frame": best.frame if best else "",
            "time": round(best.time, 3) if best else "",
            "score": best.quality_smoothed if best else "",
            "error": str(self.error) if self.error else "",
        }


def resolve_region(scan: ScanSource, *, crop: Region | Sequence[int] | str | None = None, region: str = "auto") -> RegionDetection | None:
    """The region known before reading pixels: a manual crop or the DICOM region (see :mod:`.framing`).

    Returns ``None`` when the region must be detected from frames
    (``region="auto"`` without a DICOM region). ``region="none"`` gives the
    whole frame.

    Raises
    ------
    crl_uiqa.errors.ConfigError
        Unknown mode, or a crop box that is malformed or does not fit the
        frames.
    crl_uiqa.errors.ScanError
        ``region="dicom"`` for a scan without a DICOM region.
    """
    return RegionPolicy.create(crop, region).known(scan.shape, getattr(scan, "region", None), scan.path)


# ----------------------------------------------------------------------------- settings and plane check


@dataclass(frozen=True)
class SelectionSettings:
    """The validated settings of one selection (``select_frames``' keyword arguments)."""

    top_k: int = 1
    min_gap: float = 1.0
    smooth: float = 0.0
    batch_size: int = FRAME_BATCH
    plane: str | None = None
    plane_threshold: float = 0.5
    region: RegionPolicy = field(default_factory=RegionPolicy)

    @classmethod
    def create(cls, *, top_k: Any = 1, min_gap: Any = 1.0, smooth: Any = 0.0, batch_size: Any = FRAME_BATCH,
               plane: str | None = None, plane_threshold: Any = 0.5, crop: Any = None, region: str = "auto",
               region_frames: Any = REGION_FRAMES) -> SelectionSettings:
        """Validate everything before any work (a bad value raises :class:`~crl_uiqa.errors.ConfigError`)."""
        from .. import validate as v

        top_k = v.integer("top_k (--top)", top_k, minimum=1, maximum=MAX_TOP_K)
        batch_size = batch_size_setting(batch_size)
        min_gap = v.real(v.flag("min_gap"), min_gap, minimum=0)
        smooth = v.real(v.flag("smooth"), smooth, minimum=0)
        # checked with or without a plane: --plane-threshold 1.5 is a mistake either way, not a setting to ignore
        plane_threshold = v.real(v.flag("plane_threshold"), plane_threshold, minimum=0, maximum=1)
        return cls(top_k, min_gap, smooth, batch_size, plane, float(plane_threshold),
                   RegionPolicy.create(crop, region, region_frames))


def _load_plane_model(plane_model: torch.nn.Module | str | None, plane_weights: str | os.PathLike | None,
                      device: Device) -> tuple[torch.nn.Module, torch.device]:
    from ..backbones import get_backbone
    from ..devices import prepare_model, resolve_device

    dev = resolve_device(device)
    model = plane_model if plane_model is not None else get_backbone("sononet16", plane_weights)
    if isinstance(model, str):
        model = get_backbone(model, plane_weights)
    if "probs" not in getattr(model, "embedding_layers", ()):
        raise ModelError("the plane model is not a plane classifier (it has no 'probs' output)")
    return prepare_model(model, dev), dev


class PlaneCheck:
    """Which frames show the target plane: SonoNet probabilities of a batch, thresholded.

    Parameters
    ----------
    plane : str
        Target plane (any spelling :func:`crl_uiqa.classify.plane_index` accepts).
    threshold : float
        Smallest probability of the target plane.
    model, weights, device :
        The classifier (default SonoNet-16 with ``weights``) and its device.
    """

    def __init__(self, plane: str, threshold: float, *, model: torch.nn.Module | str | None = None,
                 weights: str | os.PathLike | None = None, device: Device = "cpu") -> None:
        from ..classify import plane_index

        self.net, self.device = _load_plane_model(model, weights, device)
        self.class_names = tuple(getattr(self.net, "class_names", ()))
        self.index = plane_index(plane, self.class_names or None)
        self.plane = self.class_names[self.index] if self.class_names else plane
        self.threshold = float(threshold)
        self.input_size = tuple(getattr(self.net, "input_size", ())) or None

    def __call__(self, x):
        """``(p(plane), predicted class names, eligible)`` of a batch ``(B, 1, h, w)``."""
        import torch

        from ..classify import plane_probabilities

        with torch.inference_mode():
            probs = plane_probabilities(self.net, x.to(self.device)).float().cpu().numpy()
        pp = probs[:, self.index].astype(np.float64)
        names = [self.class_names[i] if self.class_names else str(i) for i in probs.argmax(axis=1)]
        return pp, names, pp >= self.threshold


# ----------------------------------------------------------------------------- streaming


@dataclass
class _Prepared:
    """A frame cut to the region, with its model input(s) (``(1, h, w)`` tensors)."""

    frame: Frame
    x: torch.Tensor
    x_plane: torch.Tensor | None = None


class _FramePreparer:
    """Decode, settle the region, cut and resize: the work the background thread does for each frame."""

    def __init__(self, scan: ScanSource, policy: RegionPolicy, size: Sequence[int],
                 plane_size: Sequence[int] | None) -> None:
        self.scan = scan
        self.cutter = RegionCutter(policy, scan.path, scan.shape, getattr(scan, "region", None))
        self.size, self.plane_size = tuple(size), None if plane_size is None else tuple(plane_size)

    def _prep(self, frame) -> _Prepared:
        x = model_input(frame.image, self.size)
        xp = None
        if self.plane_size is not None:
            xp = x if self.plane_size == self.size else model_input(frame.image, self.plane_size)
        return _Prepared(frame, x, xp)

    def __iter__(self) -> Iterator[_Prepared]:
        """Prepared frames in stream order; a read error is raised after every frame read before it."""
        try:
            for frame in self.scan:
                yield from map(self._prep, self.cutter.push(frame))
        except ScanReadError:
            yield from map(self._prep, self.cutter.flush())  # the frames read before the fault still count
            raise
        yield from map(self._prep, self.cutter.flush())  # a scan shorter than region_frames


class _Scorer:
    """Scores prepared batches (quality, then the plane check) into a :class:`ScoreTrack`."""

    def __init__(self, runtime: Runtime, plane_check: PlaneCheck | None, track: ScoreTrack, bar: Any) -> None:
        self.runtime, self.plane_check, self.track, self.bar = runtime, plane_check, track, bar

    def __call__(self, batch: list[_Prepared]) -> None:
        if not batch:
            return
        import torch

        q = np.asarray(self.runtime(torch.stack([item.x for item in batch])), dtype=np.float64)
        if self.plane_check is not None:
            pp, names, ok = self.plane_check(torch.stack([item.x_plane for item in batch]))
        else:
            pp, names, ok = np.full(len(batch), np.nan), [""] * len(batch), np.ones(len(batch), dtype=bool)
        self.track.add([TrackedFrame(item.frame.index, item.frame.time, float(q[j]), bool(ok[j]), item.frame.image,
                                     float(pp[j]), names[j]) for j, item in enumerate(batch)])
        self.bar.update(len(batch))


def _stream(scan: ScanSource, preparer: _FramePreparer, scorer: _Scorer, batch_size: int) -> ScanReadError | None:
    """Run the scan through the scorer in batches; a read error mid-scan is returned, not raised."""
    items = prefetch(iter(preparer), prefetch_depth(scan.shape, batch_size))
    batch: list[_Prepared] = []
    error = None
    try:
        try:
            for item in items:
                batch.append(item)
                if len(batch) >= batch_size:
                    scorer(batch)
                    batch = []
        except ScanReadError as exc:
            error = exc
            log.warning("%s", exc)
        scorer(batch)
        scorer.track.finish()
    finally:
        items.close()
    return error


def select_frames(
    model: ModelSource,
    scan_path: str | os.PathLike,
    *,
    runtime: str = "auto",
    device: Device = "cpu",
    threads: int | None = None,
    plane: str | None = None,
    plane_threshold: float = 0.5,
    plane_model: torch.nn.Module | str | None = None,
    plane_weights: str | os.PathLike | None = None,
    top_k: int = 1,
    min_gap: float = 1.0,
    every: int = 1,
    fps: float | None = None,
    frame_rate: float | None = None,
    crop: Region | Sequence[int] | str | None = None,
    region: str = "auto",
    region_frames: int = REGION_FRAMES,
    smooth: float = 0.0,
    batch_size: int = FRAME_BATCH,
    progress: bool = False,
) -> SelectionResult:
    """Score every sampled frame of a scan and pick its best frames.

    Parameters
    ----------
    model : Runtime, QualityModel, str or os.PathLike
        A :class:`crl_uiqa.runtime.Runtime`, a model, a run directory or an
        exported file (loaded with :func:`crl_uiqa.runtime.load_runtime`).
    scan_path : str, os.PathLike, array or sequence of frames
        Video, DICOM file, image folder or glob (see :func:`crl_uiqa.scan.open_scan`), or frames in
        memory: an ``(N, H, W[, C])`` array or a list of frames (:class:`crl_uiqa.scan.ArrayScan`, named
        "frames"; their times follow ``frame_rate``).
    runtime : {"auto", "torch", "torchscript", "onnx"}
        Engine when ``model`` is not a Runtime.
    device : str or torch.device
        Device of the torch engines and of the plane classifier.
    threads : int, optional
        ONNX Runtime threads (default: CPU cores).
    plane : str, optional
        Target standard plane (SonoNet class name, e.g. ``"4CH"``,
        ``"abdominal"``); frames below ``plane_threshold`` are not eligible.
    plane_threshold : float
        Smallest probability of the target plane, in ``[0, 1]``.
    plane_model : torch.nn.Module or str, optional
        The plane classifier (default: SonoNet-16 with ``plane_weights``).
    plane_weights : path, optional
        SonoNet-16 weights (see :mod:`crl_uiqa.weights`).
    top_k : int
        Number of frames to pick.
    min_gap : float
        Smallest time between two picks, seconds.
    every, fps : int, float
        Sub-sampling: every N-th source frame, then at most ``fps`` per second.
    frame_rate : float, optional
        Frame rate of image sequences and DICOM files without timing.
    crop : Region, (top, left, height, width) or str, optional
        Manual region (overrides ``region``).
    region : {"auto", "dicom", "none"}
        How to find the ultrasound region when no crop is given.
    region_frames : int
        Sampled frames auto-detection looks at.
    smooth : float
        Half-width (seconds) of the Gaussian smoothing of the scores; 0 = none.
    batch_size : int
        Frames per forward pass.
    progress : bool
        Show a progress bar.

    Returns
    -------
    SelectionResult

    Raises
    ------
    crl_uiqa.errors.NotFoundError
        Missing scan (also a ``FileNotFoundError``).
    crl_uiqa.errors.ScanError
        Unreadable header (:class:`ScanReadError`), unsupported file type.
    crl_uiqa.errors.ConfigError
        A bad argument.
    crl_uiqa.errors.ModelError
        A model that cannot be loaded.

    A read error *during* the scan is not raised: see ``result.error``.
    """
    from ..progress import progress as _progress
    from ..runtime import Runtime, load_runtime
    from ..scoring import is_in_memory

    t_start = time.perf_counter()
    cfg = SelectionSettings.create(top_k=top_k, min_gap=min_gap, smooth=smooth, batch_size=batch_size, plane=plane,
                                   plane_threshold=plane_threshold, crop=crop, region=region,
                                   region_frames=region_frames)
    rt = model if isinstance(model, Runtime) else load_runtime(model, runtime, device=device, threads=threads)
    check = None
    if plane is not None:
        check = PlaneCheck(plane, cfg.plane_threshold, model=plane_model, weights=plane_weights, device=device)
    if is_in_memory(scan_path):
        scan = ArrayScan(scan_path, every=every, fps=fps, frame_rate=frame_rate)
        scan_path = f"<{scan.n_frames} frames in memory>"
    else:
        scan = open_scan(scan_path, every=every, fps=fps, frame_rate=frame_rate)
    preparer = _FramePreparer(scan, cfg.region, rt.image_size,
                              None if check is None else (check.input_size or rt.image_size))
    track = ScoreTrack(cfg.top_k, cfg.min_gap, cfg.smooth)
    total = len(range(0, scan.n_frames, scan.every)) if scan.n_frames and scan.sample_fps is None else None
    with _progress(total=total, desc=f"scoring {scan.name}", unit="frame", enabled=bool(progress)) as bar:
        error = _stream(scan, preparer, _Scorer(rt, check, track, bar), cfg.batch_size)
    return _result(scan, str(scan_path), cfg, track, preparer.cutter, check, error, rt, frame_rate,
                   time.perf_counter() - t_start)


def _result(scan: ScanSource, scan_path: str, cfg: SelectionSettings, track: ScoreTrack, cutter: RegionCutter,
            check: PlaneCheck | None, error: ScanReadError | None, rt: Runtime, frame_rate: float | None,
            seconds: float) -> SelectionResult:
    """Assemble the :class:`SelectionResult` of a finished stream."""
    times, quality, smoothed = track.times, track.quality, track.smoothed
    pp = np.asarray(track.plane_probability, dtype=np.float64)
    picks = [Pick(rank, track.index[p], float(times[p]), float(quality[p]), float(smoothed[p]),
                  None if check is None else float(pp[p]), track.image(p))
             for rank, p in enumerate(track.picks(), start=1)]
    crop = cfg.region.crop
    settings = {
        "every": scan.every, "fps": scan.sample_fps, "frame_rate": frame_rate, "top_k": cfg.top_k,
        "min_gap": cfg.min_gap, "smooth": cfg.smooth, "region": cfg.region.mode,
        "crop": None if crop is None else crop.as_tuple(), "region_frames": cfg.region.frames,
        "batch_size": cfg.batch_size, "plane": cfg.plane if check is None else check.plane,
        "plane_threshold": cfg.plane_threshold if check is not None else None,
    }
    return SelectionResult(
        scan=scan_path, name=scan.name, kind=scan.kind,
        frames=np.asarray(track.index, dtype=np.int64), times=times, quality=quality, quality_smoothed=smoothed,
        eligible=np.asarray(track.eligible, dtype=bool), picks=picks,
        region=cutter.det, region_frame=cutter.first_image, plane=None if check is None else check.plane,
        plane_threshold=None if check is None else check.threshold,
        plane_predicted=None if check is None else list(track.plane),
        plane_probability=None if check is None else pp,
        error=error, runtime=rt.kind, image_size=tuple(rt.image_size), source_fps=scan.fps,
        source_frames=scan.n_frames, settings=settings, seconds=seconds,
    )


# The writers live with the other report code; importable from here as before.
from ..reporting.selection import quality_figure, write_selection, write_summary  # noqa: E402
