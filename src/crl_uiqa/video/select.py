"""From a scan to its best frames: stream, crop, score, check the plane, pick the top K.

:func:`select_frames` runs one pass over a scan (video, DICOM cine loop or
image sequence, see :mod:`crl_uiqa.scan`):

1. **Region.** A manual crop box wins; else the DICOM Sequence of Ultrasound
   Regions; else (``region="auto"``) :func:`crl_uiqa.region.detect_region` on
   the first ``region_frames`` sampled frames, which are buffered and then
   scored like the others (no second decode). ``region="none"`` scores whole
   frames.
2. **Scoring.** Sampled frames (``every``, ``fps``) are cut to the region,
   resized to the model's ``image_size`` (antialiased bilinear, as ``score``
   does) and scored in batches through a :class:`crl_uiqa.export.Runtime`
   (PyTorch, TorchScript or ONNX Runtime). Decoding, region detection,
   cropping and resizing run in a background thread, overlapping the model.
3. **Plane check** (optional, ``plane=``). The same batch, resized to
   SonoNet's input size, goes through the SonoNet-16 plane classifier; a
   frame is *eligible* when the probability of the target plane is at least
   ``plane_threshold``. As in the paper, the best frame is the one of best
   quality among standard planes: plane and quality are both required.
4. **Smoothing** (optional, ``smooth=S`` seconds). Each frame's quality is
   replaced by a Gaussian-weighted mean of the qualities of all scored frames
   within ``+-S`` seconds (sigma ``S / 2``, weights renormalised at the ends
   and over irregular frame times), so that a single lucky frame in a shaky
   stretch does not beat a steady good view.
5. **Picks.** The top ``top_k`` eligible frames by (smoothed) quality at
   distinct moments: greedy non-maximum suppression in time, i.e. take the
   best frame, drop every frame closer than ``min_gap`` seconds to it, take
   the best remaining one, and so on.

Memory stays bounded on long scans: only the images of frames that can still
end up among the picks are held. A frame whose (final) rank has ``2 K``
pairwise ``min_gap``-separated better frames above it can never be picked
(each pick suppresses at most two of them), so its image is released.

A corrupt or truncated scan (:class:`crl_uiqa.scan.ScanReadError`) does not
lose work: the frames decoded before the fault are scored and picked from,
and the error is kept in :attr:`SelectionResult.error`.

:func:`write_selection` writes the picks (PNG), the per-frame CSV, the
quality-over-time plot, the region picture and an HTML report.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .region import Region, RegionDetection, detect_region, draw_region
from .scan import ScanReadError, open_scan

log = logging.getLogger(__name__)

__all__ = [
    "Pick",
    "SelectionResult",
    "REGION_MODES",
    "FRAME_COLUMNS",
    "SUMMARY_COLUMNS",
    "select_frames",
    "smooth_scores",
    "temporal_nms",
    "write_selection",
    "write_summary",
    "resolve_region",
]

#: Accepted ``region`` modes.
REGION_MODES = ("auto", "dicom", "none")
#: Columns of the per-frame CSV.
FRAME_COLUMNS = ["frame", "time", "plane", "plane_probability", "quality", "quality_smoothed", "eligible"]
#: Columns of the picks CSV.
PICK_COLUMNS = ["rank", "frame", "time", "quality", "quality_smoothed", "plane_probability", "file"]
#: Columns of the multi-scan summary.
SUMMARY_COLUMNS = ["scan", "frames_scored", "eligible", "best_frame", "time", "score", "error"]
#: Default number of sampled frames region auto-detection looks at.
REGION_FRAMES = 30


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


# ----------------------------------------------------------------------------- temporal helpers


def smooth_scores(times: Sequence[float], scores: Sequence[float], seconds: float,
                  start: int = 0, stop: int | None = None) -> np.ndarray:
    """Gaussian-weighted moving average of scores over ``+-seconds`` (sigma ``seconds / 2``).

    ``out[i] = sum_j w_ij s_j / sum_j w_ij`` over the frames ``j`` with
    ``|t_j - t_i| <= seconds``, ``w_ij = exp(-(t_j - t_i)^2 / (2 sigma^2))``:
    works for irregular frame times and renormalises at the ends. Non-finite
    scores get weight 0 (a frame whose whole window is non-finite stays NaN).

    Parameters
    ----------
    times : sequence of float
        Frame times in seconds, non-decreasing.
    scores : sequence of float
        One score per frame.
    seconds : float
        Half-width of the window; 0 returns the scores unchanged.
    start, stop : int
        Compute only ``out[start:stop]`` (the window still reaches outside).

    Returns
    -------
    numpy.ndarray
        float64 smoothed scores for frames ``start .. stop - 1``.
    """
    t = np.asarray(times, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 1:
        raise ValueError(f"times and scores must be 1-D of the same length, got {t.shape} and {s.shape}")
    stop = t.size if stop is None else int(stop)
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"smoothing window must be a finite number of seconds >= 0, got {seconds}")
    if seconds == 0 or stop <= start:
        return s[start:stop].copy()
    sigma = seconds / 2.0
    eps = 1e-9 * max(1.0, seconds)
    idx = np.arange(start, stop)
    lo = np.searchsorted(t, t[idx] - seconds - eps, side="left")
    hi = np.searchsorted(t, t[idx] + seconds + eps, side="right")
    width = int((hi - lo).max())
    cols = lo[:, None] + np.arange(width)[None, :]
    inside = cols < hi[:, None]
    cols = np.minimum(cols, t.size - 1)
    dt = (t[cols] - t[idx][:, None]) / sigma
    w = np.exp(-0.5 * dt * dt) * inside
    vals = s[cols]
    ok = np.isfinite(vals)
    w = np.where(ok, w, 0.0)
    num = (w * np.where(ok, vals, 0.0)).sum(axis=1)
    den = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _rank_order(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidate positions sorted best first (higher score, then earlier frame)."""
    c = np.asarray(candidates, dtype=np.int64)
    return c[np.lexsort((c, -scores[c]))]


