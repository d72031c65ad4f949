"""A job's work: the same engine as ``crl-uiqa select``, with progress, limits and web-ready results.

:func:`run_selection` calls :func:`crl_uiqa.video.select.select_frames` and
:func:`~crl_uiqa.video.select.write_selection` (no second implementation of
scoring, plane check, smoothing or picking). What it adds is what a server
needs around them: frame-count limits, progress and cancellation (observed
at each batch the scorer receives), the picks zipped, and a JSON result for
the page with the scores of every frame.
"""
from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ScanError
from .jobs import Job, JobCancelled
from .models import ModelRegistry, PlaneChecker
from .settings import ServeSettings

__all__ = ["run_selection", "render_frame", "FrameLimit", "DOWNLOADS"]

#: Downloads a finished job offers: public name -> (key in write_selection's files, media type).
DOWNLOADS = {
    "frames.csv": ("frames_csv", "text/csv"),
    "picks.csv": ("picks_csv", "text/csv"),
    "picks.zip": ("picks_zip", "application/zip"),
    "report.html": ("report", "text/html"),
    "selection.json": ("json", "application/json"),
    "quality.png": ("plot", "image/png"),
    "region.png": ("region", "image/png"),
}

#: Frame rate given to still-image uploads: one image per second, so times read as image numbers.
STILLS_FRAME_RATE = 1.0


class FrameLimit(ScanError):
    """The scan has more frames than the server accepts."""


def _observed(runtime: Any, job: Job, max_frames: int):
    """``runtime`` reporting each batch to ``job`` (progress, cancellation, frame limit)."""
    from ..runtime import Runtime

    class Observed(Runtime):
        kind = runtime.kind

        def __init__(self) -> None:
            super().__init__(runtime.image_size, runtime.source, runtime.meta)

        def __call__(self, batch):
            if job.cancel.is_set():
                raise JobCancelled("cancelled")
            out = runtime(batch)
            job.done += int(len(out))
            if job.done > max_frames:
                raise FrameLimit(f"the scan has more than {max_frames} frames to score; this server scores at "
                                 f"most {max_frames} per scan (--max-frames)")
            return out

    return Observed()


def _expected(scan, every: int, fps: float | None) -> int | None:
    n = scan.n_frames
    if not n:
        return None
    total = len(range(0, n, every))
    if fps is not None and scan.fps:
        total = min(total, int(math.ceil(n / scan.fps * fps)) + 1)
    return total


def _finite(values) -> list:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, dtype=np.float64)]


def run_selection(job: Job, models: ModelRegistry, planes: PlaneChecker, settings: ServeSettings, *,
                  device: str = "cpu") -> None:
    """Score ``job``'s upload, write its files and set ``job.result`` (the worker's runner).

    ``device`` runs the plane check (the model's runtime keeps its own device).
    """
    from ..video.scan import open_scan
    from ..video.select import select_frames, write_selection

    opts = job.options
    served = models.get(opts.model)
    plane = planes.check(opts.plane) if opts.plane else None
    frame_rate = STILLS_FRAME_RATE if job.kind == "image" else None
    job.phase = "reading the scan"
    scan = open_scan(job.input, every=opts.every, fps=opts.fps, frame_rate=frame_rate)
    # (open_scan refuses frames above --max-pixels from the header, as a still image is refused)
    if scan.n_frames and scan.n_frames > settings.max_frames:
        raise FrameLimit(f"the scan has {scan.n_frames} frames; this server accepts at most {settings.max_frames} "
                         "(--max-frames)")
    job.total = _expected(scan, opts.every, opts.fps)
    job.phase = "decoding and scoring frames"
    result = select_frames(
        _observed(served.runtime, job, settings.max_frames), job.input,
        plane=plane, plane_threshold=opts.plane_threshold, plane_model=planes.model if plane else None,
        top_k=opts.top_k, min_gap=opts.min_gap, smooth=opts.smooth, every=opts.every, fps=opts.fps,
        frame_rate=frame_rate, batch_size=settings.batch_size, device=device,
    )
    if job.cancel.is_set():
        raise JobCancelled("cancelled")
    if result.n_scored == 0:
        raise ScanError(job.public_message(str(result.error) if result.error else "the scan has no frames")
                         + ": no frame could be decoded")
    job.phase = "writing the results"
    # the report names the upload, not the server's file
    result.scan = job.name
    result.name = Path(job.name).stem or job.name
    out = job.dir / "out"
    written = write_selection(result, out)
    written["picks_zip"] = _zip_picks(result, out / "picks.zip")
    job.files = {public: written[key] for public, (key, _) in DOWNLOADS.items() if key in written}
    job.private["region"] = None if result.region is None else result.region.box.as_tuple()
    job.private["frames"] = frozenset(int(f) for f in result.frames)
    job.private["frame_rate"] = frame_rate
    job.private["pick_files"] = {p.rank: p.path for p in result.picks}
    job.result = _result_json(job, result, served.name)


