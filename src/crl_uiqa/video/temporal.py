"""Time along a scan: smoothing scores, picking frames at distinct moments, bounded memory while streaming.

* :func:`smooth_scores`: Gaussian-weighted mean of the scores within ``+-S``
  seconds (sigma ``S / 2``, weights renormalised at the ends and over
  irregular frame times), so that a single lucky frame in a shaky stretch does
  not beat a steady good view.
* :func:`temporal_nms`: the top ``K`` frames at distinct moments: greedy
  non-maximum suppression in time (take the best frame, drop every frame
  closer than ``min_gap`` seconds to it, take the best remaining one, ...).
* :class:`ScoreTrack`: both, applied while a scan streams by. A frame's
  smoothed score is final once the stream has passed ``S`` seconds beyond it;
  only the images of frames that can still end up among the picks are held
  (:class:`CandidatePool`): a frame whose final rank has ``2 K`` pairwise
  ``min_gap``-separated better frames above it can never be picked (each pick
  suppresses at most two of them), so its image is released.

Everything here works on arrays of times and scores: no video is needed to test it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError

__all__ = ["smooth_scores", "temporal_nms", "CandidatePool", "GrowingColumn", "ScoreTrack", "TrackedFrame"]


def smooth_scores(times: Sequence[float], scores: Sequence[float], seconds: float,
                  start: int = 0, stop: int | None = None) -> np.ndarray:
    """Gaussian-weighted moving average of scores over ``+-seconds`` (sigma ``seconds / 2``).

    ``out[i] = sum_j w_ij s_j / sum_j w_ij`` over the frames ``j`` with
    ``|t_j - t_i| <= seconds``, ``w_ij = exp(-(t_j - t_i)^2 / (2 sigma^2))``:
    works for irregular frame times and renormalises at the ends. Non-finite
    scores get weight 0 (a frame whose whole window is non-finite stays NaN).

    Parameters
    ----------
    times : sequence of float
        Frame times in seconds, non-decreasing.
    scores : sequence of float
        One score per frame.
    seconds : float
        Half-width of the window; 0 returns the scores unchanged.
    start, stop : int
        Compute only ``out[start:stop]`` (the window still reaches outside).

    Returns
    -------
    numpy.ndarray
        float64 smoothed scores for frames ``start .. stop - 1``.
    """
    t = np.asarray(times, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 1:
        raise InputError(f"times and scores must be 1-D of the same length, got {t.shape} and {s.shape}")
    stop = t.size if stop is None else int(stop)
    if seconds < 0 or not math.isfinite(seconds):
        raise ConfigError(f"smoothing window must be a finite number of seconds >= 0, got {seconds}")
    if seconds == 0 or stop <= start:
        return s[start:stop].copy()
    sigma = seconds / 2.0
    eps = 1e-9 * max(1.0, seconds)
    idx = np.arange(start, stop)
    lo = np.searchsorted(t, t[idx] - seconds - eps, side="left")
    hi = np.searchsorted(t, t[idx] + seconds + eps, side="right")
    out = np.empty(idx.size, dtype=np.float64)
    # rows in blocks of at most SMOOTH_BLOCK window entries: a window as long as the scan (--smooth 1e9) made one
    # frames x frames matrix at the end of the stream, 13 GB for a 10-minute 30 fps video
    rows = max(1, SMOOTH_BLOCK // max(1, int((hi - lo).max())))
    for b in range(0, idx.size, rows):
        i, lo_b, hi_b = idx[b : b + rows], lo[b : b + rows], hi[b : b + rows]
        width = int((hi_b - lo_b).max())
        cols = lo_b[:, None] + np.arange(width)[None, :]
        inside = cols < hi_b[:, None]
        cols = np.minimum(cols, t.size - 1)
        dt = (t[cols] - t[i][:, None]) / sigma
        w = np.exp(-0.5 * dt * dt) * inside
        vals = s[cols]
        ok = np.isfinite(vals)
        w = np.where(ok, w, 0.0)
        num = (w * np.where(ok, vals, 0.0)).sum(axis=1)
        den = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b : b + rows] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


#: most (frame, window frame) entries :func:`smooth_scores` holds at once, per array (16 MiB of float64)
SMOOTH_BLOCK = 1 << 21


def _rank_order(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidate positions sorted best first (higher score, then earlier frame)."""
    c = np.asarray(candidates, dtype=np.int64)
    return c[np.lexsort((c, -scores[c]))]


