"""Atomic file output.

Every file crl-uiqa writes goes through these helpers: the content is written to
a temporary file in the destination folder and moved into place with
:func:`os.replace`, so an interrupted run never leaves a half-written CSV,
checkpoint or report behind. :func:`safe_name` turns a name taken from the
user's input (a scan's file name) into one that stays inside the output folder.
Temporary files are named ``.NAME.crl-uiqa-PID-XXXX.tmp...``; one left by a killed process (its PID no
longer running) is removed the next time that file is written. A failed write
(disk full, read-only folder) raises :class:`~crl_uiqa.errors.OutputError`
naming the destination, and the destination keeps its previous content.

:func:`check_output_file` and :func:`check_output_dir` test an output path
before any work: a folder where a file is expected, a path under a regular
file, a folder that cannot be written. :func:`check_outputs_apart` refuses an
output that is one of the command's inputs, or a folder that holds them.
:func:`output_lock` holds an output folder for one run, so that two runs never
fill it at once; :func:`holds_output_dir` makes a Python function that fills a
folder hold it for each call (the command line holds its --out folder too, and
the two nest).

**Nothing a user put in an output folder is replaced** (one policy, here): a run
replaces a file there only if an earlier crl-uiqa run wrote it. Each file written
into a held folder is recorded, before it is moved into place, in the folder's
record :data:`OUTPUTS_RECORD` (one relative path per line, appended: a line is
one small write, and a line cut by a kill has no newline and counts for nothing);
:func:`check_outputs_free` refuses, before any work, a file under one of a run's
output names that no record lists, and :func:`atomic_path` refuses such a file at
the write itself, for an output a command did not name up front. Names, not
contents, are recorded: a copied or moved folder keeps its record (a checksum
would be as robust only at the cost of reading every output again), and an output
a user edited in place stays the run's.

CSV cells are written exactly as given, file paths included: a path that starts
with ``=``, ``+``, ``-`` or ``@`` stays as it is, because programs join the
outputs on these strings (README, "Reliability": open such CSVs in a
spreadsheet with the import dialog, as text).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import functools
import inspect
import io
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from .errors import ConfigError, CRLUIQAError, InputError, NotFoundError, OutputError

F = TypeVar("F", bound=Callable[..., Any])

_TMP_TAG = "crl-uiqa"
_TMP_PID = re.compile(r"\." + _TMP_TAG + r"-(\d+)-[^/]*\.tmp")
# errors of the destination whatever file they name (disk full, quota, read-only file system)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}

#: Characters :func:`safe_name` replaces: path separators and control characters.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


def safe_name(name: str, default: str = "output") -> str:
    """A single path component made from ``name`` that cannot leave the folder it is joined to.

    Path separators and control characters become ``_``; leading dots
    are dropped (no ``.``, ``..`` or hidden names); an empty result gives
    ``default``; at most 200 bytes in UTF-8. ``safe_name("../x") == "_x"``, ``safe_name("..") == default``.
    """
    text = _UNSAFE.sub("_", str(name)).strip().lstrip(".").strip()[:200]
    # at most 200 bytes, whole characters: file systems limit a name to 255 bytes, and a caller may add a suffix
    # ("-2", ".png"); 200 characters of "é" are 400 bytes
    while len(text.encode("utf-8", "surrogateescape")) > 200:
        text = text[:-1]
    return text or default


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The caller writes the temporary file by any means (numpy, safetensors,
    matplotlib...). On an exception the temporary file is removed and ``path``
    is left untouched.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise OutputError(f"{path}: is a folder, a file name is expected")
        _refuse_special_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        # realpath: tempfile makes the folder absolute by its text, which moves "link/../x" away from where the
        # operating system (and os.replace below) puts it
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_TMP_TAG}-{os.getpid()}-", suffix=".tmp" + path.suffix,
                                   dir=os.path.realpath(path.parent))
        os.close(fd)
    except CRLUIQAError:
        raise
    except OSError as exc:
        raise _output_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
        _claim(path)
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, CRLUIQAError) and (
                exc.errno in _WRITE_ERRNOS or exc.filename in (None, str(tmp_path), str(path))):
            raise _output_error(path, exc) from None
        raise


def _refuse_special_file(path: Path) -> None:
    """Refuse an output that is a device, a pipe or a socket, or a link to one (``--out /dev/null``,
    ``/dev/stdout``): an output replaces its path with a new regular file, so run as root it replaced the
    system's ``/dev/null`` itself, and ``/dev/stdout`` is a link that would be replaced, not written through."""
    import stat

    try:
        mode = path.stat().st_mode  # through links: a broken link, or nothing there, is replaced as before
    except OSError:
        return
    stream = path.is_symlink() and os.readlink(path).startswith("/proc/")  # /dev/stdout: whatever fd 1 is now
    if stream or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(f"{path}: is a device, pipe, socket or process stream{' (through a link)' if path.is_symlink() else ''}, "
                          "not a file: crl-uiqa writes each output as a new file that replaces its path; give a file "
                          "name")