def _zip_picks(result, path: Path) -> Path:
    from ..files import write_bytes

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in result.picks:
            if p.path is not None:
                zf.write(p.path, arcname=p.path.name)
    return write_bytes(path, buf.getvalue())


def _result_json(job: Job, result, model_name: str) -> dict:
    base = f"/api/scans/{job.id}"
    pos = {int(f): i for i, f in enumerate(result.frames)}
    det = result.region
    return {
        "scan": job.name,
        "kind": result.kind,
        "model": model_name,
        "runtime": result.runtime,
        "image_size": list(result.image_size),
        "frames_scored": result.n_scored,
        "eligible": int(result.eligible.sum()),
        "source_frames": result.source_frames,
        "source_fps": result.source_fps,
        "seconds": round(float(result.seconds), 3),
        "plane": result.plane,
        "plane_threshold": result.plane_threshold,
        "smooth": result.settings.get("smooth", 0.0),
        "region": None if det is None else {"method": det.method, "box": list(det.box.as_tuple())},
        "read_error": None if result.error is None else job.public_message(str(result.error)),
        "frames": {
            "frame": [int(f) for f in result.frames],
            "time": [round(float(t), 6) for t in result.times],
            "quality": _finite(result.quality),
            "quality_smoothed": _finite(result.quality_smoothed),
            "eligible": [bool(e) for e in result.eligible],
            "plane": list(result.plane_predicted) if result.plane_predicted is not None else None,
            "plane_probability": _finite(result.plane_probability) if result.plane_probability is not None else None,
        },
        "picks": [
            {
                "rank": p.rank, "frame": p.frame, "time": p.time, "quality": p.quality,
                "quality_smoothed": p.quality_smoothed, "plane_probability": p.plane_probability,
                "plane": result.plane_predicted[pos[p.frame]] if result.plane_predicted is not None else None,
                "image": f"{base}/picks/{p.rank}.png",
            }
            for p in result.picks
        ],
        "downloads": {name: f"{base}/files/{name}" for name in job.files},
    }


def render_frame(job: Job, frame: int) -> bytes:
    """PNG of source frame ``frame`` of a finished job, cut to the job's region (as the picks are).

    The scan is decoded again from its start up to that frame (videos decode
    sequentially), so a frame late in a long video takes a moment.
    """
    from PIL import Image

    from ..video.region import Region
    from ..video.scan import open_scan

    region = job.private.get("region")
    scan = open_scan(job.input, frame_rate=job.private.get("frame_rate"))
    for f in scan:
        if f.index < frame:
            continue
        if f.index > frame:
            break
        image = f.image
        if region is not None:
            box = Region.coerce(region)
            if box.fits(image.shape[:2]):
                image = box.crop(image)
        buf = io.BytesIO()
        Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()
    raise KeyError(f"frame {frame} could not be decoded again")