def temporal_nms(times: Sequence[float], scores: Sequence[float], k: int | None, min_gap: float,
                 eligible: Sequence[bool] | None = None) -> list[int]:
    """Top frames at distinct moments: greedy non-maximum suppression in time.

    Frames are taken best first (ties: the earlier frame); a frame closer than
    ``min_gap`` seconds to an already taken frame is skipped.

    Parameters
    ----------
    times, scores : sequence of float
        Per-frame time (s) and score (higher = better; NaN never taken).
    k : int or None
        Number of frames to take (``None``: as many as the gap allows).
    min_gap : float
        Smallest time between two taken frames, seconds (``0``: no suppression).
    eligible : sequence of bool, optional
        Frames allowed to be taken (all by default).

    Returns
    -------
    list of int
        Positions of the taken frames, best first.
    """
    t = np.asarray(times, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if k is not None and int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min_gap < 0 or not math.isfinite(min_gap):
        raise ValueError(f"min_gap must be a finite number of seconds >= 0, got {min_gap}")
    ok = np.isfinite(s)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    taken: list[int] = []
    taken_t: list[float] = []
    for p in _rank_order(s, np.flatnonzero(ok)):
        tp = t[p]
        if min_gap > 0 and any(abs(tp - u) < min_gap for u in taken_t):
            continue
        taken.append(int(p))
        taken_t.append(float(tp))
        if k is not None and len(taken) >= int(k):
            break
    return taken


class _CandidatePool:
    """Images of the frames that can still be picked (see the module docstring).

    Frames enter once their smoothed score is final. A frame ranked below the
    ``2 K``-th frame of a greedy NMS over the pool has ``2 K`` pairwise
    separated better frames and can never be among the top ``K``: it is
    released, and so is every later frame ranked below that cut.
    """

    def __init__(self, k: int, min_gap: float) -> None:
        self.k = int(k)
        self.min_gap = float(min_gap)
        self.images: dict[int, np.ndarray] = {}
        self.cut: tuple[float, int] | None = None  # (score, -position) of the 2K-th separated frame
        self.prune_at = 64

    def offer(self, pos: int, score: float, image: np.ndarray, times: np.ndarray, scores: np.ndarray) -> None:
        if not math.isfinite(score):
            return
        if self.cut is not None and (score, -pos) < self.cut:
            return
        self.images[pos] = image
        if len(self.images) > self.prune_at:
            self._prune(times, scores)
            self.prune_at = max(64, 2 * len(self.images))

    def _prune(self, times: np.ndarray, scores: np.ndarray) -> None:
        pos = np.fromiter(self.images, dtype=np.int64)
        order = _rank_order(scores, pos)
        need = 2 * self.k
        taken_t: list[float] = []
        for i, p in enumerate(order):
            tp = times[p]
            if self.min_gap > 0 and any(abs(tp - u) < self.min_gap for u in taken_t):
                continue
            taken_t.append(float(tp))
            if len(taken_t) >= need:
                self.cut = (float(scores[p]), -int(p))
                for q in order[i + 1:]:
                    del self.images[int(q)]
                return


# ----------------------------------------------------------------------------- region


def resolve_region(scan, *, crop: Any = None, region: str = "auto") -> RegionDetection | None:
    """The region known before reading pixels: a manual crop or the DICOM region.

    Returns ``None`` when the region must be detected from frames
    (``region="auto"`` without a DICOM region). ``region="none"`` gives the
    whole frame.

    Raises
    ------
    ValueError
        Unknown mode, a crop box that does not fit the frames, or
        ``region="dicom"`` for a scan without a DICOM region.
    """
    mode = str(region).strip().lower()
    if mode not in REGION_MODES:
        raise ValueError(f"region must be one of {', '.join(REGION_MODES)}, got {region!r}")
    shape = tuple(scan.shape)
    if crop is not None:
        box = Region.coerce(crop)
        if shape != (0, 0) and not box.fits(shape):
            raise ValueError(
                f"{scan.path}: crop box (top, left, height, width)={box.as_tuple()} does not fit its "
                f"{shape[0]}x{shape[1]} frames"
            )
        return RegionDetection.from_box(box, shape, "manual")
    if mode in ("auto", "dicom") and getattr(scan, "region", None) is not None:
        return RegionDetection.from_box(scan.region, shape, "dicom")
    if mode == "dicom":
        raise ValueError(
            f"{scan.path}: no DICOM Sequence of Ultrasound Regions (tissue) in this scan; "
            "use --region auto, --region none or a --crop box"
        )
    if mode == "none":
        return RegionDetection(Region(0, 0, *shape), np.ones(shape, dtype=bool), "none")
    return None


# ----------------------------------------------------------------------------- streaming


_END = object()


def _prefetch(frames: Iterable, size: int) -> Iterator:
    """Iterate ``frames`` in a background thread (decoding overlaps scoring); errors re-raised in order."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def work() -> None:
        it = iter(frames)
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                close()

    thread = threading.Thread(target=work, name="crl-uiqa-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


#: Most bytes of decoded frames the background reader may hold ahead of the scorer.
PREFETCH_BYTES = 256 * 2**20


def _prefetch_depth(shape: Sequence[int], batch_size: int) -> int:
    """Frames decoded ahead: two batches, at most :data:`PREFETCH_BYTES` of float32 frames, at least 2."""
    frame_bytes = max(1, int(shape[0]) * int(shape[1]) * 4)
    return int(max(2, min(2 * batch_size, PREFETCH_BYTES // frame_bytes)))


def _resize_batch(images: list[np.ndarray], size: tuple[int, int]):
    import torch
    from torch.nn import functional as F

    x = torch.from_numpy(np.stack(images))[:, None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x


def _load_plane_model(plane_model: Any, plane_weights: Any, device: Any):
    from ..backbones import get_backbone
    from ..embed import prepare_model, resolve_device

    dev = resolve_device(device)
    model = plane_model if plane_model is not None else get_backbone("sononet16", plane_weights)
    if isinstance(model, str):
        model = get_backbone(model, plane_weights)
    if "probs" not in getattr(model, "embedding_layers", ()):
        raise ValueError("the plane model is not a plane classifier (it has no 'probs' output)")
    return prepare_model(model, dev), dev


def select_frames(
    model: Any,
    scan_path: str | os.PathLike,
    *,
    runtime: str = "auto",
    device: Any = "cpu",
    threads: int | None = None,
    plane: str | None = None,
    plane_threshold: float = 0.5,
    plane_model: Any = None,
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
    batch_size: int = 32,
    progress: bool = False,
) -> SelectionResult:
    """Score every sampled frame of a scan and pick its best frames.

    Parameters
    ----------
    model : Runtime, QualityModel, str or os.PathLike
        A :class:`crl_uiqa.export.Runtime`, a model, a run directory or an
        exported file (loaded with :func:`crl_uiqa.export.load_runtime`).
    scan_path : str or os.PathLike
        Video, DICOM file, image folder or glob (see :func:`crl_uiqa.scan.open_scan`).
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
    FileNotFoundError, ValueError
        Missing scan, unreadable header (:class:`ScanReadError`), bad argument.
        A read error *during* the scan is not raised: see ``result.error``.
    """
    from tqdm.auto import tqdm

    from ..export import Runtime, load_runtime

    t_start = time.perf_counter()
    top_k = _positive_int(top_k, "top_k")
    batch_size = _positive_int(batch_size, "batch_size")
    region_frames = _positive_int(region_frames, "region_frames")
    min_gap = _non_negative(min_gap, "min_gap")
    smooth = _non_negative(smooth, "smooth")
    if plane is not None and not 0.0 <= float(plane_threshold) <= 1.0:
        raise ValueError(f"plane_threshold must be in [0, 1], got {plane_threshold}")

    rt = model if isinstance(model, Runtime) else load_runtime(model, runtime, device=device, threads=threads)
    size = rt.image_size
    plane_idx = None
    plane_net = plane_dev = class_names = plane_size = None
    if plane is not None:
        from ..classify import plane_index

        plane_net, plane_dev = _load_plane_model(plane_model, plane_weights, device)
        class_names = tuple(getattr(plane_net, "class_names", ()))
        plane_idx = plane_index(plane, class_names or None)
        plane = class_names[plane_idx] if class_names else plane
        plane_size = tuple(getattr(plane_net, "input_size", size))

    scan = open_scan(scan_path, every=every, fps=fps, frame_rate=frame_rate)
    det = resolve_region(scan, crop=crop, region=region)

    # per-frame records (grown per batch)
    idx_l: list[int] = []
    q_l: list[float] = []
    pp_l: list[float] = []
    pn_l: list[str] = []
    el_l: list[bool] = []
    t_col, q_col, s_col = _Column(), _Column(), _Column()  # times, quality, smoothed quality
    pending: dict[int, np.ndarray] = {}
    pool = _CandidatePool(top_k, min_gap)
    final_upto = 0
    error: ScanReadError | None = None

    def finalize(upto_time: float | None) -> None:
        """Fix the smoothed score of frames whose window is complete; offer them to the pool."""
        nonlocal final_upto
        times, n = t_col.values, t_col.n
        stop = n if upto_time is None else int(np.searchsorted(times, upto_time - smooth, side="right"))
        if stop <= final_upto:
            return
        smoothed = s_col.values
        smoothed[final_upto:stop] = smooth_scores(times, q_col.values, smooth, final_upto, stop)
        for p in range(final_upto, stop):
            img = pending.pop(p, None)
            if img is not None:
                pool.offer(p, float(smoothed[p]), img, times, smoothed)
        final_upto = stop

    def score_batch(batch: list) -> None:
        if not batch:
            return
        import torch

        q = np.asarray(rt(torch.stack([item.x for item in batch])), dtype=np.float64)
        if plane_net is not None:
            from ..classify import plane_probabilities

            xp = torch.stack([item.x_plane for item in batch])
            with torch.inference_mode():
                probs = plane_probabilities(plane_net, xp.to(plane_dev)).float().cpu().numpy()
            pp = probs[:, plane_idx].astype(np.float64)
            names = [class_names[i] if class_names else str(i) for i in probs.argmax(axis=1)]
            ok = pp >= float(plane_threshold)
        else:
            pp = np.full(len(batch), np.nan)
            names = [""] * len(batch)
            ok = np.ones(len(batch), dtype=bool)
        ok &= np.isfinite(q)
        base = len(idx_l)
        for j, item in enumerate(batch):
            f = item.frame
            idx_l.append(f.index)
            q_l.append(float(q[j]))
            pp_l.append(float(pp[j]))
            pn_l.append(names[j])
            el_l.append(bool(ok[j]))
            if ok[j]:
                pending[base + j] = f.image
        t_col.extend([item.frame.time for item in batch])
        q_col.extend(q)
        s_col.extend(np.full(len(batch), np.nan))
        finalize(float(t_col.values[-1]))
        bar.update(len(batch))

    total = None
    if scan.n_frames and scan.sample_fps is None:
        total = len(range(0, scan.n_frames, scan.every))
    bar = tqdm(total=total, desc=f"scoring {scan.name}", unit="frame", disable=not progress or None)
    state = {"det": det, "region_frame": None}
    items = _prefetch(
        _prepared_frames(scan, state, region_frames, size, plane_size),
        _prefetch_depth(scan.shape, batch_size),
    )
    batch: list = []
    try:
        try:
            for item in items:
                batch.append(item)
                if len(batch) >= batch_size:
                    score_batch(batch)
                    batch = []
        except ScanReadError as exc:
            error = exc
            log.warning("%s", exc)
        score_batch(batch)
        finalize(None)
    finally:
        items.close()
        bar.close()
    det, region_frame = state["det"], state["region_frame"]

    n = len(idx_l)
    times, quality, smoothed = t_col.values.copy(), q_col.values.copy(), s_col.values.copy()
    eligible = np.asarray(el_l, dtype=bool)
    pick_pos = temporal_nms(times, smoothed, top_k, min_gap, eligible) if n else []
    picks = []
    for rank, p in enumerate(pick_pos, start=1):
        image = pool.images.get(p)
        if image is None:  # pragma: no cover - guarded by the pool's proof
            raise RuntimeError(f"internal error: the image of picked frame {idx_l[p]} was released")
        picks.append(Pick(rank, int(idx_l[p]), float(times[p]), float(q_l[p]), float(smoothed[p]),
                          None if plane_net is None else float(pp_l[p]), image))
    settings = {
        "every": scan.every, "fps": scan.sample_fps, "frame_rate": frame_rate, "top_k": top_k,
        "min_gap": min_gap, "smooth": smooth, "region": region, "crop": None if crop is None else
        Region.coerce(crop).as_tuple(), "region_frames": region_frames, "batch_size": batch_size,
        "plane": plane, "plane_threshold": float(plane_threshold) if plane else None,
    }
    return SelectionResult(
        scan=str(scan_path), name=scan.name, kind=scan.kind,
        frames=np.asarray(idx_l, dtype=np.int64), times=times, quality=quality, quality_smoothed=smoothed,
        eligible=eligible, picks=picks,
        region=det, region_frame=region_frame, plane=plane,
        plane_threshold=float(plane_threshold) if plane else None,
        plane_predicted=pn_l if plane_net is not None else None,
        plane_probability=np.asarray(pp_l, dtype=np.float64) if plane_net is not None else None,
        error=error, runtime=rt.kind, image_size=tuple(size), source_fps=scan.fps, source_frames=scan.n_frames,
        settings=settings, seconds=time.perf_counter() - t_start,
    )


class _Column:
    """A float64 array that grows by appending (amortised doubling)."""

    def __init__(self) -> None:
        self._buf = np.empty(1024, dtype=np.float64)
        self.n = 0

    def extend(self, values) -> None:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if self.n + v.size > self._buf.size:
            grown = np.empty(max(2 * self._buf.size, self.n + v.size), dtype=np.float64)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n : self.n + v.size] = v
        self.n += v.size

    @property
    def values(self) -> np.ndarray:
        """The filled part (a view: valid until the next :meth:`extend`)."""
        return self._buf[: self.n]


@dataclass
class _Prepared:
    """A frame cut to the region, with its model input(s) (``(1, h, w)`` tensors)."""

    frame: Any
    x: Any
    x_plane: Any = None


def _prepared_frames(scan, state: dict, region_frames: int, size: tuple[int, int],
                     plane_size: tuple[int, int] | None) -> Iterator[_Prepared]:
    """Decode, find the region (first ``region_frames`` frames when needed), cut and resize.

    Runs in the background thread of :func:`_prefetch`, so cropping and
    resizing overlap the model. ``state["det"]`` is the region (``None`` until
    detected) and ``state["region_frame"]`` the first full frame. A read error
    is raised after every frame read before it has been yielded.
    """
    from ..io import to_tensor

    def prep(frame) -> _Prepared:
        cut = _cut(frame, state["det"], scan)
        x = to_tensor(cut.image, size)
        xp = None
        if plane_size is not None:
            xp = x if tuple(plane_size) == tuple(size) else to_tensor(cut.image, plane_size)
        return _Prepared(cut, x, xp)

    def detect(head: list) -> None:
        state["det"] = _detect(head, scan)
        state["region_frame"] = head[0].image

    head: list = []
    try:
        for frame in scan:
            if state["det"] is not None:
                if state["region_frame"] is None:
                    state["region_frame"] = frame.image
                yield prep(frame)
                continue
            head.append(frame)
            if len(head) >= region_frames:
                detect(head)
                for f in head:
                    yield prep(f)
                head = []
    except ScanReadError:
        if head:  # the frames read before the fault still count
            detect(head)
            for f in head:
                yield prep(f)
        raise
    if head:  # a scan shorter than region_frames
        detect(head)
        for f in head:
            yield prep(f)


def _detect(head: list, scan) -> RegionDetection:
    shape = head[0].image.shape
    same = [f.image for f in head if f.image.shape == shape]
    det = detect_region(np.stack(same))
    log.info("%s: ultrasound region %s (top, left, height, width) found by %s on %d frames",
             scan.path, det.box.as_tuple(), det.method, len(same))
    return det


def _cut(frame, det: RegionDetection, scan):
    """The frame cut to the region (a Frame with the cropped image)."""
    from .scan import Frame

    image = frame.image
    if det.method == "none" and image.shape == det.mask.shape:
        return frame
    if image.shape != det.mask.shape:
        raise ValueError(
            f"{scan.path}: frame {frame.index} is {image.shape[0]}x{image.shape[1]} but the region was set "
            f"on {det.mask.shape[0]}x{det.mask.shape[1]} frames; frames of different sizes need --region none"
        )
    return Frame(frame.index, frame.time, np.ascontiguousarray(det.box.crop(image)))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _non_negative(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return v


# ----------------------------------------------------------------------------- output


def _rgb_png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def quality_figure(result: SelectionResult):
    """Quality over time with the picks marked (raw scores faint when smoothed, ineligible frames shaded)."""
    from ..reporting.figures import quality_curve

    if result.n_scored == 0:
        raise ValueError(f"{result.scan}: no frame was scored, nothing to plot")
    pos = {int(f): i for i, f in enumerate(result.frames)}
    pick_pos = [pos[p.frame] for p in result.picks]
    smoothing = result.settings.get("smooth", 0.0) > 0
    title = f"{result.name}: quality over time"
    if result.plane:
        title += f" ({result.plane} >= {result.plane_threshold:g})"
    fig = quality_curve(
        result.quality_smoothed, times=result.times, best=pick_pos[0] if pick_pos else None,
        picks=pick_pos[1:], title=title,
        thumbnails={pick_pos[0]: result.picks[0].image} if pick_pos else None,
    )
    ax = fig.axes[0]
    if smoothing:
        ax.plot(result.times, result.quality, color="0.6", linewidth=0.7, alpha=0.6, zorder=1,
                label="raw score")
    if not result.eligible.all():
        t = result.times
        half = float(np.median(np.diff(t))) / 2 if t.size > 1 else 0.5
        bad = np.concatenate([[False], ~result.eligible, [False]]).astype(np.int8)
        starts = np.flatnonzero(np.diff(bad) == 1)
        stops = np.flatnonzero(np.diff(bad) == -1)  # exclusive
        for k, (a, b) in enumerate(zip(starts, stops)):
            ax.axvspan(t[a] - half, t[b - 1] + half, color="0.85", alpha=0.6, zorder=0, linewidth=0,
                       label="not eligible" if k == 0 else None)
    ax.set_ylabel("quality score" + (f" (smoothed +-{result.settings['smooth']:g} s)" if smoothing else ""))
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig


def write_selection(result: SelectionResult, out_dir: str | os.PathLike, *, report: bool = True) -> dict[str, Path]:
    """Write a selection: picks, CSVs, plot, region picture and HTML report.

    Files in ``out_dir``: ``best_<rank>_frame<index>.png`` (the picks, cut to
    the region, at full resolution), ``frames.csv`` (:data:`FRAME_COLUMNS`),
    ``picks.csv``, ``quality.png``, ``region.png`` (the region drawn on the
    first frame) and ``report.html``.

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    from ..reporting.figures import fig_to_png
    from ..files import write_bytes, write_csv, write_json
    from ..io import write_gray_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    digits = max(4, len(str(int(result.frames.max())))) if result.n_scored else 4
    for p in result.picks:
        p.path = write_gray_png(out / f"best_{p.rank:02d}_frame{p.frame:0{digits}d}.png", p.image)
        written[f"pick_{p.rank}"] = p.path
    written["frames_csv"] = write_csv(out / "frames.csv", result.rows(), FRAME_COLUMNS)
    written["picks_csv"] = write_csv(out / "picks.csv", [
        {"rank": p.rank, "frame": p.frame, "time": round(p.time, 6), "quality": p.quality,
         "quality_smoothed": p.quality_smoothed,
         "plane_probability": "" if p.plane_probability is None else p.plane_probability,
         "file": p.path.name if p.path else ""}
        for p in result.picks
    ], PICK_COLUMNS)
    plot_png = None
    if result.n_scored:
        plot_png = fig_to_png(quality_figure(result))
        written["plot"] = write_bytes(out / "quality.png", plot_png)
    region_png = None
    if result.region is not None and result.region_frame is not None:
        region_png = _rgb_png(draw_region(result.region_frame, result.region))
        written["region"] = write_bytes(out / "region.png", region_png)
    written["json"] = write_json(out / "selection.json", _summary_json(result))
    if report:
        written["report"] = _report(result, plot_png, region_png).write(out / "report.html")
    return written


def _summary_json(result: SelectionResult) -> dict:
    det = result.region
    return {
        "scan": result.scan, "kind": result.kind, "runtime": result.runtime, "image_size": list(result.image_size),
        "frames_scored": result.n_scored, "eligible": int(result.eligible.sum()),
        "region": None if det is None else {"method": det.method, "box": list(det.box.as_tuple())},
        "picks": [{"rank": p.rank, "frame": p.frame, "time": p.time, "quality": p.quality,
                   "quality_smoothed": p.quality_smoothed, "plane_probability": p.plane_probability,
                   "file": p.path.name if p.path else None} for p in result.picks],
        "settings": result.settings, "seconds": round(result.seconds, 3),
        "error": None if result.error is None else str(result.error),
    }


def _report(result: SelectionResult, plot_png: bytes | None, region_png: bytes | None):
    from ..reporting.html import Report

    rep = Report(f"Best frames of {result.name}")
    det = result.region
    info = {
        "scan": result.scan,
        "type": result.kind,
        "source frame rate": result.source_fps if result.source_fps else "unknown",
        "frames in the source": result.source_frames if result.source_frames else "unknown",
        "frames scored": result.n_scored,
        "sampling": f"every {result.settings.get('every', 1)} frame(s)"
        + (f", at most {result.settings['fps']:g}/s" if result.settings.get("fps") else ""),
        "ultrasound region": "n/a" if det is None else f"{det.method}: top {det.box.top}, left {det.box.left}, "
        f"{det.box.height} x {det.box.width} px",
        "model": f"{result.runtime} runtime at {result.image_size[0]} x {result.image_size[1]}",
        "plane check": (f"{result.plane}, probability >= {result.plane_threshold:g} "
                        f"({int(result.eligible.sum())} of {result.n_scored} frames eligible)")
        if result.plane else "none (every frame eligible)",
        "smoothing": f"+-{result.settings['smooth']:g} s (Gaussian)" if result.settings.get("smooth") else "none",
        "picks": f"top {result.settings.get('top_k')} at least {result.settings.get('min_gap'):g} s apart",
        "time": f"{result.seconds:.1f} s ({result.frames_per_second:.1f} frames/s)",
    }
    rep.add_heading("Summary").add_key_values(info)
    if result.error is not None:
        rep.add_text(f"**Read error:** {result.error}. The {result.n_scored} frames decoded before it were "
                     "scored; the picks come from them.")
    rep.add_heading("Selected frames")
    if result.picks:
        rep.add_images([p.image for p in result.picks],
                       [f"#{p.rank}: frame {p.frame}, {p.time:.2f} s, score {p.quality_smoothed:.3f}"
                        for p in result.picks], size=288)
        rep.add_table([{"rank": p.rank, "frame": p.frame, "time (s)": p.time, "quality": p.quality,
                        "smoothed": p.quality_smoothed,
                        **({"plane probability": p.plane_probability} if result.plane else {})}
                       for p in result.picks])
    else:
        rep.add_text("No frame was eligible" + (f" (no frame reached {result.plane} probability "
                                                f"{result.plane_threshold:g})." if result.plane else "."))
    if plot_png is not None:
        rep.add_heading("Quality over time").add_figure(
            plot_png, "Quality score per scored frame (higher = better); star: best pick, triangles: other picks.")
    if region_png is not None:
        rep.add_heading("Ultrasound region").add_figure(
            region_png, "Green: detected image area; red: the box every frame is cut to before scoring.")
    return rep


def write_summary(results: Sequence[SelectionResult], out_dir: str | os.PathLike,
                  *, errors: Sequence[tuple[str, str]] = (), report: bool = True) -> dict[str, Path]:
    """Write ``summary.csv`` (:data:`SUMMARY_COLUMNS`) and a ``report.html`` for several scans.

    ``errors`` lists ``(scan, message)`` of scans that could not be opened at all.
    """
    from ..files import write_csv
    from ..reporting.html import Report

    out = Path(out_dir)
    rows = [r.summary_row() for r in results]
    rows += [{"scan": s, "frames_scored": 0, "eligible": 0, "best_frame": "", "time": "", "score": "", "error": m}
             for s, m in errors]
    written = {"summary_csv": write_csv(out / "summary.csv", rows, SUMMARY_COLUMNS)}
    if report:
        rep = Report("Best frames of several scans")
        rep.add_heading("Summary").add_table(rows, SUMMARY_COLUMNS)
        best = [r for r in results if r.best is not None]
        if best:
            rep.add_heading("Best frame of each scan")
            rep.add_images([r.best.image for r in best],
                           [f"{r.name}: frame {r.best.frame}, {r.best.time:.2f} s, {r.best.quality_smoothed:.3f}"
                            for r in best], size=256)
        rep.add_text("Each scan's folder holds its own report, frames.csv and picks.")
        written["report"] = rep.write(out / "report.html")
    return written
