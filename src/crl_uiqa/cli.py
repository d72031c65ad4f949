"""The ``crl-uiqa`` command line: a thin layer over the Python API.

Each sub-command lives in its own module under :mod:`crl_uiqa.commands` and
exposes ``register(subparsers)``; this file only discovers and dispatches them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import __version__
from . import commands as _commands


class CLIError(Exception):
    """An error whose message is meant for the user, printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crl-uiqa",
        description=(
            "Unsupervised ultrasound image quality assessment (CRL-UIQA, MICCAI 2024). "
            "Score ultrasound frames without quality labels: pseudo-labels from the distance "
            "to high-quality reference planes, then a quality regressor trained with score "
            "consistency and relativity co-learning."
        ),
        epilog="Start with `crl-uiqa demo`. Each command has its own --help.",
    )
    parser.add_argument("--version", action="version", version=f"crl-uiqa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = sorted(m.name for m in pkgutil.iter_modules(_commands.__path__) if not m.name.startswith("_"))
    for name in names:
        module = importlib.import_module(f"{_commands.__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, FileNotFoundError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"crl-uiqa {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
