"""Argument groups shared by several commands (one definition, one help text)."""
from __future__ import annotations

import argparse


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
                   help="weight file or folder; default: $CRL_UIQA_WEIGHTS_DIR, then the user cache, then a checksummed download")
    if layer:
        g.add_argument("--layer", default="block5",
                       help="embedding layer: block1..block5 (pooled conv blocks), adaptation (pooled pre-logit), "
                       "logits, probs (default block5: best on the dev protocol, see BENCHMARKS.md)")


def add_runtime(parser: argparse.ArgumentParser, batch_size: int = 32) -> None:
    g = parser.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"images per forward pass (default {batch_size})")
    g.add_argument("--workers", type=int, default=None, help="image decoding processes (default: cores - 1, max 4)")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image instead of skipping and listing it")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def crop_tuple(value):
    return tuple(value) if value else None


def report_failures(failures, out_path=None) -> None:
    """Print skipped files, and write them next to the output when there are any."""
    import sys

    if not failures:
        return
    print(f"skipped {len(failures)} unreadable image(s):", file=sys.stderr)
    for f in failures[:20]:
        print(f"  {f.path}: {f.reason}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    if out_path is not None:
        from pathlib import Path

        from ..files import write_csv

        side = Path(str(out_path) + ".skipped.csv")
        write_csv(side, [{"path": f.path, "reason": f.reason} for f in failures], ["path", "reason"])
        print(f"the list is in {side}", file=sys.stderr)
