"""Progress of long work, on a terminal and in log files alike.

One policy for every loop that can take long (reading and embedding images, scoring, training,
simulating): on a terminal a tqdm bar; when stderr is not a terminal (output sent to a file, a CI
log, a pipe) a plain log line every ``interval`` seconds with the count, the elapsed time and the
estimated time left, and one line at the end if any was written, so a log is never silent for
minutes. ``enabled=False`` (``--quiet``) shows nothing.

    for batch in progress(loader, total=n, desc="embedding", unit="img"):
        ...

    with progress(total=n, desc="scoring", unit="img") as bar:
        bar.update(k)
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, Iterable

log = logging.getLogger("crl_uiqa.progress")

ENV_INTERVAL = "CRL_UIQA_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 15.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def eta(elapsed: float, done: float, total: float | None) -> float | None:
    """Seconds left at the mean rate so far; None when unknown."""
    if not total or done <= 0:
        return None
    return elapsed / done * max(0.0, total - done)


def log_interval() -> float:
    """Seconds between two progress lines in a log: ``$CRL_UIQA_PROGRESS_SECONDS`` or :data:`DEFAULT_INTERVAL`.

    Raises :class:`~crl_uiqa.errors.ConfigError` for a value that is not a finite number >= 0 (``abc`` fell back
    to the default and ``nan`` printed a line on every update, silently).
    """
    import math

    raw = os.environ.get(ENV_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        from .errors import ConfigError

        raise ConfigError(f"${ENV_INTERVAL} must be a number of seconds >= 0, got {raw!r}")
    return value


class LogProgress:
    """The non-terminal twin of a tqdm bar (same ``update``/``set_postfix``/``close`` and iteration)."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger | None = None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = log_interval() if interval is None else interval
        self.clock, self.log = clock, logger or log
        self.n = 0.0
        self.postfix = ""
        self.start = self.last = clock()
        self.lines = 0
        self.closed = False

    def __iter__(self):
        try:
            for item in self.iterable:  # type: ignore[union-attr]
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return int(self.total or 0)

    def set_postfix(self, ordered_dict=None, refresh=True, **kw):
        items = {**(ordered_dict or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc=None, refresh=True):
        self.desc = desc or ""

    def refresh(self):
        pass

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.start
        count = f"{self.n:g}/{self.total:g} {self.unit}" if self.total else f"{self.n:g} {self.unit}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        text = f"{self.desc}: {count}, {format_duration(elapsed)} elapsed"
        if final:
            text += ", done"
        else:
            left = eta(elapsed, self.n, self.total)
            if left is not None:
                text += f", about {format_duration(left)} left"
        if self.postfix:
            text += f" [{self.postfix}]"
        self.log.info(text)
        self.lines += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.lines:  # a log that said "running" also says "finished"
            self._line(self.clock(), final=True)


class _Off:
    """Progress that shows nothing (``enabled=False``)."""

    def __init__(self, iterable=None, **_):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass

    def set_description(self, *a, **k):
        pass

    def close(self):
        pass


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = False, tty: bool | None = None, **kw):
    """A progress reporter for ``iterable`` (or for manual ``update`` calls when it is None).

    ``enabled=False`` shows nothing; on a terminal (``tty``, default: stderr is one) a tqdm bar;
    otherwise :class:`LogProgress` (log lines every ``CRL_UIQA_PROGRESS_SECONDS``, default 15 s).
    """
    if not enabled:
        return _Off(iterable)
    if tty is None:
        tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if tty:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, **kw)
    return LogProgress(iterable, total=total, desc=desc, unit=unit,
                       **{k: v for k, v in kw.items() if k in ("interval", "clock", "logger")})