def temporal_nms(times: Sequence[float], scores: Sequence[float], k: int | None, min_gap: float,
                 eligible: Sequence[bool] | None = None) -> list[int]:
    """Top frames at distinct moments: greedy non-maximum suppression in time.

    Frames are taken best first (ties: the earlier frame); a frame closer than
    ``min_gap`` seconds to an already taken frame is skipped.

    Parameters
    ----------
    times, scores : sequence of float
        Per-frame time (s) and score (higher = better; NaN never taken).
    k : int or None
        Number of frames to take (``None``: as many as the gap allows).
    min_gap : float
        Smallest time between two taken frames, seconds (``0``: no suppression).
    eligible : sequence of bool, optional
        Frames allowed to be taken (all by default).

    Returns
    -------
    list of int
        Positions of the taken frames, best first.
    """
    t = np.asarray(times, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if k is not None and int(k) < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if min_gap < 0 or not math.isfinite(min_gap):
        raise ConfigError(f"min_gap must be a finite number of seconds >= 0, got {min_gap}")
    ok = np.isfinite(s)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    taken: list[int] = []
    taken_t: list[float] = []
    for p in _rank_order(s, np.flatnonzero(ok)):
        tp = t[p]
        if min_gap > 0 and any(abs(tp - u) < min_gap for u in taken_t):
            continue
        taken.append(int(p))
        taken_t.append(float(tp))
        if k is not None and len(taken) >= int(k):
            break
    return taken


class CandidatePool:
    """Images of the frames that can still be picked (see :class:`ScoreTrack`).

    Frames enter once their smoothed score is final. A frame ranked below the
    ``2 K``-th frame of a greedy NMS over the pool has ``2 K`` pairwise
    separated better frames and can never be among the top ``K``: it is
    released, and so is every later frame ranked below that cut.
    """

    def __init__(self, k: int, min_gap: float) -> None:
        self.k = int(k)
        self.min_gap = float(min_gap)
        self.images: dict[int, np.ndarray] = {}
        self.cut: tuple[float, int] | None = None  # (score, -position) of the 2K-th separated frame
        self.prune_at = 64

    def offer(self, pos: int, score: float, image: np.ndarray, times: np.ndarray, scores: np.ndarray) -> None:
        if not math.isfinite(score):
            return
        if self.cut is not None and (score, -pos) < self.cut:
            return
        self.images[pos] = image
        if len(self.images) > self.prune_at:
            self._prune(times, scores)
            self.prune_at = max(64, 2 * len(self.images))

    def _prune(self, times: np.ndarray, scores: np.ndarray) -> None:
        pos = np.fromiter(self.images, dtype=np.int64)
        order = _rank_order(scores, pos)
        need = 2 * self.k
        taken_t: list[float] = []
        for i, p in enumerate(order):
            tp = times[p]
            if self.min_gap > 0 and any(abs(tp - u) < self.min_gap for u in taken_t):
                continue
            taken_t.append(float(tp))
            if len(taken_t) >= need:
                self.cut = (float(scores[p]), -int(p))
                for q in order[i + 1:]:
                    del self.images[int(q)]
                return


class GrowingColumn:
    """A float64 array that grows by appending (amortised doubling)."""

    def __init__(self) -> None:
        self._buf = np.empty(1024, dtype=np.float64)
        self.n = 0

    def extend(self, values) -> None:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if self.n + v.size > self._buf.size:
            grown = np.empty(max(2 * self._buf.size, self.n + v.size), dtype=np.float64)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n : self.n + v.size] = v
        self.n += v.size

    @property
    def values(self) -> np.ndarray:
        """The filled part (a view: valid until the next :meth:`extend`)."""
        return self._buf[: self.n]


