"""Score a live stream (a camera or a video played in real time), dropping frames rather than falling behind.

:func:`run_live` runs two threads:

* a **reader** decodes frames as they come: a camera at its own rate; a video
  file paced by its timestamps (frame ``i`` is handed over ``t_i`` seconds
  after the first one), as if it were live. Each frame goes into a
  :class:`LatestFrameSlot`, a one-slot buffer: a frame not taken yet is
  overwritten by the next one and counted as *dropped*;
* the **scorer** (the calling thread) takes the newest frame, cuts it to the
  ultrasound region, scores it and updates the running quality and the best
  frame so far.

So the scorer always works on the most recent frame and the run ends when the
stream does, however slow the model is: one frame per forward pass, so a score
never waits for later frames.

With ``realtime=False`` (files only) nothing is dropped and every frame is
scored as fast as the machine allows, through ``select``'s pipeline: a
background thread decodes, cuts and resizes frames a bounded number ahead
(:mod:`crl_uiqa.video.prefetch`) while the scorer runs batches of
``batch_size`` frames, the batches of ``select`` (so the same scores, with the
same region frames). The running quality, the best frame and the status are
updated frame by frame in stream order, as in real time.

The region: a manual crop, else the DICOM region, else (``region="auto"``)
detection on the first ``region_frames`` frames taken (they are scored right
after), or whole frames (``region="none"``).

Camera input: an integer index (``0``) opens that camera with OpenCV when it
is installed, else with PyAV (``v4l2`` ``/dev/videoN`` on Linux,
``avfoundation`` on macOS, ``dshow`` on Windows).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError, ScanError
from .framing import FRAME_BATCH, RegionCutter, RegionPolicy, batch_size_setting, model_input
from .region import Region, RegionDetection
from .scan import Frame

if TYPE_CHECKING:
    from ..runtime import Device, ModelSource, Runtime
    from .scan import ScanSource
    from .select import _Prepared

log = logging.getLogger(__name__)

__all__ = ["LatestFrameSlot", "LiveStatus", "LiveResult", "LiveTrack", "run_live", "open_camera", "is_camera",
           "live_figure"]

#: Frames taken for region auto-detection in live mode.
LIVE_REGION_FRAMES = 15
#: Time constant (seconds) of the running mean quality.
RUNNING_MEAN_SECONDS = 1.0


class LatestFrameSlot:
    """A one-slot buffer between a producer and a consumer thread.

    ``put`` stores an item; when the slot still holds an item the consumer
    has not taken, that item is overwritten (and counted in :attr:`dropped`)
    or, with ``overwrite=False``, ``put`` waits until it is taken. ``get``
    returns the newest item, waiting for one; ``None`` once the slot is
    closed and empty.
    """

    def __init__(self, overwrite: bool = True) -> None:
        self.overwrite = bool(overwrite)
        self.dropped = 0
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> None:
        """Store ``item`` (overwriting or waiting, see the class docstring); ignored once closed."""
        with self._cond:
            if self._full and not self.overwrite:
                self._cond.wait_for(lambda: not self._full or self._closed)
            if self._closed:
                return
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The newest item; ``None`` when closed and empty (or after ``timeout`` seconds without one)."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout=timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more items: wake the consumer (it still gets the last item) and any waiting producer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and not self._full


@dataclass
class LiveStatus:
    """Running numbers of a live session (passed to the status callback)."""

    received: int
    scored: int
    dropped: int
    elapsed: float
    time: float
    quality: float
    running_quality: float
    best_frame: int | None
    best_time: float | None
    best_quality: float

    def line(self) -> str:
        """One status line."""
        best = (f"best {self.best_quality:.4f} (frame {self.best_frame} at {self.best_time:.2f} s)"
                if self.best_frame is not None else "best -")
        return (f"t {self.time:7.2f} s | quality {self.quality:.4f} (running {self.running_quality:.4f}) | {best} | "
                f"received {self.received}, scored {self.scored}, dropped {self.dropped}")


@dataclass
class LiveResult:
    """What a live session saw and scored.

    Attributes
    ----------
    source : str
        The file or camera.
    received, scored, dropped : int
        Frames delivered by the stream, scored, and overwritten before the
        scorer could take them (``received = scored + dropped``, except frames
        a read error or an interruption cut off).
    frames, times, scores : numpy.ndarray
        Index, stream time (s) and quality of each scored frame.
    best_frame, best_time, best_quality, best_image :
        The best scored frame (``None``/NaN when nothing was scored); the
        image is cut to the region.
    seconds : float
        Wall time of the session.
    stream_fps : float or None
        Nominal frame rate of the source.
    region : RegionDetection or None
    error : Exception or None
        A read error that ended the stream early.
    interrupted : bool
        Ctrl-C (``KeyboardInterrupt``) ended the session; what was scored up to then is kept.
    """

    source: str
    received: int
    scored: int
    dropped: int
    frames: np.ndarray
    times: np.ndarray
    scores: np.ndarray
    best_frame: int | None
    best_time: float | None
    best_quality: float
    best_image: np.ndarray | None = field(repr=False)
    seconds: float
    stream_fps: float | None
    region: RegionDetection | None
    error: Exception | None = None
    interrupted: bool = False

    @property
    def scored_per_second(self) -> float:
        """Frames scored per second of wall time."""
        return self.scored / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """A human-readable summary paragraph."""
        pct = 100.0 * self.dropped / self.received if self.received else 0.0
        text = (f"{self.source}: received {self.received} frames, scored {self.scored}, dropped {self.dropped} "
                f"({pct:.1f} %) in {self.seconds:.1f} s ({self.scored_per_second:.1f} scored/s"
                + (f", stream {self.stream_fps:.1f} fps" if self.stream_fps else "") + ")")
        if self.best_frame is not None:
            text += f"; best frame {self.best_frame} at {self.best_time:.2f} s, score {self.best_quality:.4f}"
        if self.error is not None:
            text += f"; stopped by: {self.error}"
        if self.interrupted:
            text += "; interrupted"
        return text


# ----------------------------------------------------------------------------- sources


def is_camera(source: Any) -> bool:
    """Whether ``source`` names a camera: an integer or a string of digits."""
    if isinstance(source, bool):
        return False
    if isinstance(source, (int, np.integer)):
        return True
    return isinstance(source, str) and source.strip().isdigit()


def open_camera(index: int) -> tuple[Iterator[Frame], float | None]:
    """Frames of camera ``index`` (OpenCV if installed, else PyAV) and its nominal frame rate.

    Frame times are seconds of the monotonic clock since the first frame.

    Raises
    ------
    crl_uiqa.errors.ScanError
        When no backend can open the camera.
    """
    index = int(index)
    errors = []
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        cv2 = None
        errors.append("OpenCV is not installed (pip install opencv-python)")
    if cv2 is not None:
        cap = cv2.VideoCapture(index)
        if cap.isOpened():
            rate = cap.get(cv2.CAP_PROP_FPS) or None
            return _cv2_frames(cap, cv2), (float(rate) if rate and rate > 0 else None)
        cap.release()
        errors.append(f"OpenCV could not open camera {index}")
    try:
        import av  # noqa: PLC0415
    except ImportError:
        av = None
        errors.append("PyAV is not installed (pip install 'crl-uiqa[video]')")
    if av is not None:
        if sys.platform.startswith("linux"):
            url, fmt = f"/dev/video{index}", "v4l2"
        elif sys.platform == "darwin":
            url, fmt = str(index), "avfoundation"
        else:
            url, fmt = None, "dshow"
        if url is None:
            errors.append("PyAV on Windows needs a DirectShow device name; install opencv-python for indices")
        else:
            try:
                container = av.open(url, format=fmt)
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                return _av_frames(container, stream), (float(rate) if rate else None)
            except Exception as exc:  # FFmpeg errors, missing device, no video stream
                errors.append(f"PyAV could not open {url} ({fmt}): {exc}")
    raise ScanError(f"cannot open camera {index}: " + "; ".join(errors))


def _cv2_frames(cap, cv2) -> Iterator[Frame]:
    t0 = None
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            now = time.monotonic()
            t0 = now if t0 is None else t0
            gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            yield Frame(i, now - t0, gray.astype(np.float32) / np.float32(255.0))
            i += 1
    finally:
        cap.release()


def _av_frames(container, stream) -> Iterator[Frame]:
    t0 = None
    i = 0
    try:
        for frame in container.decode(stream):
            now = time.monotonic()
            t0 = now if t0 is None else t0
            gray = frame.to_ndarray(format="gray").astype(np.float32) / np.float32(255.0)
            yield Frame(i, now - t0, gray)
            i += 1
    finally:
        container.close()


# ----------------------------------------------------------------------------- session


class _Reader:
    """The reader thread: frames from the source into the slot, paced by their timestamps for files in real time."""

    def __init__(self, frames: Iterator[Frame], slot: LatestFrameSlot, stop: threading.Event, paced: bool) -> None:
        self.frames, self.slot, self.stop, self.paced = frames, slot, stop, paced
        self.received = 0
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="crl-uiqa-live-reader", daemon=True)

    def _run(self) -> None:
        t0 = None
        try:
            for frame in self.frames:
                if self.stop.is_set():
                    break
                if self.paced:
                    if t0 is None:
                        t0 = time.perf_counter() - frame.time
                    delay = t0 + frame.time - time.perf_counter()
                    if delay > 0 and self.stop.wait(delay):
                        break
                self.received += 1
                self.slot.put(frame)
        except Exception as exc:  # a read error ends the stream; reported in the result
            self.error = exc
        finally:
            close = getattr(self.frames, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # pragma: no cover - closing a broken stream
                    pass
            self.slot.close()


class LiveTrack:
    """The scores of a live session so far: every scored frame, the running mean quality and the best frame.

    The running mean is an exponential moving average in stream time with
    time constant :data:`RUNNING_MEAN_SECONDS` (irregular frame times are
    fine); non-finite scores are recorded but change neither it nor the best.
    """

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.times: list[float] = []
        self.scores: list[float] = []
        self.running = math.nan
        self._running_time: float | None = None
        self.best_quality = -math.inf
        self.best_frame: int | None = None
        self.best_time: float | None = None
        self.best_image: np.ndarray | None = None

    def add(self, frame: Frame, score: float) -> None:
        """Record the score of one frame (in stream order)."""
        v = float(score)
        self.frames.append(frame.index)
        self.times.append(frame.time)
        self.scores.append(v)
        if not math.isfinite(v):
            return
        if self._running_time is None or not math.isfinite(self.running):
            self.running = v
        else:
            a = 1.0 - math.exp(-max(frame.time - self._running_time, 0.0) / RUNNING_MEAN_SECONDS)
            self.running += a * (v - self.running)
        self._running_time = frame.time
        if v > self.best_quality:
            self.best_quality, self.best_frame = v, frame.index
            self.best_time, self.best_image = frame.time, frame.image

    def status(self, received: int, dropped: int, elapsed: float) -> LiveStatus:
        """The :class:`LiveStatus` of the session now."""
        n = len(self.scores)
        return LiveStatus(
            received=received, scored=n, dropped=dropped, elapsed=elapsed, time=self.times[-1] if n else 0.0,
            quality=self.scores[-1] if n else math.nan, running_quality=self.running, best_frame=self.best_frame,
            best_time=self.best_time, best_quality=self.best_quality if n else math.nan,
        )


class _LiveScorer:
    """Scores frames into a :class:`LiveTrack`, in stream order, and reports the status after a forward pass at
    most every ``interval`` seconds.

    ``batch_size=None`` (real time): what arrives is scored at once, in one
    pass (the newest frame, or the frames region detection held). Otherwise
    frames wait until ``batch_size`` of them can go through one pass (the rest
    at the end of the stream): the batches of ``select``. ``counts`` gives the
    frames received and dropped so far.
    """

    def __init__(self, rt: Runtime, track: LiveTrack, counts: Callable[[], tuple[int, int]],
                 on_status: Callable[[LiveStatus], None] | None, interval: float, t_start: float,
                 batch_size: int | None) -> None:
        self.rt, self.track, self.counts, self.on_status = rt, track, counts, on_status
        self.interval, self.t_start, self.last = interval, t_start, -math.inf
        self.batch_size = batch_size
        self.pending: list[_Prepared] = []  # cut and resized, not scored yet

    def prepare(self, frames: list[Frame]) -> list[_Prepared]:
        """Frames cut to the region, with their model inputs."""
        from .select import _Prepared

        return [_Prepared(f, model_input(f.image, self.rt.image_size)) for f in frames]

    def feed(self, items: list[_Prepared], end: bool = False) -> None:
        """Take prepared frames and score every full batch; with ``end``, the rest too."""
        self.pending.extend(items)
        size = self.batch_size or len(self.pending)
        while self.pending and (len(self.pending) >= size or end):
            batch = self.pending[:size]
            self._score(batch)
            del self.pending[:len(batch)]

    def _score(self, batch: list[_Prepared]) -> None:
        import torch

        q = self.rt(torch.stack([item.x for item in batch]))
        for item, v in zip(batch, np.asarray(q, dtype=np.float64)):
            self.track.add(item.frame, v)
        self.report()

    def report(self, force: bool = False) -> None:
        """Call ``on_status`` when ``interval`` seconds have passed since the last call (always with ``force``)."""
        now = time.perf_counter()
        if self.on_status is not None and (force or now - self.last >= self.interval):
            self.last = now
            self.on_status(self.track.status(*self.counts(), now - self.t_start))


def _open_source(source: str | os.PathLike | int, realtime: bool, policy: RegionPolicy,
                 frame_rate: float | None) -> tuple[Iterable[Frame], float | None, str, RegionCutter]:
    """The frames (a camera's, or a file's scan), nominal rate, name and region cutter of a camera or a file."""
    if is_camera(source):
        if not realtime:
            raise ConfigError("a camera is always real time: --no-realtime applies to files only")
        if policy.crop is None and policy.mode == "dicom":
            raise ConfigError(f"a camera has no DICOM region: use region auto or none, or a crop box "
                             f"(got {policy.mode!r})")
        frames, fps = open_camera(int(source))
        name = f"camera {int(source)}"
        return frames, fps, name, RegionCutter(policy, name)  # the frame size is known from the first frame
    from .scan import open_scan

    scan = open_scan(source, frame_rate=frame_rate)
    cutter = RegionCutter(policy, str(source), scan.shape, scan.region)
    return scan, scan.fps, str(source), cutter


def run_live(
    model: ModelSource,
    source: str | os.PathLike | int,
    *,
    runtime: str = "auto",
    device: Device = "cpu",
    threads: int | None = None,
    realtime: bool = True,
    batch_size: int = FRAME_BATCH,
    crop: Region | Sequence[int] | str | None = None,
    region: str = "auto",
    region_frames: int = LIVE_REGION_FRAMES,
    frame_rate: float | None = None,
    duration: float | None = None,
    on_status: Callable[[LiveStatus], None] | None = None,
    status_interval: float = 0.25,
    stop_event: threading.Event | None = None,
) -> LiveResult:
    """Score a stream frame by frame at its own pace (see the module docstring).

    Parameters
    ----------
    model : Runtime, QualityModel, str or os.PathLike
        A :class:`crl_uiqa.runtime.Runtime`, model, run directory or exported file.
    source : str, os.PathLike or int
        A video/DICOM/image-sequence path, or a camera index.
    runtime, device, threads :
        Engine options when ``model`` is not a Runtime (see :func:`crl_uiqa.runtime.load_runtime`).
    realtime : bool
        Pace files by their timestamps and drop frames the scorer cannot
        keep up with, one frame per forward pass. ``False`` (files only) scores every frame, in batches.
    batch_size : int
        Frames per forward pass without ``realtime`` (default: ``select``'s).
    crop, region, region_frames :
        The ultrasound region (see the module docstring).
    frame_rate : float, optional
        Frame rate of image sequences and DICOM files without timing.
    duration : float, optional
        Stop after this many seconds of wall time (e.g. for a camera).
    on_status : callable, optional
        Called with a :class:`LiveStatus` after a forward pass, at most every
        ``status_interval`` seconds, and once at the end.
    stop_event : threading.Event, optional
        Set it (from another thread) to end the session early.

    Returns
    -------
    LiveResult
        Ctrl-C (``KeyboardInterrupt``) in the scoring loop ends the session as the end of the stream
        does, the way to stop a camera: the frames scored so far are returned, with ``interrupted`` set
        (without ``realtime``, not the batch being filled or scored when it came).
    """
    from ..runtime import Runtime, load_runtime

    policy = RegionPolicy.create(crop, region, region_frames)
    batch_size = batch_size_setting(batch_size)
    if duration is not None and not float(duration) > 0:
        raise ConfigError(f"duration must be > 0 seconds, got {duration}")
    rt = model if isinstance(model, Runtime) else load_runtime(model, runtime, device=device, threads=threads)
    frames, stream_fps, name, cutter = _open_source(source, realtime, policy, frame_rate)
    stop = stop_event or threading.Event()
    track = LiveTrack()
    t_start = time.perf_counter()
    if not realtime:
        return _run_batched(frames, policy, rt, track, batch_size, on_status, status_interval, stop, duration,
                            t_start, name)
    slot = LatestFrameSlot(overwrite=True)
    reader = _Reader(iter(frames), slot, stop, paced=not is_camera(source))
    score = _LiveScorer(rt, track, lambda: (reader.received, slot.dropped), on_status, status_interval, t_start,
                        None)
    reader.thread.start()
    interrupted = False
    try:
        while duration is None or time.perf_counter() - t_start < float(duration):
            frame = slot.get(timeout=0.1)
            if frame is not None:
                score.feed(score.prepare(cutter.push(frame)))
            elif slot.closed:
                break
        score.feed(score.prepare(cutter.flush()))  # the stream ended during region detection
    except KeyboardInterrupt:  # Ctrl-C stops a stream (a camera has no end): keep what was scored
        interrupted = True
    finally:
        stop.set()
        slot.close()
        reader.thread.join(timeout=5.0)
    score.report(force=True)
    return _result(name, track, reader.received, slot.dropped, t_start, stream_fps, cutter, reader.error, interrupted)


def _run_batched(scan: ScanSource, policy: RegionPolicy, rt: Runtime, track: LiveTrack, batch_size: int,
                 on_status: Callable[[LiveStatus], None] | None, status_interval: float, stop: threading.Event,
                 duration: float | None, t_start: float, name: str) -> LiveResult:
    """``realtime=False``: every frame of a file, prepared ahead in a background thread as ``select`` does
    (:class:`crl_uiqa.video.select._FramePreparer`), scored in batches of ``batch_size``."""
    from .prefetch import prefetch, prefetch_depth
    from .scan import ScanReadError
    from .select import _FramePreparer

    preparer = _FramePreparer(scan, policy, rt.image_size, None)
    received = 0
    score = _LiveScorer(rt, track, lambda: (received, 0), on_status, status_interval, t_start, batch_size)
    items = prefetch(iter(preparer), prefetch_depth(scan.shape, batch_size))
    error, interrupted = None, False
    try:
        try:
            for item in items:
                received += 1
                score.feed([item])
                if stop.is_set() or (duration is not None and time.perf_counter() - t_start >= float(duration)):
                    break
        except ScanReadError as exc:  # a read error ends the stream: the frames read before it are scored
            error = exc
        score.feed([], end=True)  # the last batch
    except KeyboardInterrupt:  # Ctrl-C: keep what was scored
        interrupted = True
    finally:
        stop.set()
        items.close()
    score.report(force=True)
    return _result(name, track, received, 0, t_start, scan.fps, preparer.cutter, error, interrupted)


def _result(name: str, track: LiveTrack, received: int, dropped: int, t_start: float, stream_fps: float | None,
            cutter: RegionCutter, error: Exception | None, interrupted: bool) -> LiveResult:
    """The :class:`LiveResult` of a finished session."""
    return LiveResult(
        source=name, received=received, scored=len(track.scores), dropped=dropped,
        frames=np.asarray(track.frames, dtype=np.int64), times=np.asarray(track.times, dtype=np.float64),
        scores=np.asarray(track.scores, dtype=np.float64), best_frame=track.best_frame, best_time=track.best_time,
        best_quality=track.best_quality if track.scores else math.nan, best_image=track.best_image,
        seconds=time.perf_counter() - t_start, stream_fps=stream_fps, region=cutter.det, error=error,
        interrupted=interrupted,
    )


# The figure lives with the other report code; importable from here as before.
from ..reporting.selection import live_figure  # noqa: E402
