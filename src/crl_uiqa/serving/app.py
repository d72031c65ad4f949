"""The web app: a page to drop a scan on, and the JSON API under it (FastAPI).

:func:`create_app` builds the application; ``crl-uiqa serve`` runs it with
uvicorn. The API (schema at ``/openapi.json``):

=======  =====================================  ===========================================
method   path                                   what
=======  =====================================  ===========================================
GET      ``/api/config``                        limits, models, plane check, defaults
GET      ``/api/models``                        the models menu
POST     ``/api/scans``                         upload a scan (multipart), 202 + job
GET      ``/api/scans/{id}``                    status, progress and (when done) the result
DELETE   ``/api/scans/{id}``                    cancel and delete a job and its files
GET      ``/api/scans/{id}/frames/{n}.png``     a scored frame, cut to the region
GET      ``/api/scans/{id}/picks/{rank}.png``   a picked frame
GET      ``/api/scans/{id}/files/{name}``       downloads: frames.csv, picks.csv, picks.zip,
                                                report.html, selection.json, quality.png,
                                                region.png
=======  =====================================  ===========================================

Errors are JSON ``{"detail": "one line"}`` with 400 (bad upload), 404
(unknown job, frame or file), 408 (the upload's body stalled), 409 (not
finished), 411/413 (size), 415 (content not a scan), 422 (bad option) or 429
(queue full).
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import math
import re
import shutil
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Sequence

try:
    from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.encoders import jsonable_encoder
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.formparsers import MultiPartException
    try:  # python-multipart parses the uploads (module renamed in 0.0.13)
        import python_multipart  # noqa: F401
    except ImportError:
        import multipart  # noqa: F401
    try:  # its limit on one header line of a part (Content-Disposition with the file name)
        from python_multipart.multipart import DEFAULT_MAX_HEADER_SIZE as _PART_HEADER_BYTES
    except ImportError:  # older versions have none
        _PART_HEADER_BYTES = None
except ImportError as _exc:  # pragma: no cover - depends on the install
    from ..errors import MissingDependencyError

    raise MissingDependencyError(
        f"crl-uiqa serve needs FastAPI, uvicorn and python-multipart: pip install 'crl-uiqa[serve]' ({_exc})"
    ) from None

from ..errors import one_line
from ..files import check_output_dir
from ..sniff import SNIFF_BYTES, UnsupportedContent, sniff
from .engine import DOWNLOADS, render_frame, run_selection
from .jobs import JobQueue, QueueFull, job_status
from .models import ModelRegistry, PlaneChecker
from .settings import MAX_DETAIL, ScanOptions, ServeSettings

log = logging.getLogger(__name__)

__all__ = ["create_app"]

_ID = re.compile(r"^[0-9a-f]{32}$")
#: a Host header: a name or an [IPv6 address], then maybe a port
_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::[0-9]{1,5})?")
_API_DESCRIPTION = (
    "Score every frame of an ultrasound scan and pick its best frames, as `crl-uiqa select` does. "
    "Upload with `POST /api/scans` (multipart field `files`: one video or DICOM file, or several still "
    "images), poll `GET /api/scans/{id}` until `status` is `done` or `failed`, then fetch the picks and "
    "downloads it lists. Content is recognised from its bytes, not its name. Jobs and their files are "
    "deleted after the server's time-to-live, on `DELETE`, and when the server stops."
)


def display_name(filename: str | None, fallback: str = "scan") -> str:
    """A file name safe to show (never used as a path): last component, no control characters, <= 120 chars."""
    text = str(filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    if len(text) > 120:
        text = text[:117] + "..."
    return text or fallback


class ServerState:
    """What the routes share: the job queue, the models, the plane check, the limits and a frame cache."""

    def __init__(self, registry: ModelRegistry, planes: PlaneChecker, settings: ServeSettings, device: str):
        self.registry, self.planes, self.settings = registry, planes, settings
        if settings.workdir is not None:  # a file, or a path under one, is an OutputError naming it (was "File exists")
            check_output_dir(settings.workdir)
        self.root = Path(tempfile.mkdtemp(prefix="crl-uiqa-serve-", dir=settings.workdir))
        self.jobs = JobQueue(settings, lambda job: run_selection(job, registry, planes, settings, device=device),
                             self.root)
        self._closed = threading.Event()
        self._frames: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._frames_lock = threading.Lock()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the worker and delete every upload and result (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        atexit.unregister(self.close)
        self.jobs.close()
        shutil.rmtree(self.root, ignore_errors=True)
        log.info("stopped; every upload and result is deleted")

    def find_job(self, job_id: str):
        job = self.jobs.get(job_id) if _ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, "unknown scan id (finished scans are deleted after a while)")
        return job

    def finished_job(self, job_id: str):
        job = self.find_job(job_id)
        if job.status != "done":
            if job.status in ("failed", "cancelled"):
                raise HTTPException(409, f"the scan {job.status}: {job.message}")
            raise HTTPException(409, "the scan is still being scored; poll GET /api/scans/{id} until status is done")
        return job

    def frame_png(self, job, frame: int) -> bytes:
        """A scored frame as PNG, rendered once and kept in a small LRU cache (64 frames)."""
        key = (job.id, frame)
        with self._frames_lock:
            png = self._frames.get(key)
        if png is None:
            try:
                png = render_frame(job, frame)
            except (KeyError, ValueError, OSError) as exc:
                raise HTTPException(404, job.public_message(str(exc).strip("'\""))) from None
            with self._frames_lock:
                self._frames[key] = png
                while len(self._frames) > 64:
                    self._frames.popitem(last=False)
        return png


def _server(request: Request) -> ServerState:
    return request.app.state.server


Server = Annotated[ServerState, Depends(_server)]
router = APIRouter()


def create_app(
    models: ModelRegistry | Sequence[Any],
    *,
    settings: ServeSettings | None = None,
    planes: PlaneChecker | None = None,
    plane_weights: str | None = None,
    runtime: str = "auto",
    device: str = "cpu",
):
    """The FastAPI application serving ``models``.

    Parameters
    ----------
    models : ModelRegistry or sequence
        Run folders, exported files, folders of runs, or
        :class:`crl_uiqa.runtime.Runtime` objects (see :class:`ModelRegistry`).
    settings : ServeSettings, optional
        Limits (defaults: :class:`ServeSettings`).
    planes : PlaneChecker, optional
        The plane check (default: SonoNet-16 with ``plane_weights`` or the
        weights found on this machine; off when there are none).
    runtime, device : str
        Engine and device of models given as paths; ``device`` also runs the plane check.

    The app starts one background worker; its jobs' files live in a private
    temporary folder deleted when the app shuts down (``app.state.close()``
    does the same by hand).
    """
    settings = settings or ServeSettings()
    registry = models if isinstance(models, ModelRegistry) else ModelRegistry.load(models, runtime=runtime,
                                                                                   device=device)
    server = ServerState(registry, planes if planes is not None else PlaneChecker(plane_weights), settings, device)

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            server.close()

    app = FastAPI(
        title="crl-uiqa", summary="Best frames of ultrasound scans", description=_API_DESCRIPTION,
        version=_version(), lifespan=lifespan,
        docs_url=None, redoc_url=None,  # their pages load scripts from a CDN; the schema stays at /openapi.json
    )
    app.state.server = server
    app.state.jobs = server.jobs
    app.state.models = registry
    app.state.planes = server.planes
    app.state.settings = settings
    app.state.workdir = server.root
    app.state.close = server.close
    _protect(app, settings)
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
    app.include_router(router)
    return app


# -- protections -------------------------------------------------------------------------------

def _protect(app, settings: ServeSettings) -> None:
    """Trusted hosts, the upload size from Content-Length, security headers, one-line errors."""
    hosts = [h.lower() for h in settings.allowed_hosts]
    # added first, so it runs inside the middleware below: its 408 then reaches the exception handlers (raised
    # through the outer middleware's own receive, it came out as FastAPI's "There was an error parsing the body")
    app.add_middleware(BodyTimeout, idle=settings.body_timeout, total=settings.body_deadline)

    @app.middleware("http")
    async def limits_and_headers(request: Request, call_next):
        if "*" not in hosts and not _host_allowed(request.headers.get("host"), hosts):
            # a page of another origin resolving to this machine (DNS rebinding) is refused
            return JSONResponse({"detail": one_line(
                f"this server answers only to the Host names {', '.join(hosts)}, not "
                f"{request.headers.get('host', '')!r} (serve another name with --allow-host NAME)", MAX_DETAIL)},
                status_code=400)
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            # a Transfer-Encoding overrides Content-Length (RFC 9112): a chunked body says nothing of its size
            if length is None or "transfer-encoding" in request.headers:
                return JSONResponse({"detail": "uploads must say their size (Content-Length), not be sent in chunks"},
                                    status_code=411)
            try:
                n = int(length)
            except ValueError:
                return JSONResponse({"detail": "invalid Content-Length"}, status_code=400)
            if n > settings.max_upload_bytes:
                return JSONResponse({"detail": f"the upload is {_size(n)}; this server accepts at most "
                                     f"{_size(settings.max_upload_bytes)} (--max-upload-mb)"}, status_code=413)
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # every detail is one short line, whatever it echoes (a 5000-character file name in a URL)
        stalled = _in_chain(exc, lambda e: isinstance(e, _BodyStalled))
        if stalled is not None:  # BodyTimeout's 408, which the multipart parser raised again as a 400
            exc = stalled
        elif exc.status_code == 400 and _PART_HEADER_BYTES is not None and _part_header_limit_exceeded(exc):
            # python-multipart refuses a longer part header as "Invalid multipart data.", naming nothing
            exc = StarletteHTTPException(400, f"files: a file name is too long (the header of a part, file name "
                                         f"included, may be at most {_PART_HEADER_BYTES} bytes); rename the file")
        if isinstance(exc.detail, str):
            exc = StarletteHTTPException(exc.status_code, one_line(exc.detail, MAX_DETAIL), headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            loc = [x for x in err.get("loc", ()) if x not in ("body", "path", "query")]
            where = ".".join(str(x) for x in loc)
            if loc and loc[0] == "files" and len(loc) > 1:  # a part without a file name is a plain form field
                parts.append("files: each part must be a file with a file name (multipart/form-data, like "
                             "curl -F files=@scan.mp4), not a plain form field")
            else:
                parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": one_line("; ".join(dict.fromkeys(parts)) or "invalid request", MAX_DETAIL)},
                            status_code=422)


class BodyTimeout:
    """ASGI middleware that ends a request whose body stalls: more than ``idle`` seconds without a chunk, or more
    than ``total`` seconds for the whole body, counted from its first chunk, is a 408 (uvicorn has no body timeout,
    so a client trickling an upload held its connection forever). Only the body is timed: once it is complete,
    ``receive`` is passed through (a response streaming to a slow client waits on it for the disconnect).

    The 408 is raised from ``receive``, inside the multipart parser, as a :class:`_BodyStalled`: also a
    ``MultiPartException``, so that every Starlette version closes the temporary files of the parts already parsed
    (from 0.36, the oldest FastAPI 0.110 takes, to at least early 2026 it closed them on that exception only and
    left them to garbage collection on any other) and then raises it as a 400 with the same message, which
    :func:`_protect`'s handler turns back into this 408."""

    def __init__(self, app, *, idle: float, total: float):
        self.app, self.idle, self.total = app, idle, total

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = None  # the whole body's, from its first chunk (the app may read the body later than it arrives)
        body_done = False

        async def timed_receive():
            nonlocal body_done, deadline
            if body_done:
                return await receive()
            left = math.inf if deadline is None else deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), min(self.idle, max(left, 0.0)))
            except asyncio.TimeoutError:
                if left <= self.idle:
                    why = f"took more than {self.total:g} s in all"
                else:
                    why = f"paused more than {self.idle:g} s (--body-timeout)"
                raise _BodyStalled(f"the upload {why}; send the request body without stalling") from None
            if deadline is None:
                deadline = loop.time() + self.total
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return await self.app(scope, timed_receive, send)


