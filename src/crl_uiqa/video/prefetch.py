"""Decoding in a background thread: a scan's frames are read (and cut, resized) while the model scores.

:func:`prefetch` iterates any iterable in a worker thread through a bounded
queue; errors raised by the iterable are re-raised in the consumer, in order,
after the items before them. Closing the generator stops the worker.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, Sequence

__all__ = ["prefetch", "prefetch_depth", "PREFETCH_BYTES"]


def prefetch(frames: Iterable, size: int) -> Iterator:
    """Iterate ``frames`` in a background thread (decoding overlaps scoring); errors re-raised in order."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def work() -> None:
        it = iter(frames)
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                close()

    thread = threading.Thread(target=work, name="crl-uiqa-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


#: Most bytes of decoded frames the background reader may hold ahead of the scorer.
PREFETCH_BYTES = 256 * 2**20


def prefetch_depth(shape: Sequence[int], batch_size: int) -> int:
    """Frames decoded ahead: two batches, at most :data:`PREFETCH_BYTES` of float32 frames, at least 2."""
    frame_bytes = max(1, int(shape[0]) * int(shape[1]) * 4)
    return int(max(2, min(2 * batch_size, PREFETCH_BYTES // frame_bytes)))
