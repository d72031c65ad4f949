"""``crl-uiqa live``: score a camera or a video in real time, dropping frames rather than falling behind."""
from __future__ import annotations

from ._common import add_engine, add_frame_batch, add_scan_region


def register(sub) -> None:
    p = sub.add_parser(
        "live",
        help="score a live stream (camera index or video played in real time) and track the best frame",
        description=(
            "A reader thread delivers frames at the stream's own rate (a video file is paced by its timestamps) "
            "into a one-slot buffer that keeps only the newest frame; the scorer always takes the newest one, "
            "so frames it cannot keep up with are dropped, never queued. One status line shows the current and "
            "running quality and the best frame so far; the end prints frames received, scored and dropped. "
            "With --no-realtime (files) nothing is dropped: frames are decoded ahead and scored --batch-size at a "
            "time, as select does. Ctrl-C ends the stream as its end does: --plot, --best and --csv hold the frames scored until then "
            "(exit code 130)."
        ),
    )
    p.add_argument("--model", required=True,
                   help="run directory of `train`/`fit` (or its model.safetensors), or a file from `export`")
    p.add_argument("--input", required=True, metavar="VIDEO_OR_DEVICE",
                   help="video/DICOM file or image sequence, or a camera index (0, 1...: OpenCV if installed, "
                   "else PyAV v4l2/avfoundation)")
    p.add_argument("--no-realtime", action="store_true",
                   help="files only: do not pace by timestamps and score every frame (nothing dropped), "
                   "--batch-size frames per forward pass as select does")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    add_scan_region(p, "the first --region-frames frames")
    p.add_argument("--region-frames", type=int, default=15, help="frames used to detect the region (default 15, at most 300)")
    p.add_argument("--plot", default=None, metavar="PNG", help="save the quality-over-time plot here at the end")
    p.add_argument("--best", default=None, metavar="PNG", help="save the best frame here at the end")
    p.add_argument("--csv", default=None, metavar="CSV", help="save frame,time,quality of the scored frames here")
    g = p.add_argument_group("runtime")
    add_engine(g)
    add_frame_batch(g, "; with --no-realtime (real time scores the newest frame alone)")
    g.add_argument("--quiet", action="store_true", help="no status line")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..reporting.selection import live_figure
    from ..video.live import is_camera, run_live

    tty = sys.stderr.isatty()
    state = {"width": 0}

    def show(st) -> None:
        line = st.line()
        if tty:
            pad = max(0, state["width"] - len(line))
            sys.stderr.write("\r" + line + " " * pad)
            sys.stderr.flush()
            state["width"] = len(line)
        else:
            print(line, file=sys.stderr)

    source = int(args.input) if is_camera(args.input) else args.input
    res = run_live(
        args.model, source, runtime=args.runtime, device=args.device, threads=args.threads,
        realtime=not args.no_realtime, batch_size=args.batch_size, crop=args.crop, region=args.region,
        region_frames=args.region_frames, frame_rate=args.frame_rate, duration=args.duration,
        on_status=None if args.quiet else show, status_interval=0.25 if tty else 2.0,
    )
    if tty and not args.quiet:
        sys.stderr.write("\n")
    print(res.summary())
    unwritten = []  # asked for, but there is nothing to put in them
    if args.plot and not res.scored:
        unwritten.append(f"--plot {args.plot}")
    if args.best and res.best_image is None:
        unwritten.append(f"--best {args.best}")
    if args.plot and res.scored:
        from ..files import write_bytes
        from ..reporting.figures import fig_to_png

        write_bytes(args.plot, fig_to_png(live_figure(res)))
        print(f"plot: {args.plot}")
    if args.best and res.best_image is not None:
        from ..io import write_gray_png

        write_gray_png(args.best, res.best_image)
        print(f"best frame: {args.best}")
    if args.csv:
        from ..files import write_csv

        write_csv(args.csv, [{"frame": int(f), "time": float(t), "quality": float(q)}
                             for f, t, q in zip(res.frames, res.times, res.scores)], ["frame", "time", "quality"])
        print(f"scores: {args.csv}")
    if unwritten:  # said, not silent: a file left there by an earlier session would pass for this one's
        print(f"crl-uiqa live: error: no frame was scored{' with a finite score' if res.scored else ''}, so "
              f"{' and '.join(unwritten)} {'was' if len(unwritten) == 1 else 'were'} not written", file=sys.stderr)
    if res.error is not None:
        print(f"crl-uiqa live: error: {res.error}", file=sys.stderr)
        return 1
    if res.interrupted:  # the files above hold what was scored before Ctrl-C
        from ..errors import EXIT_INTERRUPTED

        print("crl-uiqa live: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if unwritten else 0