class _BodyStalled(StarletteHTTPException, MultiPartException):
    """The 408 of :class:`BodyTimeout` (its connection closed). A ``MultiPartException`` too: the multipart parser
    closes its temporary files on that one in every Starlette version; Starlette then raises it again as a 400
    naming ``message``, and the error handler finds this exception behind that 400 and answers 408."""

    def __init__(self, detail: str):
        StarletteHTTPException.__init__(self, 408, detail, headers={"Connection": "close"})
        self.message = detail


def _in_chain(exc: BaseException | None, test) -> BaseException | None:
    """The first of ``exc`` and the exceptions it was raised from or during (8 at most) for which ``test`` holds."""
    seen = 0
    while exc is not None and seen < 8:
        if test(exc):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _part_header_limit_exceeded(exc: BaseException) -> bool:
    """Whether ``exc`` comes from python-multipart's limit on a part's header line (a very long file name)."""
    return _in_chain(exc, lambda e: type(e).__name__ == "MultipartParseError" and "header size" in str(e)) is not None


def _host_allowed(header: str | None, hosts: Sequence[str]) -> bool:
    """Whether a Host header names one of ``hosts`` (``*.example.com`` matches its sub-domains); a header that is
    not a plain ``name[:port]`` or ``[ipv6][:port]`` (``evil.example@127.0.0.1``) names none."""
    m = _HOST.fullmatch(header or "")
    if m is None:
        return False
    host = (m.group(1) or m.group(2)).lower()
    return any(host == h.strip("[]") or (h.startswith("*.") and host.endswith(h[1:])) for h in hosts)


