"""The ``crl-uiqa`` command line: a thin layer over the Python API.

Each sub-command lives in its own module under :mod:`crl_uiqa.commands` and
exposes ``register(subparsers)``; this file only discovers and dispatches them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
import traceback
from pathlib import Path

from . import __version__
from . import commands as _commands
from .errors import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_USER,
    CRLUIQAError,
    OutputError,
    describe_os_error,
    one_line,
)


class CLIError(CRLUIQAError):
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
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug logging and full tracebacks")
    parser.add_argument("--allow-plugin-backbones", action="store_true",
                        help="let a model whose model.json names a python:module:function backbone import and run "
                        "that code (off by default: a model is data)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="skip images larger than N pixels (width x height), read from their header before "
                        "decoding (default 50000000, or $CRL_UIQA_MAX_PIXELS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = sorted(m.name for m in pkgutil.iter_modules(_commands.__path__) if not m.name.startswith("_"))
    for name in names:
        module = importlib.import_module(f"{_commands.__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command modules (torch, scipy) load, before _dispatch takes over
        return _interrupted("crl-uiqa")


def _interrupted(prefix: str) -> int:
    """Say that the command was interrupted, in one line.

    A Ctrl-C in the middle of importing torch leaves its logger at the root's INFO (torch sets WARNING once
    its import finishes), so torch's exit handler would print its cache statistics after that line.
    """
    print(f"{prefix}: interrupted", file=sys.stderr)
    torch_log = logging.getLogger("torch")
    if torch_log.level == logging.NOTSET:
        torch_log.setLevel(logging.WARNING)
    return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _expand_home(args)
    import os

    from .backbones import allow_plugin_backbones
    from .io import ENV_MAX_PIXELS, max_pixels, set_max_pixels
    from .progress import log_interval

    allow_plugin_backbones(args.allow_plugin_backbones)
    saved = os.environ.get(ENV_MAX_PIXELS)
    try:
        try:
            if args.max_pixels is not None:
                set_max_pixels(args.max_pixels)
        except CRLUIQAError as exc:
            print(f"crl-uiqa: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:  # the settings from the environment, checked before any work as the options are
            max_pixels()
            log_interval()
        except CRLUIQAError as exc:
            print(f"crl-uiqa: error: {exc}", file=sys.stderr)
            return EXIT_USER
        return run_command(args)
    finally:  # the settings of one command do not outlive it (main() may be called again in-process)
        allow_plugin_backbones(False)
        if saved is None:
            os.environ.pop(ENV_MAX_PIXELS, None)
        else:
            os.environ[ENV_MAX_PIXELS] = saved


def _expand_home(args: argparse.Namespace) -> None:
    """Expand a leading ``~`` in every option value, as the shell does for ``--out ~/x`` but not for
    ``--out=~/x`` (which would otherwise make a folder named ``~`` in the current one)."""
    def expand(v):
        if isinstance(v, str) and (v == "~" or v.startswith("~/") or v.startswith("~" + os.sep)):
            return os.path.expanduser(v)
        if isinstance(v, list):
            return [expand(x) for x in v]
        return v

    for name, value in vars(args).items():
        setattr(args, name, expand(value))


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; turn every failure into an exit code (README, "Reliability").

    * a :class:`~crl_uiqa.errors.CRLUIQAError` (bad input, setting, model or
      output) or an ``OSError`` on a user path: one line
      ``crl-uiqa CMD: error: ...``, exit 1;
    * anything else is a bug, a plain ``ValueError`` from a library included (crl-uiqa raises CRLUIQAError for
      what the user gave): one line saying so and asking for a report, exit 3; ``-v`` prints the full traceback.
    """
    new_folders = _new_out_folders(args)
    code = _dispatch(args)
    if code != 0:
        _remove_if_empty(new_folders)  # a refused or failed run leaves no empty folder of its --out behind
    return code


def _new_out_folders(args: argparse.Namespace) -> list[Path]:
    """The folders the --out check will create, deepest first: the --out folder of a command that writes one and
    its missing parents, or the missing parents of an --out file (and of live's --csv, --best, --plot)."""
    out = getattr(args, "out", None)
    kind = OUT_KIND.get(args.command)
    folders = []
    if out and kind is not None and str(out).strip():
        folders.append(Path(out) if kind == "dir" else Path(out).parent)
    for option in EXTRA_OUTPUTS.get(args.command, ()):  # live's --csv, --best, --plot: files
        value = getattr(args, option, None)
        if value and str(value).strip():
            folders.append(Path(value).parent)
    from .files import missing_folders

    missing: list[Path] = []
    for folder in folders:
        missing += [f for f in missing_folders(folder) if f not in missing]
    return sorted(missing, key=lambda f: len(f.parts), reverse=True)


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first, each one the run created; a folder that is not empty stays
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            continue