def _output_error(path: Path, exc: OSError) -> OutputError:
    where = exc.filename if exc.filename and not _TMP_PID.search(os.fsdecode(exc.filename)) else path
    return OutputError(f"{where}: cannot write {path.name}: {exc.strerror or exc}")


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` left by crl-uiqa processes that no longer run."""
    path = Path(path)
    removed = []
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{glob_escape(path.name)}.{_TMP_TAG}-*.tmp*"):
            m = _TMP_PID.search(tmp.name)
            if m and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def is_temporary(name: str) -> bool:
    """Whether the file name ``name`` is one of crl-uiqa's temporaries (``.NAME.crl-uiqa-PID-*.tmp*``, beside the
    file being written, left by a killed process)."""
    return _TMP_PID.search(name) is not None


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _refuse_blocking_file(path: Path) -> None:
    """Refuse ``path`` when the nearest existing ancestor (itself excluded) is a file, not a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{path}: {parent} is a file, not a folder")
            return


def _probe_writable(folder: Path, what: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{_TMP_TAG}-{os.getpid()}-", suffix=".probe.tmp",
                                     dir=os.path.realpath(folder))  # the folder the OS writes into (see above)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what}: cannot write into {folder} ({exc.strerror or exc})") from None


def check_output_file(path: str | os.PathLike) -> Path:
    """Check, before any work, that the file ``path`` can be written (its folder is created)."""
    if isinstance(path, str) and path.endswith(tuple(filter(None, (os.sep, os.altsep)))):
        # a folder by its spelling: Path() drops the slash, so `--out scores/` wrote a file named scores and then
        # failed on scores/.skipped.csv, after all the work
        raise OutputError(f"{path}: ends in {path[-1]}, so names a folder; a file name is expected")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, a file name is expected")
    _refuse_special_file(path)
    _refuse_blocking_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder {path.parent} ({exc.strerror or exc})") from None
    _probe_writable(path.parent, path)
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check, before any work, that the folder ``path`` exists or can be created, and can be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, a folder is expected")
    _refuse_blocking_file(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder ({exc.strerror or exc})") from None
    _probe_writable(path, path)
    return path


#: the lock file :func:`output_lock` keeps in an output folder while a run writes there (hidden: never read as an
#: image, never listed as an output)
LOCK_NAME = ".crl-uiqa.lock"


#: the descriptors of the lock files this process holds (:func:`_os_lock`)
_LOCK_FDS: set[int] = set()
#: the folders this process holds (real paths) -> the thread holding each (:func:`output_lock`), and their guard
_HOLDERS: dict[str, int] = {}
_GUARD = threading.Lock()


def _forget_locks_in_child() -> None:
    """In a forked child (a DataLoader worker...): close the inherited lock descriptors. ``flock`` belongs to the open
    file, which the fork shares, so a child that outlived a killed run (workers notice within seconds, other children
    maybe never) kept its folder locked; the child holds no folder."""
    for fd in _LOCK_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()
    _HOLDERS.clear()
    global _GUARD
    _GUARD = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_locks_in_child)


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the output folder ``folder`` (it must exist) for a run: another holder is refused with
    :class:`OutputError`, before any work.

    The lock is the operating system's advisory lock on ``folder/.crl-uiqa.lock`` (``flock`` on POSIX, ``msvcrt``
    byte lock on Windows), which the system drops when the process ends, killed or not (a forked child, such as a
    DataLoader worker, closes its copy, so it does not keep the lock after the run): a lock file left by a
    killed run blocks nothing, and the next run takes it over. A run that ends removes it. Where neither lock
    exists, or the file system has no locks (some network shares), the folder is not locked.

    Re-entrant within one thread: a thread that already holds ``folder`` (the same folder by its real path) holds
    it again at no cost, and only its outermost hold releases it; so the command line, which holds its --out
    folder for the whole run, calls the Python functions that hold their own folder (``CRLUIQA.fit(run_dir=...)``,
    ``simulate_dataset``...) without refusing itself. Another thread of the same process is another run: it is
    refused as another process is, by the process's own list of held folders, whatever the system's lock does
    within one process (``flock`` emulated by ``fcntl`` locks on NFS is one lock per process, which a second
    thread's lock would have shared and its release dropped).
    """
    key, me = os.path.realpath(folder), threading.get_ident()
    with _GUARD:
        holder = _HOLDERS.get(key)
        if holder is None:
            _HOLDERS[key] = me
    if holder == me:  # this thread holds it already (an outer call): nothing to take, nothing to release
        yield
        return
    if holder is not None:  # another thread of this process
        raise _busy(folder)
    try:
        with _os_lock(folder):
            yield
    finally:
        with _GUARD:
            _HOLDERS.pop(key, None)


#: the record of the files crl-uiqa runs wrote in an output folder (hidden: never read as an image; see the module
#: docstring)
OUTPUTS_RECORD = ".crl-uiqa-outputs"


def _held_folder(real_parent: str) -> str | None:
    """The innermost folder this thread holds (:func:`output_lock`) that holds ``real_parent`` (a real path)."""
    me = threading.get_ident()
    with _GUARD:
        held = [k for k, t in _HOLDERS.items() if t == me and _inside(real_parent, k)]
    return max(held, key=len) if held else None


def _recorded(folder: str, cache: dict[str, set[str]] | None = None) -> set[str]:
    """The paths the record of ``folder`` lists (whole lines only); ``cache``: records read before, by folder."""
    if cache is not None:
        if folder not in cache:
            cache[folder] = _recorded(folder)
        return cache[folder]
    try:
        with open(os.path.join(folder, OUTPUTS_RECORD), "rb") as fh:
            data = fh.read()
    except OSError:
        return set()
    return {line.decode("utf-8", "surrogateescape") for line in data.split(b"\n")[:-1] if line}


def _ours(real: str, cache: dict[str, set[str]] | None = None) -> bool:
    """Whether an earlier run recorded writing the file ``real`` (a real path): in the record of its own folder or
    of any folder above it (a run records in its own --out, which a later run's --out may lie inside or above)."""
    folder = os.path.dirname(real)
    while True:
        if os.path.relpath(real, folder).replace(os.sep, "/") in _recorded(folder, cache):
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def _not_ours(path: Path, more: str = "") -> OutputError:
    return OutputError(f"{path}{more}: no crl-uiqa run wrote this file, and this run writes one of that name there; "
                       "move it out of the folder, or choose another output folder (--out): crl-uiqa never replaces "
                       "a file of yours")


def _record(folder: str, rel: str) -> None:
    """Append ``rel`` to the record of ``folder``: one write of one line."""
    line = rel.encode("utf-8", "surrogateescape") + b"\n"
    try:
        fd = os.open(os.path.join(folder, OUTPUTS_RECORD), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _output_error(Path(folder) / OUTPUTS_RECORD, exc) from None


def _claim(path: Path) -> None:
    """Before ``path`` is replaced by a new output: inside a folder this thread holds, refuse a file there that no
    run recorded writing, and record ``path`` as written. Outside held folders (a command's --out file, named by the
    user to be written), nothing."""
    real_parent = os.path.realpath(path.parent)
    held = _held_folder(real_parent)
    if held is None:
        return
    real = os.path.join(real_parent, path.name)
    rel = os.path.relpath(real, held).replace(os.sep, "/")
    if os.path.lexists(real):
        if not _ours(real):
            raise _not_ours(path)
        if rel in _recorded(held):
            return
    _record(held, rel)


def foreign_outputs(folder: str | os.PathLike, names: Iterable[str],
                    also: Callable[[str], bool] | None = None) -> list[str]:
    """The files under ``folder`` that a run writing ``names`` there would replace, and that no crl-uiqa run wrote.

    ``names``: paths relative to ``folder``, glob patterns (``best_*.png``) or folders (everything inside counts,
    as a run that replaces a folder whole does). A file is a run's when a record lists it (:data:`OUTPUTS_RECORD`,
    :func:`_ours`) or ``also(relative path)`` says so (a command's own rule for folders written before records:
    the simulator's layout). Links inside a named folder count as foreign; temporaries and records do not.
    """
    import glob as _glob

    root = Path(folder)
    real_root = os.path.realpath(root)
    found: list[str] = []
    cache: dict[str, set[str]] = {}

    def check(rel: str) -> None:
        if (also is not None and also(rel)) or _ours(os.path.join(real_root, *rel.split("/")), cache):
            return
        if rel not in found:
            found.append(rel)

    for name in names:
        targets = ([os.path.relpath(p, root).replace(os.sep, "/") for p in _glob.glob(str(root / name))]
                   if _glob.has_magic(name) else [name])
        for rel in targets:
            target = root / rel
            if target.is_dir() and not target.is_symlink():
                for here, dirs, files in os.walk(target):
                    base = Path(here).relative_to(root).as_posix()
                    found.extend(f"{base}/{d}" for d in dirs if os.path.islink(os.path.join(here, d)))
                    for f in files:
                        if f != OUTPUTS_RECORD and f != LOCK_NAME and not is_temporary(f):
                            check(f"{base}/{f}")
            elif os.path.lexists(target):
                check(rel)
    return found


def check_outputs_free(folder: str | os.PathLike, names: Iterable[str],
                       also: Callable[[str], bool] | None = None) -> None:
    """Refuse, before any work, an output folder holding a file under one of the run's output ``names`` that no
    crl-uiqa run wrote (:func:`foreign_outputs`): one line naming it and what to do."""
    foreign = foreign_outputs(folder, names, also)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise _not_ours(Path(folder) / foreign[0], more)


def adopt_outputs(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Record the files ``names`` (relative to ``folder``, those that exist) as a run's own: for a run told that
    the folder holds its earlier run (``--resume``, ``--overwrite``), also one written before records existed."""
    real = os.path.realpath(folder)
    present = _recorded(real)
    for name in names:
        if name not in present and os.path.lexists(os.path.join(real, name)):
            _record(real, name)


def _busy(folder: str | os.PathLike) -> OutputError:
    return OutputError(f"{folder}: another crl-uiqa run is writing into this folder; wait for it to end, or choose "
                       "another folder (--out)")


@contextlib.contextmanager
def _os_lock(folder: str | os.PathLike) -> Iterator[None]:
    """The operating system's lock of :func:`output_lock`, taken once per hold."""
    path = Path(folder) / LOCK_NAME
    for _ in range(100):  # a holder may remove the file between our open and our lock: lock the new file then
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # NFS locks a file open for writing only
            except PermissionError:  # left by a killed run of another user: locks need no writing elsewhere
                fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise OutputError(f"{folder}: cannot create the lock file {LOCK_NAME} ({exc.strerror or exc})") from None
        if not _try_lock(fd, path):
            os.close(fd)
            raise _busy(folder)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:  # removed by the holder that just ended
            same = False
        if same:
            _LOCK_FDS.add(fd)
            break
        os.close(fd)
    else:  # pragma: no cover - 100 runs ending while this one starts
        raise OutputError(f"{folder}: could not lock the folder (its lock file {LOCK_NAME} keeps changing)")
    owner = os.getpid()
    try:
        yield
    finally:
        if os.getpid() == owner:  # not a forked child leaving the block: the lock, its file and fd are the parent's
            _release(fd, path)


def _release(fd: int, path: Path) -> None:
    """Drop the lock of :func:`_os_lock` on ``fd`` and remove its file ``path``."""
    if os.name != "nt":  # removed while locked, so that no one locks the old file after us (see above)
        with contextlib.suppress(OSError):
            os.unlink(path)
    _LOCK_FDS.discard(fd)
    if os.name == "nt":  # Windows frees the lock of a closed file only "after a delay": unlock it now
        with contextlib.suppress(ImportError, OSError):
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    os.close(fd)  # drops the lock
    if os.name == "nt":  # Windows removes no open file: a run that opened it meanwhile keeps it
        with contextlib.suppress(OSError):
            os.unlink(path)


def missing_folders(folder: str | os.PathLike) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what creating it makes."""
    missing = []
    for f in (Path(folder), *Path(folder).parents):
        if os.path.lexists(f):
            break
        missing.append(f)
    return missing


@contextlib.contextmanager
def holding_output_dir(folder: str | os.PathLike | None, what: str = "the output folder") -> Iterator[Path | None]:
    """Create the output folder ``folder`` (:func:`check_output_dir`) and hold it (:func:`output_lock`) while the
    block runs; a block that fails removes the folders it created if they are empty. ``None``: no folder, no lock.
    An empty name (``""``, which would be the working folder) is a :class:`ConfigError` naming ``what``, before the
    working folder is probed or locked."""
    if folder is None:
        yield None
        return
    if not str(folder).strip():
        raise ConfigError(f"{what} must not be empty (it would be the working folder); give a folder")
    folder = Path(folder)
    new = missing_folders(folder)
    try:
        check_output_dir(folder)
        with output_lock(folder):
            yield folder
    except BaseException:
        for f in new:  # deepest first; a folder that is not empty stays
            try:
                f.rmdir()
            except OSError:
                break
        raise


def holds_output_dir(parameter: str) -> Callable[[F], F]:
    """Decorate a function that fills the folder given as its argument ``parameter`` (None: no folder): each call
    creates and holds it (:func:`holding_output_dir`) before the function runs, so that two runs, in two processes
    or two threads, never fill one folder at once; a call made while this thread holds it already (the command
    line's lock on its --out) nests in that hold."""
    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def held(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:  # a wrong call: Python's own error, from the function
                return fn(*args, **kwargs)
            bound.apply_defaults()
            with holding_output_dir(bound.arguments[parameter], parameter):
                return fn(*args, **kwargs)

        return held  # type: ignore[return-value]

    return decorate


def _try_lock(fd: int, path: Path | None = None) -> bool:
    """Take the exclusive lock on the open file ``fd`` (the lock file ``path``) without waiting; False when another
    process holds it."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            try:
                import msvcrt
            except ImportError:  # neither: no lock (documented above)
                return True
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        # held by another process; any other error is a file system without locks (ENOLCK, EOPNOTSUPP on some
        # network shares): not locked, as without fcntl, and said so
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK):
            return False
        logging.getLogger(__name__).warning(
            "%s: the file system refused a lock (%s); this folder is not kept from a second run writing into it",
            path.parent if path is not None else "output folder", exc.strerror or exc)
    return True


class InputSet:
    """What a command reads, to keep its outputs off it (:func:`check_outputs_apart`).

    ``files``: every input file (a folder's or a pattern's images expanded, a
    manifest with its listed images, a model folder's files), each under the
    option that named it, ``listed`` for images and frames (named or listed
    from a folder, a pattern or a manifest); ``folders``: the folders given as inputs,
    ``listed`` when searched recursively for images or frames, so that
    anything written inside would be read as an input next time.
    """

    def __init__(self) -> None:
        self.files: dict[tuple[int, int], tuple[str, str, bool]] = {}  # (device, inode) -> (option, path, listed)
        self.folders: list[tuple[str, str, bool]] = []  # (option, real path, listed recursively)

    def add_file(self, option: str, path: str | os.PathLike, listed: bool = False) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        self.files.setdefault((st.st_dev, st.st_ino), (option, str(path), listed))

    def add_folder(self, option: str, path: str | os.PathLike, listed: bool) -> None:
        self.folders.append((option, os.path.realpath(path), listed))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_outputs_apart(inputs: InputSet, files: Sequence[tuple[str, str | os.PathLike]] = (),
                        folders: Sequence[tuple[str, str | os.PathLike]] = ()) -> None:
    """Refuse, before any work, an output that would replace or mix with the command's inputs.

    ``files``/``folders``: (option, path) of the files and folders the command
    writes. A file output must not be an input file (the same file also through
    a link), nor be an image inside a folder listed recursively for inputs; a
    folder output must not be an input folder, nor lie inside a
    folder listed recursively for inputs, nor directly hold input images or
    frames (its figures and frames would be read as inputs next time). Two file
    outputs must not be one file (each would replace the other).
    """
    seen: dict[str, tuple[str, str | os.PathLike]] = {}
    for option, path in files:
        real = os.path.realpath(os.path.abspath(path))
        if real in seen:
            first, first_path = seen[real]
            raise OutputError(f"{first} {first_path} and {option} {path} are the same file: each output needs its "
                              "own path")
        seen[real] = (option, path)
    for option, path in files:
        try:
            st = os.stat(path)
        except OSError:
            continue
        hit = inputs.files.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise OutputError(f"{option} {path} is also an input ({hit[0]} {hit[1]}); crl-uiqa never writes over "
                              "what it reads: choose another path")
    from .io import IMAGE_EXTENSIONS

    for option, path in files:  # `live --best seq/best.png`: the next run read the picture as a frame of seq
        if Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
            continue  # a CSV or a report beside the inputs is fine: never read as one
        real = os.path.realpath(os.path.abspath(path))
        for in_option, folder, listed in inputs.folders:
            if listed and _inside(real, folder):
                raise OutputError(f"{option} {path} is inside the {in_option} folder {folder}: an image written "
                                  "there would be read as an input next time; choose a path outside it")
    for option, path in folders:
        real = os.path.realpath(path)
        for in_option, folder, listed in inputs.folders:
            if real == folder or (listed and _inside(real, folder)):
                where = "is" if real == folder else "is inside"
                raise OutputError(f"{option} {path} {where} the {in_option} folder {folder}: outputs written there "
                                  "would mix with the inputs; choose a folder outside it")
        for in_option, in_path, listed in inputs.files.values():
            if listed and os.path.realpath(os.path.dirname(os.path.abspath(in_path))) == real:
                raise OutputError(f"{option} {path} holds an input ({in_option} {in_path}); outputs written there "
                                  "could replace or mix with it: choose another folder")


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
    return write_bytes(path, text_bytes(path, text))


def text_bytes(path: str | os.PathLike, text: str) -> bytes:
    """``text`` in UTF-8 for the file ``path``, or :class:`OutputError` naming it (a name that is not UTF-8)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a file name in another encoding, read from the disk as surrogates
        bad = exc.object[max(0, exc.start - 40):exc.end + 20].encode("utf-8", "surrogateescape")
        raise OutputError(f"{path}: cannot write a file name that is not UTF-8 ({bad!r}); "
                          f"{_RENAME_NOT_UTF8}") from None


_RENAME_NOT_UTF8 = ("outputs are UTF-8 and keep names exactly, so rename such files to UTF-8 first "
                    "(e.g. convmv -f latin1 -t utf8 --notest -r FOLDER)")


def check_utf8_names(paths: Iterable[str]) -> None:
    """Refuse, before any work, a path that is not UTF-8 (bytes of another encoding, e.g. Latin-1 names from an old
    Windows share): no CSV could write it as it is, so a run would do all its work and then fail at the end."""
    for p in paths:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{os.fsencode(p)!r}: the file name is not UTF-8 text; {_RENAME_NOT_UTF8}") from None


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


def not_utf8(path: str | os.PathLike, exc: UnicodeDecodeError) -> InputError:
    """The one-line error for a CSV that is not UTF-8 text (``exc`` from decoding it)."""
    return InputError(f"{path}: not a UTF-8 text CSV ({exc.reason}, byte 0x{exc.object[exc.start]:02x}); "
                      "save it as UTF-8")


def refuse_nul(path: str | os.PathLike, text: str) -> None:
    """Refuse a text table (a CSV, a path list) holding a NUL character, naming its line: text has none, so the file
    is binary or damaged, and a path holding one cannot be opened (``os.stat`` raised a bare ``ValueError``)."""
    nul = text.find("\0")
    if nul >= 0:
        raise InputError(f"{path}, line {text.count(chr(10), 0, nul) + 1}: a NUL character, which text never holds: "
                         "not a text file (a binary or damaged one)")


def csv_records(path: str | os.PathLike) -> list[list[str]]:
    """The rows of the CSV file ``path`` (``csv.reader``'s lists): UTF-8 (a BOM dropped), no NUL character, and the
    ``csv`` module's own errors (a field above its 128 KiB limit...) as one line naming the file and the line, as
    every other problem of a table."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    refuse_nul(path, text)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return list(reader)
    except csv.Error as exc:
        raise InputError(f"{path}, line {reader.line_num}: not a readable CSV ({exc})") from None


def refuse_repeated_columns(path: str | os.PathLike, header: Sequence[str | None]) -> None:
    """Refuse a header naming one column twice: a reader would take one of them and ignore the other in silence
    (``csv.DictReader`` keeps the last, a column index the first), so which one is meant cannot be told."""
    seen: set[str] = set()
    for name in header:
        if not name:
            continue
        if name not in seen:
            seen.add(name)
            continue
        raise InputError(f"{path}: the header names column {name!r} more than once; keep one (which of them is "
                         "meant cannot be told)")


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV with a header row into a list of dicts (clear errors if absent, not UTF-8 text, not a CSV, or with a
    column named twice)."""
    path = Path(path)
    if not path.is_file():
        if path.exists():  # a folder (or a pipe) was "CSV file not found"
            raise InputError(f"{path}: is {'a folder' if path.is_dir() else 'not a regular file'}, a CSV file is "
                             "expected")
        raise NotFoundError(f"CSV file not found: {path}")
    rows = csv_records(path)
    if not rows:
        return []
    header = rows[0]
    refuse_repeated_columns(path, header)
    out: list[dict] = []
    for row in rows[1:]:  # as csv.DictReader: blank lines skipped, surplus cells under None, missing ones None
        if not row:
            continue
        record: dict = dict(zip(header, row))
        if len(row) > len(header):
            record[None] = row[len(header):]
        for name in header[len(row):]:
            record[name] = None
        out.append(record)
    return out
