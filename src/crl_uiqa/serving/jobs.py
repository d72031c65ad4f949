"""Uploads waiting to be scored: one background worker, a bounded queue, expiry of old jobs.

A :class:`Job` is one uploaded scan with its own private folder
(``WORKDIR/<uuid4>/``: ``input/`` the upload under server-made names,
``out/`` what the engine wrote). :class:`JobQueue` runs jobs one at a time
in a background thread, so the page stays responsive and several uploads
wait their turn instead of overloading the machine; when ``queue_size`` jobs
are already waiting, :meth:`JobQueue.submit` raises :class:`QueueFull`.
Finished jobs are deleted ``job_ttl`` seconds after they end (and the oldest
beyond ``max_jobs``); :meth:`JobQueue.close` cancels the running job and
deletes every folder.
"""
from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import CRLUIQAError, one_line
from .settings import MAX_DETAIL, ScanOptions, ServeSettings

log = logging.getLogger(__name__)

__all__ = ["Job", "JobQueue", "QueueFull", "JobCancelled", "new_job_id", "STATES"]

#: Job states, in order; ``done``, ``failed`` and ``cancelled`` are final.
STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})


class QueueFull(RuntimeError):
    """Too many uploads are already waiting."""

    @classmethod
    def of(cls, queue_size: int) -> QueueFull:
        """The error of a full queue of ``queue_size`` waiting uploads (one message for the check and the queue)."""
        waiting = f"{queue_size} upload{'s are' if queue_size != 1 else ' is'} already waiting"
        return cls(f"{waiting}; try again when one has finished")


class JobCancelled(RuntimeError):
    """The job was cancelled (deleted by its client, or the server is stopping)."""


def new_job_id() -> str:
    """An unguessable job id (uuid4: 122 random bits, hex)."""
    return uuid.uuid4().hex


@dataclass
class Job:
    """One uploaded scan and what became of it.

    ``name`` is the upload's file name for display only (never a path);
    ``input`` the file or folder the engine reads; ``aliases`` the upload
    names by stored path (for messages); ``files`` the downloads
    (public name -> path inside the job folder); ``result`` the JSON-ready
    result once done.
    """

    id: str
    name: str
    kind: str
    options: ScanOptions
    dir: Path
    input: Path
    status: str = "queued"
    phase: str = "waiting for the worker"
    done: int = 0
    total: int | None = None
    message: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: dict | None = None
    files: dict[str, Path] = field(default_factory=dict)
    private: dict = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def public_message(self, text: str) -> str:
        """``text`` with server paths replaced by the upload's name (nothing of the server leaks)."""
        out = str(text)
        for p in sorted(self.aliases, key=len, reverse=True):
            out = out.replace(p, self.aliases[p])
        for p in sorted({str(self.input), str(self.dir / "input"), str(self.dir)}, key=len, reverse=True):
            out = out.replace(p + "/", "").replace(p, self.name)
        return out