@dataclass
class TrackedFrame:
    """One scored frame handed to :meth:`ScoreTrack.add`."""

    index: int
    time: float
    quality: float
    eligible: bool
    image: np.ndarray | None = None
    plane_probability: float = math.nan
    plane: str = ""


class ScoreTrack:
    """Per-frame records of a streaming selection: raw and smoothed scores, eligibility, pick candidates.

    Frames are :meth:`add`-ed in stream order (non-decreasing times); each
    frame's smoothed score is fixed as soon as its ``+-smooth`` window is
    complete, and eligible frames are then offered to a
    :class:`CandidatePool`. :meth:`finish` fixes the rest and
    :meth:`picks` returns the top ``top_k`` positions, whose images are still held.

    Parameters
    ----------
    top_k : int
        Frames to pick.
    min_gap : float
        Smallest time between two picks (seconds).
    smooth : float
        Half-width of the smoothing window (seconds; 0: raw scores).
    """

    def __init__(self, top_k: int, min_gap: float, smooth: float) -> None:
        self.top_k, self.min_gap, self.smooth = int(top_k), float(min_gap), float(smooth)
        self.index: list[int] = []
        self.plane_probability: list[float] = []
        self.plane: list[str] = []
        self.eligible: list[bool] = []
        self._times, self._quality, self._smoothed = GrowingColumn(), GrowingColumn(), GrowingColumn()
        self._pending: dict[int, np.ndarray] = {}
        self.pool = CandidatePool(top_k, min_gap)
        self._final = 0

    def __len__(self) -> int:
        return len(self.index)

    def add(self, frames: Sequence[TrackedFrame]) -> None:
        """Record a batch of scored frames (in stream order)."""
        if not frames:
            return
        base = len(self.index)
        for j, f in enumerate(frames):
            ok = bool(f.eligible) and math.isfinite(f.quality)
            self.index.append(int(f.index))
            self.plane_probability.append(float(f.plane_probability))
            self.plane.append(f.plane)
            self.eligible.append(ok)
            if ok and f.image is not None:
                self._pending[base + j] = f.image
        self._times.extend([f.time for f in frames])
        self._quality.extend([f.quality for f in frames])
        self._smoothed.extend(np.full(len(frames), np.nan))
        self._settle(float(self._times.values[-1]))

    def finish(self) -> None:
        """The stream ended: fix every remaining smoothed score."""
        self._settle(None)

    def _settle(self, upto_time: float | None) -> None:
        """Fix the smoothed score of frames whose window is complete; offer them to the pool."""
        times = self._times.values
        n = self._times.n
        stop = n if upto_time is None else int(np.searchsorted(times, upto_time - self.smooth, side="right"))
        if stop <= self._final:
            return
        smoothed = self._smoothed.values
        smoothed[self._final:stop] = smooth_scores(times, self._quality.values, self.smooth, self._final, stop)
        for p in range(self._final, stop):
            img = self._pending.pop(p, None)
            if img is not None:
                self.pool.offer(p, float(smoothed[p]), img, times, smoothed)
        self._final = stop

    @property
    def times(self) -> np.ndarray:
        return self._times.values.copy()

    @property
    def quality(self) -> np.ndarray:
        return self._quality.values.copy()

    @property
    def smoothed(self) -> np.ndarray:
        return self._smoothed.values.copy()

    def picks(self) -> list[int]:
        """Positions of the picks, best first (call after :meth:`finish`); their images are in ``pool.images``."""
        if not self.index:
            return []
        return temporal_nms(self._times.values, self._smoothed.values, self.top_k, self.min_gap,
                            np.asarray(self.eligible, dtype=bool))

    def image(self, pos: int) -> np.ndarray:
        """The held image of a picked position."""
        image = self.pool.images.get(pos)
        if image is None:  # pragma: no cover - guarded by the pool's proof
            raise RuntimeError(f"internal error: the image of picked frame {self.index[pos]} was released")
        return image
