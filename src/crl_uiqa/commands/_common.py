"""Argument groups shared by several commands (one definition, one help text)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..validate import MAX_BATCH, MAX_EPOCHS, MAX_MIN_STEPS, MAX_WORKERS


def add_crop(parser: argparse.ArgumentParser, flag: str = "--crop", what: str = "images") -> None:
    parser.add_argument(
        flag, nargs=4, type=int, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"), default=None,
        help=f"crop box applied to the {what} before anything else (e.g. to remove a vendor overlay: "
        "the SonoNet example captures use 115 81 620 794)",
    )


def add_backbone(parser: argparse.ArgumentParser, layer: bool = True) -> None:
    g = parser.add_argument_group("embedding network P(.)")
    g.add_argument("--backbone", default="sononet16",
                   help="backbone name (default sononet16) or python:package.module:function")
    g.add_argument("--weights", default=None, metavar="PATH",
                   help="weight file or folder; default: $CRL_UIQA_WEIGHTS_DIR, then the weights shipped in the "
                   "package, then the user cache, then a checksummed download")
    if layer:
        g.add_argument("--layer", default="block4",
                       help="embedding layer: block1..block5 (pooled conv blocks), adaptation (pooled pre-logit), "
                       "logits, probs (default block4: best on the dev protocol, see BENCHMARKS.md)")


# one --device policy for every command: CUDA when there is one, else the CPU
DEVICE_DEFAULT = "auto"
DEVICE_HELP = "auto (CUDA if available, else CPU; the default), cpu or cuda[:N]"


def add_device(group, what: str = "") -> None:
    group.add_argument("--device", default=DEVICE_DEFAULT, help=DEVICE_HELP + (f"; {what}" if what else ""))


def add_runtime(parser: argparse.ArgumentParser, batch_size: int = 32) -> None:
    g = parser.add_argument_group("runtime")
    add_device(g)
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"images per forward pass (default {batch_size}, at most {MAX_BATCH})")
    g.add_argument("--workers", type=int, default=None, help=f"image decoding processes (default: cores - 1, max 4; at most {MAX_WORKERS})")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image instead of skipping and listing it")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_scan_region(group, detected_on: str) -> None:
    """Frame timing and region of scans read with :func:`crl_uiqa.scan.open_scan` (``live``, ``select``).

    ``group`` is a parser or an argument group; ``detected_on`` says which
    frames ``--region auto`` detects the region on.
    """
    group.add_argument("--frame-rate", type=float, default=None, metavar="F",
                       help="frame rate of image sequences and of DICOM files without timing (default 30)")
    reg = group.add_mutually_exclusive_group()
    reg.add_argument("--crop", nargs=4, type=int, default=None, metavar=("T", "L", "H", "W"),
                     help="manual ultrasound region (top, left, height, width) in source pixels")
    reg.add_argument("--region", choices=["auto", "dicom", "none"], default="auto",
                     help=f"auto: DICOM region, else detected on {detected_on}; dicom: DICOM region only; "
                     "none: whole frames (default auto)")


def add_frame_batch(group, note: str = "") -> None:
    """``--batch-size`` of the video commands: frames per forward pass (checked by
    :func:`crl_uiqa.video.framing.batch_size_setting` before any work)."""
    from ..video.framing import FRAME_BATCH

    group.add_argument("--batch-size", type=int, default=FRAME_BATCH,
                       help=f"frames per forward pass (default {FRAME_BATCH}, at most {MAX_BATCH}){note}")


def add_engine(group, device_use: str = "the torch engines") -> None:
    """Inference engine of a trained or exported model (:func:`crl_uiqa.runtime.load_runtime`)."""
    group.add_argument("--runtime", choices=["auto", "torch", "torchscript", "onnx"], default="auto",
                       help="inference engine (default auto: from the --model file type, torch for run directories)")
    add_device(group, f"used by {device_use}")
    group.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: CPU cores; at most 1024)")


def crop_tuple(value):
    """``--crop T L H W`` as a tuple (None when absent), refused before any work when it cannot be a box."""
    from ..validate import crop

    return crop("--crop", value) if value else None


def read_images(paths: list[str], crop, strict: bool, failures: list, desc: str, undefined=None):
    """The readable images of ``paths`` at native size, with their paths, for the commands that hold them all
    (``baseline``, ``export --check-images``). Unreadable ones, and those ``undefined(image)`` gives a reason for
    (``BaselineSpec.undefined``), are listed in ``failures`` with their reason; ``strict``: the first one stops the
    run."""
    from ..io import ImageReadError, ReadFailure, read_gray
    from ..progress import progress

    images, kept = [], []
    for p in progress(paths, desc=desc, unit="img"):
        try:
            image = read_gray(p, crop)
            why = undefined(image) if undefined is not None else None
            if why:
                raise ImageReadError(p, why)
        except ImageReadError as exc:
            if strict:
                raise
            failures.append(ReadFailure(p, exc.reason))
            continue
        images.append(image)
        kept.append(p)
    return images, kept


def skipped_list_path(out_path: str | os.PathLike) -> Path:
    """Where a command whose --out is a file lists the images it skipped: ``OUT.skipped.csv``."""
    return Path(str(out_path) + ".skipped.csv")


def report_failures(failures, out_path=None, *, side=None) -> None:
    """Print skipped files, and write them to ``side`` (default ``OUT.skipped.csv``) when there are any.

    A clean run removes the list an earlier run left there.
    """
    import sys

    if side is None and out_path is not None:
        side = skipped_list_path(out_path)
    if not failures:
        if side is not None:
            Path(side).unlink(missing_ok=True)
        return
    print(f"skipped {len(failures)} unreadable image(s):", file=sys.stderr)
    for f in failures[:20]:
        print(f"  {f.path}: {f.reason}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    if side is not None:
        from ..files import write_csv

        folder = os.path.abspath(Path(side).parent)
        write_csv(side, [{"path": _listed_path(f.path, folder), "reason": f.reason} for f in failures],
                  ["path", "reason"])
        print(f"the list is in {side}", file=sys.stderr)


def _listed_path(path, folder: str) -> str:
    """``path`` as a list in ``folder`` names it: a relative path is read from the list's own folder (as every
    path list given to ``--images`` is), so a path given relative to the working folder is rewritten relative
    to ``folder``; ``--images OUT.skipped.csv`` then finds the same files from anywhere."""
    path = str(path)
    if os.path.isabs(path):
        return path
    try:
        return os.path.relpath(os.path.abspath(path), folder)
    except ValueError:  # another drive (Windows): no relative path between them
        return os.path.abspath(path)


# --amp choice -> the ``amp`` setting of TrainConfig and score_paths (crl_uiqa.devices.autocast_enabled)
AMP_SETTINGS = {"cuda": True, "bf16": "bf16", "off": False}


def add_training(parser: argparse.ArgumentParser, calibrate_margins: bool = False) -> None:
    """Training options; defaults are the paper's (Sec. 3.2) unless BENCHMARKS.md says otherwise.

    ``calibrate_margins=True`` adds ``--calibrate-margins`` (for commands that
    have the reference planes at hand, i.e. ``fit``).
    """
    g = parser.add_argument_group("co-learning (paper defaults)")
    g.add_argument("--epochs", type=int, default=None, help=f"training epochs (default and paper: see the README; at most {MAX_EPOCHS})")
    g.add_argument("--batch-size", type=int, default=16, help=f"source images per step; each brings 3 views (paper: 16; at most {MAX_BATCH})")
    g.add_argument("--lr", type=float, default=None, help="SGD learning rate (default and paper: see the README)")
    g.add_argument("--momentum", type=float, default=0.937, help="SGD momentum (YOLOv5 default, as the paper says)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (YOLOv5 default)")
    g.add_argument("--lr-schedule", choices=["linear", "constant"], default="linear",
                   help="linear decay to 1%% of --lr over the run (YOLOv5 default) or constant")
    g.add_argument("--alpha", type=float, default=0.05, help="weight of L_d (paper 0.05)")
    g.add_argument("--theta", type=float, default=0.1, help="weight of L_c (paper 0.1)")
    g.add_argument("--beta", type=float, default=0.1, help="weight of L_r (paper 0.1)")
    g.add_argument("--no-consistency", action="store_true", help="drop the weak view and L_c (ablation)")
    g.add_argument("--no-relativity", action="store_true", help="drop the strong view and L_r (ablation)")
    g.add_argument("--strong-views", default=None,
                   help="strong-view corruptions: ultrasound (default: all 11 corruption families, better on "
                   "held-out artifacts, see BENCHMARKS.md), paper (gaussian + motion blur, as the paper) or a "
                   "comma list of families (see crl_uiqa.corruptions)")
    g.add_argument("--margin-scale", type=float, default=0.1,
                   help="epsilon_i = margin-scale x degree_i in the relativity loss (default 0.1)")
    if calibrate_margins:
        g.add_argument("--calibrate-margins", action="store_true",
                       help="weight each strong-view family's margin by how much it raises the pseudo-label distance "
                       "of the reference planes in P(.)'s feature space (crl_uiqa.calibration; weights average 1, so "
                       "--margin-scale keeps its meaning); the weights are printed and stored in model.json")
    g.add_argument("--max-rotation", type=float, default=15.0, help="weak-view rotation range in degrees (default 15)")
    g.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of images held out for validation (and for choosing the epoch kept)")
    g.add_argument("--head", choices=["anchored", "paper"], default=None,
                   help="anchored (default): the model starts at the pseudo-label score and learns a correction; "
                   "paper: the paper's projection + pooling + FC head trained from scratch")
    g.add_argument("--reference-stats", choices=["norm", "each", "off"], default=None,
                   help="anchored head: the correction also sees how far the image's gray level, contrast and "
                   "gradients at three scales lie from the reference planes' (crl_uiqa.reference_stats): norm "
                   "(default: one feature, their distance: deviating in any way is worse), each (one feature per "
                   "statistic and the distance), off")
    g.add_argument("--no-black-level", action="store_true",
                   help="anchored head: leave the black level (5th gray-level percentile) out of the reference "
                   "statistics, i.e. the six of models trained before it was added")
    g.add_argument("--select", choices=["best", "last"], default=None,
                   help="epoch kept: best by the label-free validation criterion (default) or last (paper)")
    g.add_argument("--min-steps", type=int, default=None,
                   help=f"raise --epochs until the run makes at least this many SGD steps (small image pools; at most "
                   f"{MAX_MIN_STEPS})")
    g.add_argument("--min-val-pairs", type=int, default=None,
                   help="corrupted views of each validation image until the epoch-selection criterion counts at "
                   "least this many clean-over-corrupted pairs (default 300: every pool gets several views per "
                   "image; 0 = one view each)")
    g.add_argument("--min-train-images", type=int, default=None, metavar="N",
                   help="anchored head: with fewer training images than N the correction learns only the deviation "
                   "from the references' statistics (two parameters; without --reference-stats the model is its "
                   "teacher, untrained, and the run says so) (default 100; 0 = always the full correction)")
    g.add_argument("--paper", action="store_true",
                   help="the paper's co-learning settings for every option not given: head paper trained end to end "
                   "from block1, lr 1e-3, 35 epochs, blur strong views, last epoch kept")
    g.add_argument("--strict", action="store_true",
                   help="exit with status 3 when training did not learn (the warnings name the likely cause)")
    g.add_argument("--seed", type=int, default=0, help="random seed (runs repeat exactly on the CPU)")
    g.add_argument("--activation", choices=["linear", "sigmoid"], default="linear", help="output activation")
    g.add_argument("--train-from", default=None,
                   help="first trainable backbone block (block1 = whole network, paper; head = frozen backbone, "
                   "the default with the anchored head)")
    g.add_argument("--image-size", nargs=2, type=int, default=[224, 288], metavar=("H", "W"),
                   help="training/scoring resolution (default 224 288; 112 144 is 4x faster on a CPU)")
    g.add_argument("--train-crop", nargs="+", default=None, metavar="H W | F",
                   help="train on random H x W windows of the --image-size frames, or windows of F times each side "
                   "(same pixel scale, about the window's share of the compute; scoring stays on whole frames; "
                   "1 = whole frames, the paper). With the anchored head each crop's L_d target is the teacher's "
                   "score of that crop. Default 0.5: 112x144 windows of 224x288 frames (BENCHMARKS.md)")
    g.add_argument("--amp", choices=list(AMP_SETTINGS), default=None,
                   help="bfloat16 autocast: cuda (default: on CUDA only), bf16 (on the CPU too; see BENCHMARKS.md "
                   "for what it gains and costs), off")
    # one or the other: with both, --resume won and --overwrite was silently ignored
    run = g.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from OUT/last.safetensors (same inputs and settings)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run OUT already holds (without it, an interrupted or finished run is refused)")
    g.add_argument("--val-pairs", default=None, help="optional pairs CSV (better,worse) for validation accuracy per epoch")


def parse_train_crop(values: list[str]):
    """``--train-crop``: two integers H W, or one fraction F in (0, 1] of each side."""
    from ..errors import ConfigError

    try:
        if len(values) == 2:
            return (int(values[0]), int(values[1]))
        if len(values) == 1:
            return float(values[0])
    except ValueError:
        pass
    raise ConfigError(f"--train-crop takes two integers H W or one fraction F in (0, 1], got {' '.join(values)}")


def training_configs(args):
    """TrainConfig and ModelConfig from the parsed options: given > --paper's > the defaults (training.settings)."""
    from dataclasses import replace

    from ..errors import ConfigError
    from ..model import ModelConfig
    from ..reference_stats import SIX_STATISTICS
    from ..training import TrainConfig, settings

    t_over, m_over = settings(paper=args.paper)
    given = {"epochs": args.epochs, "lr": args.lr, "strong_views": args.strong_views, "select": args.select,
             "min_steps": args.min_steps, "min_val_pairs": args.min_val_pairs,
             "min_train_images": args.min_train_images}
    if getattr(args, "train_crop", None) is not None:
        given["train_crop"] = parse_train_crop(args.train_crop)
    if getattr(args, "amp", None) is not None:
        given["amp"] = AMP_SETTINGS[args.amp]
    t_over.update({k: v for k, v in given.items() if v is not None})
    if args.head is not None:
        m_over["head"] = args.head
    if args.train_from is not None:
        m_over["train_from"] = args.train_from
    tc = TrainConfig(batch_size=args.batch_size, momentum=args.momentum,
                     weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, alpha=args.alpha,
                     theta=args.theta, beta=args.beta, consistency=not args.no_consistency,
                     relativity=not args.no_relativity,
                     margin_scale=args.margin_scale, max_rotation=args.max_rotation,
                     val_fraction=args.val_fraction, seed=args.seed)
    tc = replace(tc, **t_over)
    mc = ModelConfig(backbone=args.backbone, activation=args.activation, image_size=tuple(args.image_size),
                     **m_over)
    if mc.head == "anchored":
        mc = replace(mc, anchor={**mc.anchor, "k": getattr(args, "k", 5), "layer": getattr(args, "layer", "block4"),
                                 "smoothing": not getattr(args, "no_smoothing", False)})
        if getattr(args, "reference_stats", None) is not None:
            mc = replace(mc, anchor={**mc.anchor, "reference_stats": False if args.reference_stats == "off"
                                     else args.reference_stats})
        if getattr(args, "no_black_level", False):
            mc = replace(mc, anchor={**mc.anchor, "statistics": list(SIX_STATISTICS)})
    else:
        # options of the anchored head only: given with the paper's head they were silently ignored (and the
        # saved model_config still said reference_stats norm)
        anchored_only = [name for name, value in (("--reference-stats", getattr(args, "reference_stats", None)),
                                                  ("--no-black-level", getattr(args, "no_black_level", False) or None),
                                                  ("--min-train-images", args.min_train_images)) if value is not None]
        if anchored_only:
            how = f"--head {args.head}" if args.head else "--paper, or train without --references"
            raise ConfigError(f"{', '.join(anchored_only)} only apply to the anchored head, and the head here is "
                              f"{mc.head} ({how}): leave {'it' if len(anchored_only) == 1 else 'them'} out or give "
                              "--head anchored")
    return tc, mc


