"""``crl-uiqa serve``: a local web page to drop a scan on and get its best frames (plus a JSON API)."""
from __future__ import annotations

import argparse

from .. import validate
from ..errors import ConfigError, optional_import
from ._common import add_device, add_frame_batch

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page: drop a scan, get its quality curve and best frames (JSON API included)",
        description=(
            "Start a web app on this machine: drop a video (MP4/MOV/AVI), a DICOM cine loop or several still "
            "images on the page and get the quality curve, the best frames (as `select`), the per-frame CSV, "
            "the picks and the HTML report. Scoring runs in one background worker; further uploads wait in a "
            "bounded queue. Binds to 127.0.0.1 unless --host says otherwise. The JSON API is described at "
            "/openapi.json. Uploads and results are deleted after --keep-minutes and when the server stops."
        ),
    )
    p.add_argument("--model", required=True, action="append", metavar="RUN",
                   help="run folder of `fit`/`train`, exported model file, or a folder of runs; repeat for a "
                   "models menu (the first is the default)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the page "
                   "to the network: there is no login)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=1024, metavar="MB",
                   help="largest upload, MiB (default 1024)")
    g.add_argument("--max-frames", type=int, default=20_000, metavar="N",
                   help="most frames per scan (default 20000: 11 minutes at 30 fps)")
    g.add_argument("--max-files", type=int, default=1000, metavar="N",
                   help="most still images per upload (default and largest: 1000)")
    g.add_argument("--queue", type=int, default=4, metavar="N",
                   help="uploads that may wait behind the one being scored; more are refused (default 4)")
    g.add_argument("--body-timeout", type=float, default=60, metavar="S",
                   help="end an upload whose body pauses longer than S seconds between two chunks with 408 "
                   "(default 60; a whole body may take at most an hour from its first chunk)")
    g.add_argument("--keep-minutes", type=float, default=60, metavar="MIN",
                   help="delete an upload and its results this long after it finished (default 60)")
    g.add_argument("--workdir", default=None, metavar="DIR",
                   help="where uploads and results are kept meanwhile (default: a private temporary folder)")
    g.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="extra Host header to accept (the name clients use to reach a non-local --host)")
    g = p.add_argument_group("scoring")
    g.add_argument("--runtime", choices=["auto", "torch", "torchscript", "onnx"], default="auto",
                   help="inference engine (default auto: from the --model file type, torch for run folders)")
    add_device(g, "used by the torch engines")
    g.add_argument("--threads", type=int, default=None, help="torch/ONNX Runtime threads (default: all cores; at most 1024)")
    add_frame_batch(g)
    g.add_argument("--weights", default=None, metavar="PATH",
                   help="SonoNet-16 weights for the plane check (default: $CRL_UIQA_WEIGHTS_DIR, the copy packaged "
                   "with crl-uiqa, the cache; never downloaded; without weights the plane check is off)")
    g.add_argument("--plane-weights", dest="weights", default=None, help=argparse.SUPPRESS)  # select's old spelling
    p.set_defaults(func=run)


def settings_from_args(args):
    """:class:`ServeSettings` from the command line (:class:`ConfigError` on bad values)."""
    from pathlib import Path

    from ..runtime import check_threads
    from ..serving.settings import LOCAL_HOSTS, ServeSettings

    validate.integer("--port", args.port, minimum=1, maximum=65535)
    validate.real("--max-upload-mb", args.max_upload_mb, minimum=0, strict_min=True)
    validate.real("--keep-minutes", args.keep_minutes, minimum=0, strict_min=True)
    check_threads(args.threads, minimum=1)  # 0 is no thread count for torch.set_num_threads
    if args.workdir:  # a file given as --workdir failed with "DIR: File exists" after the models were loaded
        from ..files import check_output_dir

        check_output_dir(args.workdir)
    hosts = list(LOCAL_HOSTS) + list(args.allow_host)
    if args.host in ("0.0.0.0", "::", ""):
        hosts = ["*"]
    elif args.host not in LOCAL_HOSTS:
        hosts.append(args.host)
    return ServeSettings(
        max_upload_bytes=int(args.max_upload_mb * 2**20), max_frames=args.max_frames, max_files=args.max_files,
        queue_size=args.queue, job_ttl=float(args.keep_minutes) * 60, batch_size=args.batch_size,
        workdir=Path(args.workdir) if args.workdir else None, allowed_hosts=tuple(hosts),
        body_timeout=args.body_timeout,
    )


def run(args) -> int:
    import sys

    settings = settings_from_args(args)  # bad settings fail before any model is loaded
    uvicorn = optional_import("uvicorn", "serve", purpose="crl-uiqa serve")
    optional_import("fastapi", "serve", purpose="crl-uiqa serve")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from ..serving.app import create_app
    from ..serving.models import ModelRegistry

    models = ModelRegistry.load(args.model, runtime=args.runtime, device=args.device, threads=args.threads)
    check_can_listen(args.host, args.port)
    app = create_app(models, settings=settings, plane_weights=args.weights, device=args.device)
    if args.host not in LOOPBACK:
        print(f"crl-uiqa serve: warning: listening on {args.host}: anyone who can reach this machine can upload "
              "scans and read results (there is no login)", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"crl-uiqa serve: {len(models)} model(s) ({', '.join(m.name for m in models)}); plane check "
          f"{'on' if app.state.planes.available else 'off'}; open http://{shown}:{args.port}/  (Ctrl-C stops and "
          "deletes every upload)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    except SystemExit as exc:  # uvicorn exits with 3 when it cannot start (the error is logged above)
        if exc.code not in (0, None):
            raise ConfigError(f"the web server could not start on {shown}:{args.port} (see the error above)") from None
    return 0


def check_can_listen(host: str, port: int) -> None:
    """Refuse, before any model is loaded, a --host that does not resolve or a --port taken by another server."""
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closing server is no obstacle
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server? choose "
                              "another --port)") from None
