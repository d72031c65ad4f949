"""Limits and defaults of the web app (one place, validated before anything starts)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import validate
from ..errors import ConfigError

__all__ = ["ServeSettings", "ScanOptions", "LOCAL_HOSTS"]

#: Host names a browser may use to reach a server bound to the loopback interface.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

MiB = 2**20
#: Most files one multipart request may carry (Starlette's parser limit).
MAX_FILES = 1000
#: Longest error detail or job message the server sends (``errors.one_line`` cuts a longer one in its middle).
MAX_DETAIL = 500


@dataclass(frozen=True)
class ServeSettings:
    """What ``crl-uiqa serve`` accepts and keeps.

    Attributes
    ----------
    max_upload_bytes : int
        Largest request body (all files of one upload together); larger
        uploads are refused with 413 before they are read.
    max_frames : int
        Most frames one scan may have (source frames of a video or DICOM, or
        images of a still-image upload); longer scans fail with a message
        instead of occupying the worker.
    max_files : int
        Most files in one upload (still images), at most :data:`MAX_FILES`.
    queue_size : int
        Uploads waiting behind the one being scored; more are refused (429).
    job_ttl : float
        Seconds a finished job (its upload, results and downloads) is kept;
        then every file of it is deleted. Everything is deleted on shutdown.
    max_jobs : int
        Most finished jobs kept at once (the oldest go first).
    batch_size : int
        Frames per forward pass of the scorer.
    workdir : Path or None
        Where uploads and results live (a private temporary folder by
        default, removed on shutdown).
    allowed_hosts : tuple of str
        Host headers accepted (protects a local server from DNS rebinding);
        ``("*",)`` accepts any.
    body_timeout : float
        Seconds a request body may pause between two chunks; a longer pause
        ends the request with 408 (uvicorn has no such timeout: a client that
        trickles its upload would hold its connection forever).
    body_deadline : float
        Seconds a whole request body may take (408 after that, however it
        trickles in).
    """

    max_upload_bytes: int = 1024 * MiB
    max_frames: int = 20_000
    max_files: int = MAX_FILES
    queue_size: int = 4
    job_ttl: float = 3600.0
    max_jobs: int = 50
    batch_size: int = 32
    workdir: Path | None = None
    allowed_hosts: tuple[str, ...] = field(default=LOCAL_HOSTS)
    body_timeout: float = 60.0
    body_deadline: float = 3600.0

    def __post_init__(self) -> None:
        from ..video.framing import batch_size_setting

        for name, flag in (("max_upload_bytes", "--max-upload-mb"), ("max_frames", "--max-frames"),
                           ("queue_size", "--queue"), ("max_jobs", None)):
            validate.integer(f"{name} ({flag})" if flag else name, getattr(self, name), minimum=1)
        batch_size_setting(self.batch_size)  # select's frames per pass, refused here before the server starts
        # the multipart parser (Starlette) refuses more than 1000 files per request whatever we allow
        validate.integer("max_files (--max-files)", self.max_files, minimum=1, maximum=MAX_FILES)
        validate.real("job_ttl (--keep-minutes)", self.job_ttl, minimum=0, strict_min=True)
        validate.real("body_timeout (--body-timeout)", self.body_timeout, minimum=0, strict_min=True)
        validate.real("body_deadline", self.body_deadline, minimum=0, strict_min=True)
        if not self.allowed_hosts:
            raise ConfigError("allowed_hosts must name at least one host (or '*')")

    def public(self) -> dict:
        """The limits a client needs to know (no paths)."""
        d = asdict(self)
        d.pop("workdir")
        d["allowed_hosts"] = list(self.allowed_hosts)
        return d


@dataclass(frozen=True)
class ScanOptions:
    """Per-upload choices of the page (validated; the engine's own checks still apply).

    Attributes mirror ``crl-uiqa select``: ``top_k``, ``min_gap`` and
    ``smooth`` (seconds), ``plane`` and ``plane_threshold`` (plane check),
    ``every`` and ``fps`` (frame sub-sampling), ``model`` (a name from the
    models menu; empty = the default model).
    """

    model: str = ""
    top_k: int = 5
    min_gap: float = 1.0
    smooth: float = 0.0
    plane: str = ""
    plane_threshold: float = 0.5
    every: int = 1
    fps: float | None = None

    #: Most picks a page may ask for.
    MAX_TOP = 50

    def __post_init__(self) -> None:
        validate.integer("top_k", self.top_k, minimum=1, maximum=self.MAX_TOP)
        validate.real("min_gap", self.min_gap, minimum=0, maximum=3600)
        validate.real("smooth", self.smooth, minimum=0, maximum=3600)
        validate.real("plane_threshold", self.plane_threshold, minimum=0, maximum=1)
        validate.integer("every", self.every, minimum=1, maximum=10_000)
        if self.fps is not None:
            validate.real("fps", self.fps, minimum=0, strict_min=True)
        if len(self.model) > 200 or len(self.plane) > 64:
            raise ConfigError("model or plane name too long")

    def as_dict(self) -> dict:
        return asdict(self)