# -- page ------------------------------------------------------------------------------------------

_STATIC = resources.files("crl_uiqa.serving") / "static"


@router.get("/", include_in_schema=False)
def index():
    return FileResponse(str(_STATIC / "index.html"), media_type="text/html")


# -- API -------------------------------------------------------------------------------------------

@router.get("/api/models", tags=["models"], summary="The models this server offers (the first is the default)")
def list_models(server: Server) -> list[dict]:
    return server.registry.info()


@router.get("/api/config", tags=["models"], summary="Limits, models, plane check and default options")
def config(server: Server) -> dict:
    planes = server.planes
    return {
        "version": _version(),
        "limits": server.settings.public(),
        "models": server.registry.info(),
        "planes": {"available": planes.available, "names": list(planes.class_names) if planes.available else [],
                   "reason": planes.reason},
        "defaults": ScanOptions().as_dict(),
        "max_top": ScanOptions.MAX_TOP,
    }


@router.post("/api/scans", status_code=202, tags=["scans"],
             summary="Upload a scan to score: one video (MP4/MOV/AVI) or DICOM file, or several still images",
             responses={400: {"description": "bad upload"}, 413: {"description": "too large"},
                        415: {"description": "content is not a scan"}, 422: {"description": "bad option"},
                        429: {"description": "queue full"}})