class JobQueue:
    """Runs jobs one at a time in a background thread (see the module docstring).

    Parameters
    ----------
    settings : ServeSettings
        Limits (``queue_size``, ``job_ttl``, ``max_jobs``).
    runner : callable
        ``runner(job)`` does the work; it may update ``job.phase``,
        ``job.done`` and ``job.total``, must check ``job.cancel`` and raise
        :class:`JobCancelled` when it is set. Exceptions mark the job failed
        with their message.
    root : Path
        Folder of the job folders.
    """

    def __init__(self, settings: ServeSettings, runner: Callable[[Job], None], root: Path) -> None:
        self.settings = settings
        self.runner = runner
        self.root = Path(root)
        self._jobs: dict[str, Job] = {}
        self._waiting: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._current: Job | None = None
        self._thread = threading.Thread(target=self._work, name="crl-uiqa-serve-worker", daemon=True)
        self._thread.start()

    # -- client side ----------------------------------------------------------------

    def has_room(self) -> bool:
        """Whether a new upload would be accepted now."""
        return not self._stop.is_set() and not self._waiting.full()

    def refusal(self) -> QueueFull:
        """Why a new upload is not accepted now (the server is stopping, or the queue is full)."""
        if self._stop.is_set():
            return QueueFull("the server is shutting down")
        return QueueFull.of(self.settings.queue_size)

    def new_job(self, name: str, kind: str, options: ScanOptions) -> Job:
        """A job with a fresh id and an empty folder (not queued yet; see :meth:`submit`)."""
        jid = new_job_id()
        folder = self.root / jid
        (folder / "input").mkdir(parents=True)
        return Job(jid, name, kind, options, folder, folder / "input")

    def submit(self, job: Job) -> Job:
        """Queue ``job``; raises :class:`QueueFull` (and deletes the job's folder) when the queue is full."""
        self.expire()
        with self._lock:
            try:
                if self._stop.is_set():
                    raise queue.Full
                self._waiting.put_nowait(job)
            except queue.Full:
                self._remove_files(job)
                raise self.refusal() from None
            self._jobs[job.id] = job
        log.info("job %s queued (%s, %s)", job.id, job.kind, job.name)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1-based place of a queued job among the waiting ones (0 when not waiting)."""
        with self._lock:
            waiting = [j for j in self._jobs.values() if j.status == "queued"]
        waiting.sort(key=lambda j: j.created)
        return next((i + 1 for i, j in enumerate(waiting) if j.id == job.id), 0)

    def delete(self, job_id: str) -> bool:
        """Cancel a job (when waiting or running) and delete its files. ``False`` when unknown."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel.set()
        if job.status == "queued":
            job.status, job.message, job.finished = "cancelled", "deleted by the client", time.time()
        if job is not self._current:
            self._remove_files(job)
        return True

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    # -- lifetime -----------------------------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        """Delete finished jobs older than ``job_ttl`` and the oldest beyond ``max_jobs``; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            done = sorted((j for j in self._jobs.values() if j.final), key=lambda j: j.finished or j.created)
            old = [j for j in done if now - (j.finished or j.created) > self.settings.job_ttl]
            extra = len(done) - len(old) - self.settings.max_jobs
            if extra > 0:
                old += [j for j in done if j not in old][:extra]
            for j in old:
                self._jobs.pop(j.id, None)
        for j in old:
            self._remove_files(j)
            log.info("job %s expired, its files are deleted", j.id)
        return len(old)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker (cancelling the running job) and delete every job folder."""
        self._stop.set()
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for j in jobs:
            j.cancel.set()
        try:
            self._waiting.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        for j in jobs:
            self._remove_files(j)

    def _remove_files(self, job: Job) -> None:
        shutil.rmtree(job.dir, ignore_errors=True)

    # -- worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._waiting.get(timeout=5.0)
            except queue.Empty:
                self.expire()
                continue
            if job is None:
                break
            if job.cancel.is_set():
                continue
            self._run(job)
            self.expire()

    def _run(self, job: Job) -> None:
        self._current = job
        job.status, job.started, job.phase = "running", time.time(), "decoding and scoring frames"
        status, message = "failed", "interrupted"
        try:
            self.runner(job)
            status, message = "done", ""
        except JobCancelled:
            status, message = "cancelled", "cancelled"
        except MemoryError as exc:  # not a bug and not bad input: the scan asked for more memory than there is
            log.warning("job %s ran out of memory", job.id, exc_info=True)
            detail = one_line(str(exc), MAX_DETAIL)
            status, message = "failed", job.public_message(
                f"out of memory while scoring {job.name}{': ' + detail if detail else ''}; free memory, or upload "
                "a shorter scan or one with smaller frames (or choose a larger 'every')")
        except Exception as exc:  # the message is for the user; the trace for the log
            log.warning("job %s failed: %s", job.id, exc, exc_info=not isinstance(exc, (CRLUIQAError, OSError)))
            status, message = "failed", job.public_message(one_line(str(exc) or type(exc).__name__, MAX_DETAIL))
        finally:
            if job.cancel.is_set() and status == "done":
                status, message = "cancelled", "cancelled"
            # finished is set before the final status: a client that sees "done" sees its time too
            job.finished = time.time()
            job.message = message
            job.phase = "done" if status == "done" else status
            job.status = status
            self._current = None
            with self._lock:
                gone = job.id not in self._jobs
            if gone:  # deleted while running
                self._remove_files(job)


def job_status(job: Job, queue_: JobQueue | None = None) -> dict[str, Any]:
    """The JSON a client polls (``GET /api/scans/{id}``)."""
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "kind": job.kind,
        "status": job.status,
        "phase": job.phase,
        "progress": {"done": job.done, "total": job.total},
        "message": job.message,
        "options": job.options.as_dict(),
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
    }
    if job.status == "queued" and queue_ is not None:
        out["position"] = queue_.position(job)
    if job.result is not None:
        out["result"] = job.result
    return out
