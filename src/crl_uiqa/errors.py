"""One error model for everything a user can get wrong.

Every problem caused by the user's input (an image, a scan, a weights file, a
model directory, a setting, an output path) raises a :class:`CRLUIQAError`
subclass whose message is one line that names the offending file or setting.
The command line prints that line and exits with :data:`EXIT_USER`; anything
else is a bug in crl-uiqa and is reported as such (:mod:`crl_uiqa.cli`).

The subclasses also derive from the built-in exception a Python caller would
expect (``ValueError``, ``OSError``/``FileNotFoundError``, ``ImportError``), so ``except ValueError``
keeps working around library calls.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

#: exit codes of the ``crl-uiqa`` command (README, "Reliability")
EXIT_OK = 0
EXIT_USER = 1  # bad input, settings, model or output, or out of memory: one line on stderr
EXIT_USAGE = 2  # command-line syntax (argparse)
EXIT_BUG = 3  # an unexpected exception (a library's own ValueError included): a bug, please report it
EXIT_INTERRUPTED = 130


class CRLUIQAError(Exception):
    """Base of every error caused by what the user gave; ``str(exc)`` is one line for the user."""


class ConfigError(CRLUIQAError, ValueError):
    """An invalid setting (a command-line option or a config field); the message names it."""


class InputError(CRLUIQAError, ValueError):
    """An input set or table that cannot be used (no images, a malformed CSV...)."""


class ArgumentTypeError(ConfigError, TypeError):
    """An argument of the wrong type from a Python caller (a ``ConfigError``, and also the ``TypeError`` Python
    code expects for it)."""


class ImageError(CRLUIQAError, ValueError):
    """An image that cannot be used (base of :class:`crl_uiqa.io.ImageReadError`)."""


class ScanError(CRLUIQAError, ValueError):
    """A video, DICOM or image-sequence scan that cannot be used (base of ``ScanReadError``)."""


class WeightsError(CRLUIQAError, ValueError):
    """A backbone weights file that is not what it should be."""


class ModelError(CRLUIQAError, ValueError):
    """A trained model or checkpoint that is missing, damaged, or not crl-uiqa's."""


class NotFoundError(CRLUIQAError, FileNotFoundError):
    """An input the user named (an image or folder, a model, a CSV, a weights file) that does not exist (also a
    ``FileNotFoundError``, as it used to be)."""


class OutputError(CRLUIQAError, OSError):
    """An output path that cannot be written (a folder where a file is expected, read-only, disk full)."""


class NotFittedError(CRLUIQAError, RuntimeError):
    """A :class:`crl_uiqa.CRLUIQA` used before ``fit`` or ``load`` (also a ``RuntimeError``, as it used to be)."""


class MissingDependencyError(CRLUIQAError, ImportError, ValueError):
    """An optional dependency (an ``extra``) is not installed (also a ``ValueError``, as it used to be)."""


#: the user-error classes that take just a message (``reworded`` keeps an error's kind by these)
_PLAIN = (ArgumentTypeError, ConfigError, InputError, ImageError, ScanError, WeightsError, ModelError,
          MissingDependencyError)


def reworded(exc: BaseException, message: str, default: type[CRLUIQAError] = InputError) -> CRLUIQAError:
    """The same kind of user error as ``exc`` (its nearest message-only :class:`CRLUIQAError` class) with a new
    one-line ``message``, e.g. one that names the files; ``default`` when ``exc`` is not a user error."""
    for cls in type(exc).__mro__:
        if cls in _PLAIN:
            return cls(message)
    return default(message)


def optional_import(
    module: str,
    extra: str,
    *,
    purpose: str | None = None,
    package: str | None = None,
    minimum: tuple[str, str] | None = None,
) -> ModuleType:
    """Import the optional dependency ``module`` or raise :class:`MissingDependencyError`.

    ``extra`` is the crl-uiqa extra that installs it (``pip install 'crl-uiqa[extra]'``);
    ``package`` the PyPI name when it differs from ``module``; ``purpose`` says
    what needs it. ``minimum`` is ``(version, submodule)``: the lowest version
    that works (as in pyproject.toml) and a submodule that only it and later
    versions have, so an older install already present is one line too, not an
    ``ImportError`` deep inside a command.
    """
    what = f"{purpose} needs" if purpose else "needs"
    pip = package or module
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} the optional package {pip!r} ({exc}): pip install 'crl-uiqa[{extra}]' (or pip install {pip})"
        ) from None
    if minimum is not None:
        version, submodule = minimum
        try:
            importlib.import_module(submodule)
        except ImportError:
            have = getattr(found, "__version__", "an older version")
            raise MissingDependencyError(
                f"{what} {pip} >= {version} (installed: {have}): pip install -U 'crl-uiqa[{extra}]'"
            ) from None
    return found


#: the longest message shown whole; a longer one (a pasted value of 10000 characters) is cut in its middle
MAX_MESSAGE = 1000


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` as one line of at most ``limit`` characters: the one shortening policy of every message a user
    sees (the command line's errors, the server's details and job messages).

    A text of several lines has its white space folded into single spaces; a longer one keeps its start (two
    thirds) and its end (where a message names what went wrong) around ``[... N characters ...]``.
    """
    text = str(text)
    if text.splitlines() != [text]:
        text = " ".join(text.split())
    if len(text) <= limit:
        return text
    keep = limit - len(f" [... {len(text)} characters ...] ")  # the mark is never longer than this one
    if keep < 3:
        return text[:limit]
    head = keep * 2 // 3
    return f"{text[:head]} [... {len(text) - keep} characters ...] {text[len(text) - (keep - head):]}"


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``, naming its path (``[Errno 28] No space left on device: 'out.csv'``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    if not names:
        return str(exc) if str(exc) else reason
    return f"{os.fsdecode(names[0])}: {reason}" + (f" (and {os.fsdecode(names[1])})" if len(names) > 1 else "")


__all__ = [
    "CRLUIQAError", "ConfigError", "ArgumentTypeError", "InputError", "ImageError", "ScanError", "WeightsError", "ModelError",
    "NotFoundError", "OutputError", "NotFittedError", "MissingDependencyError", "optional_import", "describe_os_error",
    "reworded", "one_line", "MAX_MESSAGE",
    "EXIT_OK", "EXIT_USER", "EXIT_USAGE", "EXIT_BUG", "EXIT_INTERRUPTED",
]