def training_outcome(warnings, strict: bool) -> int:
    """Print the did-not-learn warnings to stderr; status 3 with ``--strict`` when there are any."""
    import sys

    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 3 if warnings and strict else 0


def report_training(history, out, kept_epoch, failures, warnings, strict: bool, *, list_failures: bool = True) -> int:
    """The end of ``train`` and ``fit``: the training summary, the skipped files (``OUT/skipped.csv``) and the
    did-not-learn warnings; returns the exit status (:func:`training_outcome`).

    ``list_failures=False`` leaves the skipped-file list alone (``fit --resume`` without new failures: the
    first run's list stays).
    """

    _print_training_summary(history, out, kept_epoch)
    if list_failures:
        report_failures(failures, side=Path(out) / "skipped.csv")
    return training_outcome(warnings, strict)


def _print_training_summary(history, out, kept_epoch=None) -> None:
    import math

    trained = [r for r in history if r.get("epoch", 0) > 0]
    last = trained[-1] if trained else {}
    keys = [k for k in ("loss", "l_d", "l_c", "l_r", "val_srcc", "val_strong_accuracy", "val_accuracy") if k in last]
    print(f"trained {len(trained)} epochs; last: " + ", ".join(f"{k}={last[k]:.4f}" for k in keys) if trained
          else "not trained (the warning below says why)")
    if kept_epoch is not None:
        row = next((r for r in history if r.get("epoch") == kept_epoch), {})
        vals = ", ".join(f"{k}={row[k]:.4f}" for k in ("val_srcc", "val_strong_accuracy", "criterion")
                         if k in row and math.isfinite(row[k]))
        print(f"kept epoch {kept_epoch}" + (" (the model before training)" if kept_epoch == 0 else "")
              + (f": {vals}" if vals else ""))
    print(f"model written to {Path(out) / 'model.safetensors'} (+ model.json, history.csv, training_curves.png)")


def option_value(raw: str):
    """The VALUE of ``--option ...=VALUE`` (``baseline``, ``compare``): JSON when it parses, else the string.

    JSON lists become tuples (method arguments such as ``size`` are tuples).
    """
    import json

    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        value = raw
    return tuple(value) if isinstance(value, list) else value


def val_pairs_arg(path):
    if not path:
        return None

    from ..tables import csv_folder, pair_keys, read_pairs

    pairs = pair_keys(read_pairs(path), csv_folder(path))
    return [(b, w) for b, w, _ in pairs]


def add_runtime_eval(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("runtime")
    add_device(g)
    g.add_argument("--workers", type=int, default=None, help=f"image decoding processes (default: cores - 1, max 4; at most {MAX_WORKERS})")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