async def create_scan(
    server: Server,
    files: Annotated[list[UploadFile], File(description="the scan: one video or DICOM file, or still images "
                                            "(in this order)")],
    model: Annotated[str, Form(description="model name from /api/models (empty: the default)")] = "",
    top_k: Annotated[int, Form(description="frames to pick")] = ScanOptions.top_k,
    min_gap: Annotated[float, Form(description="smallest time between two picks, seconds")] = ScanOptions.min_gap,
    smooth: Annotated[float, Form(description="Gaussian smoothing of the scores over +-S seconds")] = 0.0,
    plane: Annotated[str, Form(description="required standard plane (SonoNet class), empty: none")] = "",
    plane_threshold: Annotated[float, Form(description="smallest probability of the plane")] = 0.5,
    every: Annotated[int, Form(description="score every N-th frame")] = 1,
    fps: Annotated[float | None, Form(description="then at most F frames per second")] = None,
):
    jobs, settings = server.jobs, server.settings
    if not jobs.has_room():
        raise HTTPException(429, str(jobs.refusal()), headers={"Retry-After": "30"})
    try:
        options = ScanOptions(model=model.strip(), top_k=top_k, min_gap=min_gap, smooth=smooth,
                              plane=plane.strip(), plane_threshold=plane_threshold, every=every, fps=fps)
        server.registry.get(options.model)
        if options.plane:
            server.planes.check(options.plane)
    except (ValueError, KeyError) as exc:
        raise HTTPException(422, str(exc).strip("'\"")) from None
    uploads, kinds = await _sniff_uploads(files, settings.max_files)
    name = display_name(uploads[0].filename, f"scan{kinds[0].suffix}")
    if len(uploads) > 1:
        name = f"{len(uploads)} images ({name}, ...)"
    job = jobs.new_job(name, kinds[0].kind, options)
    try:
        await run_in_threadpool(_store, job, uploads, kinds, settings.max_upload_bytes)
        jobs.submit(job)
    except QueueFull as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "30"}) from None
    except BaseException:
        shutil.rmtree(job.dir, ignore_errors=True)
        raise
    return JSONResponse(jsonable_encoder(job_status(job, jobs)), status_code=202,
                        headers={"Location": f"/api/scans/{job.id}"})


