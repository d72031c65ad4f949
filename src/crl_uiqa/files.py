"""Atomic file output.

Every file crl-uiqa writes goes through these helpers: the content is written to
a temporary file in the destination folder and moved into place with
:func:`os.replace`, so an interrupted run never leaves a half-written CSV,
checkpoint or report behind. :func:`safe_name` turns a name taken from the
user's input (a scan's file name) into one that stays inside the output folder.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

#: Characters :func:`safe_name` replaces: path separators and control characters.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


def safe_name(name: str, default: str = "output") -> str:
    """A single path component made from ``name`` that cannot leave the folder it is joined to.

    Path separators and control characters become ``_``; leading dots
    are dropped (no ``.``, ``..`` or hidden names); an empty result gives
    ``default``. ``safe_name("../x") == "_x"``, ``safe_name("..") == default``.
    """
    text = _UNSAFE.sub("_", str(name)).strip().lstrip(".").strip()
    return text[:200] or default


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The caller writes the temporary file by any means (numpy, safetensors,
    matplotlib...). On an exception the temporary file is removed and ``path``
    is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_csv(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]] | Iterable[Sequence[Any]],
    fieldnames: Sequence[str],
) -> Path:
    """Write rows (dicts or sequences) with a header to ``path`` atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fieldnames)
    for row in rows:
        if isinstance(row, Mapping):
            writer.writerow([_fmt(row.get(k, "")) for k in fieldnames])
        else:
            writer.writerow([_fmt(v) for v in row])
    return write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    try:
        import numpy as np

        if isinstance(v, np.floating):  # before float: np.float64 subclasses float
            return repr(float(v))
        if isinstance(v, np.integer):
            return int(v)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, float):
        return repr(v)
    return v


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV with a header row into a list of dicts (clear error if absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))