def _dispatch(args: argparse.Namespace) -> int:
    prefix = f"crl-uiqa {args.command}"
    try:
        _check_out(args)
        with _out_lock(args):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted(prefix)
    # What the user gave (a CRLUIQAError), or a path the system refused (an OSError). A plain ValueError is
    # neither: crl-uiqa checks what it is given before numpy, torch, PIL... see it, so one from a library is a
    # bug, reported below as such.
    except (CRLUIQAError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        if isinstance(exc, OSError) and not isinstance(exc, CRLUIQAError):
            msg = describe_os_error(exc)
        else:
            msg = str(exc) or type(exc).__name__
        print(f"{prefix}: error: {one_line(msg)}", file=sys.stderr)
        return EXIT_USER
    except MemoryError as exc:  # not a bug and not bad input: the run asked for more memory than there is
        if args.verbose:
            traceback.print_exc()
        detail = one_line(str(exc))
        print(f"{prefix}: error: out of memory{': ' + detail if detail else ''}; free memory, or ask for less "
              "(a smaller --batch-size, --image-size or fewer images at once)", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:  # a bug: say so, and how to get the details
        if args.verbose:
            traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        print(f"{prefix}: internal error{at}: {type(exc).__name__}: {one_line(str(exc))}\n"
              f"This is a bug in crl-uiqa {__version__}; please report it to the crl-uiqa issue tracker"
              + ("" if args.verbose else " with the full traceback printed by `crl-uiqa -v " + str(args.command) + " ...`."),
              file=sys.stderr)
        return EXIT_BUG


#: what --out names, per command: checked before any work (a folder where a file is expected, a path under a
#: regular file, a folder that cannot be written)
OUT_KIND = {"baseline": "file", "classify": "file", "embed": "file", "export": "file", "pseudo-label": "file",
            "report": "file", "score": "file", "ablate": "dir", "compare": "dir", "demo": "dir", "fit": "dir",
            "select": "dir", "simulate": "dir", "train": "dir"}


#: options naming files a command writes besides --out
EXTRA_OUTPUTS = {"live": ("plot", "best", "csv")}
#: commands that list the images they skipped beside their --out file (``report_failures``: OUT.skipped.csv; a clean
#: run removes it)
SKIPPED_LISTS = ("baseline", "classify", "embed", "pseudo-label", "score")
#: options naming images or frames: folders are searched recursively, patterns and manifests expanded
LISTED_INPUTS = ("images", "references", "train_images", "check_images", "input")
#: options naming other inputs: files or folders (a run folder, a weights folder)
OTHER_INPUTS = ("model", "labels", "scores", "pairs", "mos", "val_pairs", "detections", "weights", "plane_weights",
                "structure_weights", "root")

#: options naming CSVs whose rows name images the command reads (report embeds them, train trains on them), and
#: the columns that name them: those images are inputs too (``report --out`` one of them replaced the image)
CSV_IMAGE_COLUMNS = {"scores": ("path",), "labels": ("path",), "mos": ("path",), "pairs": ("better", "worse"),
                     "val_pairs": ("better", "worse")}


#: the files of a run folder that loading the model reads
MODEL_FILES = ("model.safetensors", "model.json")


def _check_out(args: argparse.Namespace) -> None:
    from .files import check_utf8_names

    # the paths a command writes into its CSVs and reports as given (select's scans, score's files): one that is not
    # UTF-8 would fail the run at its end, after all its work
    check_utf8_names([v for option in LISTED_INPUTS + ("out",) for v in _values(args, option)])
    out = getattr(args, "out", None)
    kind = OUT_KIND.get(args.command)
    for option in ("out", *EXTRA_OUTPUTS.get(args.command, ())):
        value = getattr(args, option, None)
        if value is not None and not str(value).strip():  # "" would write into the working folder
            raise OutputError(f"--{option} must not be empty")
    extra = [(f"--{o}", getattr(args, o)) for o in EXTRA_OUTPUTS.get(args.command, ()) if getattr(args, o, None)]
    if (not out or kind is None) and not extra:
        return
    from .files import check_output_dir, check_output_file, check_outputs_apart

    if out and kind is not None:
        (check_output_dir if kind == "dir" else check_output_file)(out)
    for _, value in extra:  # live's --csv under /proc/x failed only after the whole stream was scored
        check_output_file(value)
    files = extra + ([("--out", out)] if out and kind == "file" else [])
    if out and kind == "file":
        files += _side_outputs(args.command, out)
    folders = [("--out", out)] if out and kind == "dir" else []
    check_outputs_apart(_inputs_of(args), files, folders)


def _out_lock(args: argparse.Namespace):
    """The lock on a command's --out folder for the whole run (:func:`crl_uiqa.files.output_lock`): a second run
    into it is refused before any work. A file output needs none: it is replaced whole, never mixed. The Python
    functions the command calls take the same lock on the folders they fill, nested in this one."""
    out = getattr(args, "out", None)
    if not out or OUT_KIND.get(args.command) != "dir":
        return contextlib.nullcontext()
    from .files import output_lock

    return output_lock(out)


def _side_outputs(command: str, out: str) -> list[tuple[str, str]]:
    """The files ``command`` writes beside its --out file, kept off the inputs as --out is (``--images
    s.csv.skipped.csv``, rerunning the skipped images, deleted that list): its list of skipped images, and embed's
    paths beside a .npy."""
    files = []
    if command in SKIPPED_LISTS:
        from .commands._common import skipped_list_path

        files.append(("--out's list of skipped images", str(skipped_list_path(out))))
    if command == "embed" and Path(out).suffix == ".npy":
        from .embed import paths_file  # the command imports it anyway

        files.append(("--out's list of paths", str(paths_file(out))))
    return files


def _values(args: argparse.Namespace, option: str) -> list[str]:
    v = getattr(args, option, None)
    return [] if v is None else [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


def _inputs_of(args: argparse.Namespace):
    """The files and folders the command reads (:class:`~crl_uiqa.files.InputSet`), as far as they exist.

    A source that cannot be listed is left to the command, which reports it.
    """
    import glob
    import os

    from .files import InputSet
    from .io import IMAGE_EXTENSIONS, list_images

    found = InputSet()
    for option in LISTED_INPUTS + OTHER_INPUTS:
        flag = "--" + option.replace("_", "-")
        listed = option in LISTED_INPUTS
        for v in _values(args, option):
            if os.path.isdir(v):
                found.add_folder(flag, v, listed=listed)
                if option == "model":  # what loading a run folder reads (an earlier export there may be replaced)
                    for name in MODEL_FILES:
                        found.add_file(flag, os.path.join(v, name))
            elif os.path.exists(v):
                found.add_file(flag, v, listed=listed and Path(v).suffix.lower() in IMAGE_EXTENSIONS)
            if listed and (os.path.isdir(v) or os.path.exists(v) or glob.has_magic(v)):
                try:
                    # select's and live's --input is read as scans, whose reader says what a folder skips
                    for f in list_images(v, tell=option != "input"):
                        found.add_file(flag, f, listed=True)
                except (CRLUIQAError, OSError, ValueError):
                    pass
    for option, columns in CSV_IMAGE_COLUMNS.items():
        for v in _values(args, option):
            _add_csv_images(found, args, option, v, columns)
    return found


def _add_csv_images(found, args: argparse.Namespace, option: str, csv_path: str, columns) -> None:
    """The images a CSV names, as inputs: each path taken from every folder the readers may take it from (the
    current folder, the CSV's, ``--root``): refusing too much here only keeps a file that is not read from being
    replaced. A CSV that cannot be read is left to the command, which reports it."""
    import os

    from .files import read_csv
    from .tables import csv_folder

    if not os.path.isfile(csv_path):
        return
    try:
        rows = read_csv(csv_path)
    except (CRLUIQAError, OSError, ValueError):
        return
    bases = [Path.cwd(), csv_folder(csv_path), *(Path(r) for r in _values(args, "root"))]
    what = f"an image named in --{option.replace('_', '-')} {csv_path}:"
    for row in rows:
        for column in columns:
            name = row.get(column)
            if name:
                for base in bases:
                    found.add_file(what, base / os.path.expanduser(name), listed=option == "labels")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