async def _sniff_uploads(files, max_files: int):
    """The uploads and their kinds, recognised from their first bytes; one video/DICOM or several images."""
    uploads = [f for f in files if f is not None]
    if not uploads:
        raise HTTPException(400, "no file in the upload (multipart field 'files')")
    if len(uploads) > max_files:
        raise HTTPException(400, f"{len(uploads)} files; this server accepts at most {max_files}")
    kinds = []
    for f in uploads:
        head = await f.read(SNIFF_BYTES)
        await f.seek(0)
        try:
            kinds.append(sniff(head))
        except UnsupportedContent as exc:
            raise HTTPException(415, f"{display_name(f.filename)}: {exc}") from None
    if len(uploads) > 1 and any(k.kind != "image" for k in kinds):
        raise HTTPException(400, "several files must all be still images (PNG/JPEG/TIFF/BMP); upload a video "
                            "or DICOM file on its own")
    return uploads, kinds


@router.get("/api/scans/{job_id}", tags=["scans"], summary="Status, progress and, once done, the result",
            responses={404: {"description": "unknown id"}})
def get_scan(job_id: str, server: Server) -> dict:
    return jsonable_encoder(job_status(server.find_job(job_id), server.jobs))


@router.delete("/api/scans/{job_id}", tags=["scans"], summary="Cancel a scan and delete its files",
               status_code=204, responses={404: {"description": "unknown id"}})
def delete_scan(job_id: str, server: Server):
    server.find_job(job_id)
    server.jobs.delete(job_id)
    return Response(status_code=204)


@router.get("/api/scans/{job_id}/frames/{frame}.png", tags=["scans"], response_class=Response,
            summary="A scored frame (source index), cut to the ultrasound region as the picks are",
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown id or frame"}})
def get_frame(job_id: str, frame: int, server: Server):
    job = server.finished_job(job_id)
    if frame not in job.private.get("frames", ()):
        raise HTTPException(404, f"frame {frame} was not scored in this scan")
    return Response(server.frame_png(job, frame), media_type="image/png")


@router.get("/api/scans/{job_id}/picks/{rank}.png", tags=["scans"], response_class=FileResponse,
            summary="A picked frame (rank 1 = best), full resolution, cut to the region",
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown id or rank"}})
def get_pick(job_id: str, rank: int, server: Server):
    job = server.finished_job(job_id)
    path = job.private.get("pick_files", {}).get(rank)
    if path is None:
        raise HTTPException(404, f"no pick of rank {rank} in this scan")
    return FileResponse(path, media_type="image/png")


@router.get("/api/scans/{job_id}/files/{name}", tags=["scans"], response_class=FileResponse,
            summary="A download the job produced: " + ", ".join(DOWNLOADS),
            responses={404: {"description": "unknown id or file"}})
def get_file(job_id: str, name: str, server: Server):
    job = server.finished_job(job_id)
    path = job.files.get(name)
    if path is None:
        raise HTTPException(404, f"no file {name!r}; this scan offers {', '.join(job.files)}")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(job.name).stem)[:60] or "scan"
    return FileResponse(path, media_type=DOWNLOADS[name][1], filename=f"{stem}_{name}",
                        content_disposition_type="attachment")


def _store(job, uploads, kinds, limit: int) -> None:
    """Copy the uploads into the job's folder under server-made names (the only names ever used as paths)."""
    total = 0
    if job.kind == "image":
        targets = [job.input / f"{i:05d}{k.suffix}" for i, k in enumerate(kinds)]
    else:
        targets = [job.input / f"scan{kinds[0].suffix}"]
        job.input = targets[0]
    for upload, target in zip(uploads, targets):
        if job.kind == "image":
            job.aliases[str(target)] = display_name(upload.filename, target.name)
        upload.file.seek(0)
        with open(target, "xb") as out:
            while True:
                chunk = upload.file.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                out.write(chunk)
    if job.kind == "image":
        _same_size(job, targets)


def _same_size(job, targets: Sequence[Path]) -> None:
    """Refuse still images of different sizes (400), from their headers: one region is cut from all of them,
    and the page has no option to score whole frames of any size (a job failed on them, naming `--region none`)."""
    from PIL import Image

    first = None
    for target in targets:
        try:
            with Image.open(target) as im:
                size = im.size
        except Exception:  # noqa: BLE001 - an image PIL cannot open is reported by the worker, with its reason
            continue
        if first is None:
            first = (target, size)
        elif size != first[1]:
            raise HTTPException(
                400, f"{job.aliases[str(target)]} is {size[0]}x{size[1]} pixels but {job.aliases[str(first[0])]} "
                f"is {first[1][0]}x{first[1][1]}: the images of one sweep must all have the same size")


def _too_large(limit: int):
    return HTTPException(413, f"the upload is larger than {_size(limit)} (--max-upload-mb)")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _version() -> str:
    from .. import __version__

    return __version__
