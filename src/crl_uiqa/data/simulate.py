"""Seeded simulator of fetal ultrasound sweeps with ground-truth image quality.

No patient data can ship with crl-uiqa, so the demo and the tests run on
simulated B-mode frames. A frame is rendered in three steps:

1. **Anatomy** (:mod:`crl_uiqa.data.anatomy`): a 3-D fetal abdomen/thorax or
   head made of ellipsoids is cut by the imaging plane at elevation ``offset``
   (mm from the standard plane, for a reference-size fetus) with an optional
   ``tilt``; the elevation beam thickness gives partial-volume blur, so the
   key structures (stomach bubble, umbilical vein, heart chambers, thalami...)
   shrink, blur and vanish as ``|offset|`` grows. Maternal wall layers,
   amniotic fluid and the posterior uterine wall surround the fetus, and a
   fetal limb (bone, with an acoustic shadow of strength ``shadow``) may lie
   between the probe and the anatomy.
2. **B-mode formation** (:mod:`crl_uiqa.data.bmode`) in polar (depth x angle)
   coordinates: speckle from random scatterers convolved with a depth-dependent
   PSF (focal zone at ``center_depth + focus_error``), depth attenuation and
   acoustic shadowing, electronic noise (``noise``), time-gain compensation,
   probe-motion blur (``motion``), log compression with a gain error (``gain``
   dB), then scan conversion to a 60 degree fan; outside the fan is black.

Ground truth
------------
Every frame carries the parameters that generated it and a scalar quality

::

    plane_closeness    = exp(-(offset / sigma_p)^2 - (tilt / 30 deg)^2)
    acquisition_factor = exp(-(gain / 9 dB)^2 - (focus_error / 35 mm)^2
                             - (noise / 0.5)^2 - (shadow / 0.5)^2 - (motion / 0.5)^2)
    true_quality       = plane_closeness * acquisition_factor

``true_quality`` lies in (0, 1]; it is 1
only for the standard plane acquired perfectly. ``sigma_p`` is 5 mm for the
abdomen and head planes and 4 mm for the four-chamber plane (its chambers are
thinner). Each term is a Gaussian penalty reaching 1/e at its tolerance:

* ``offset`` (mm) and ``tilt`` (degrees): distance of the plane from the
  standard plane - its key structures are smaller, fainter and blurrier;
* ``gain`` (dB): gain error - too bright saturates, too dark loses tissue;
* ``focus_error`` (mm): focal depth minus the depth of the anatomy - lateral
  blur grows as the Gaussian beam widens out of focus;
* ``noise`` (0-1): electronic noise, -62 dB + 42 dB x noise relative to the
  tissue echo at the skin (none at 0), amplified with depth by the TGC;
* ``shadow`` (0-1): strength (attenuation exp(-4 x shadow) in amplitude) and
  width of the acoustic shadow of a fetal limb over the anatomy;
* ``motion`` (0-1): probe motion during acquisition - incoherent blur over
  10 mm x motion (direction ``motion_angle``) and, in sweeps, jitter of the
  anatomy between frames.

The other parameters (``rotation``, ``flip``, ``scale``, ``center_x``,
``center_depth``, ``shadow_angle``, ``motion_angle``, ``attenuation``) change
what the image looks like but not its quality. All randomness (speckle, noise)
comes from ``seed``: the same parameters and seed give the same image.
"""
from __future__ import annotations

import functools
import io
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from .. import validate
from ..errors import ConfigError
from ..files import OUTPUTS_RECORD, check_outputs_free, holds_output_dir, write_bytes, write_csv, write_json
from . import anatomy as _anat
from . import bmode as _bmode
from .anatomy import PLANES, Ellipsoid, plane_anatomy

__all__ = [
    "PLANES",
    "PARAMETERS",
    "DEFAULT_RANGES",
    "REFERENCE_RANGES",
    "QUALITY_TOLERANCES",
    "PolarFrame",
    "SimulatedDataset",
    "quality_factors",
    "true_quality",
    "simulate_polar",
    "simulate_frame",
    "sweep_parameters",
    "simulate_sweep",
    "simulate_dataset",
    "make_pairs",
    "MANIFEST_FIELDS",
]

log = logging.getLogger(__name__)

#: most pixels a sweep may have (frames x H x W): :func:`simulate_sweep` holds them at once, as float32 (4 GiB)
MAX_SWEEP_PIXELS = 2**30
#: most frames a sweep of :func:`simulate_dataset` may have (--frames): over a minute at 30 frames/s, and the pairs
#: of a test sweep compare every two of its frames (:func:`make_pairs`: 2 million comparisons at 2000 frames, about
#: 10 s and 130 MB, growing with the square)
MAX_FRAMES = 2000
#: most frames a dataset may render (planes x all its sweeps x frames): about 6 hours at the default 256 x 320
#: (20 ms a frame), with a manifest row a frame held in memory
MAX_DATASET_FRAMES = 1_000_000

#: tolerance (1/e point) of each Gaussian penalty in ``true_quality``; ``offset``
#: depends on the plane (see :func:`quality_factors`).
QUALITY_TOLERANCES: dict[str, float] = {
    "tilt": 30.0,
    "gain": 9.0,
    "focus_error": 35.0,
    "noise": 0.5,
    "shadow": 0.5,
    "motion": 0.5,
}

#: the generating parameters of a frame, in manifest column order (plus ``plane`` and ``seed``).
PARAMETERS: tuple[str, ...] = (
    "offset", "tilt", "gain", "focus_error", "noise", "shadow", "motion",
    "rotation", "flip", "scale", "center_x", "center_depth",
    "shadow_angle", "motion_angle", "attenuation",
)

#: default ranges of :func:`simulate_sweep` (see there for their meaning).
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "offset": (14.0, 30.0),
    "tilt": (-15.0, 15.0),
    "gain": (-12.0, 12.0),
    "focus_error": (-40.0, 40.0),
    "noise": (0.0, 0.7),
    "shadow": (0.0, 0.8),
    "motion": (0.0, 0.7),
}

#: milder ranges used for the reference sweeps of :func:`simulate_dataset`
#: (careful acquisitions by an experienced sonographer).
REFERENCE_RANGES: dict[str, tuple[float, float]] = {
    "offset": (14.0, 30.0),
    "tilt": (-5.0, 5.0),
    "gain": (-4.0, 4.0),
    "focus_error": (-15.0, 15.0),
    "noise": (0.0, 0.25),
    "shadow": (0.0, 0.3),
    "motion": (0.0, 0.25),
}

#: default depth (mm below the skin) of the centre of the anatomy.
_CENTER_DEPTH = 60.0
#: nominal tissue attenuation (dB/cm, round trip) assumed by the time-gain compensation.
_TGC_DB_PER_CM = 3.0
#: B-mode display: the level mapped to white and the displayed dynamic range (dB).
_WHITE_DB = 30.0
_DYNAMIC_RANGE_DB = 60.0
#: point-spread function (mm): axial pulse and lateral beam width at focus, Rayleigh range.
_AXIAL_SIGMA_MM = 0.35
_LATERAL_SIGMA_MM = 0.8
_RAYLEIGH_MM = 16.0


# ----------------------------------------------------------------------------- quality

def quality_factors(plane: str, *, offset: float = 0.0, tilt: float = 0.0, gain: float = 0.0,
                    focus_error: float = 0.0, noise: float = 0.0, shadow: float = 0.0,
                    motion: float = 0.0) -> dict[str, float]:
    """Ground-truth quality of a frame and its two factors.

    Returns ``{"plane_closeness", "acquisition_factor", "true_quality"}`` following
    the formula of the module docstring (Gaussian penalties; product in (0, 1]).
    """
    anat = plane_anatomy(plane)
    t = QUALITY_TOLERANCES
    plane_closeness = math.exp(-(offset / anat.sigma_offset) ** 2 - (tilt / t["tilt"]) ** 2)
    acq = math.exp(-sum((value / t[name]) ** 2 for name, value in (
        ("gain", gain), ("focus_error", focus_error), ("noise", noise),
        ("shadow", shadow), ("motion", motion))))
    return {"plane_closeness": plane_closeness, "acquisition_factor": acq,
            "true_quality": plane_closeness * acq}


def true_quality(plane: str, **params: float) -> float:
    """Scalar ground-truth quality in (0, 1]; see :func:`quality_factors`."""
    return quality_factors(plane, **params)["true_quality"]


# ----------------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class PolarFrame:
    """Intermediate stages of one simulated frame, in polar (depth x A-line) coordinates.

    Attributes
    ----------
    echogenicity : ndarray
        Intensity reflectivity of the section (before attenuation).
    transmission : ndarray
        Amplitude transmission of the beam (depth attenuation x shadows).
    envelope : ndarray
        Detected envelope after time-gain compensation and motion blur, before
        log compression (Rayleigh distributed in uniform regions).
    bmode : ndarray
        Log-compressed grey levels in [0, 1].
    truth : dict
        Parameters and ground-truth quality (as returned by :func:`simulate_frame`).
    """

    echogenicity: np.ndarray
    transmission: np.ndarray
    envelope: np.ndarray
    bmode: np.ndarray
    truth: dict


@functools.lru_cache(maxsize=8)
def _background(geo: _bmode.FanGeometry) -> np.ndarray:
    """Maternal wall layers, amniotic fluid and posterior uterine wall (cached per geometry)."""
    d = (geo.radius - geo.r0)[:, None]
    x = geo.x
    theta = geo.angle[None, :]

    def boundary(depth, amp, freq, phase):
        return depth + amp * np.sin(freq * theta + phase)

    layers = [  # (lower boundary, echogenicity) from the skin down
        (boundary(1.0, 0.0, 0.0, 0.0), 2.5),          # skin
        (boundary(6.0, 0.8, 5.0, 0.3), 0.3),          # subcutaneous fat
        (boundary(10.5, 1.0, 4.0, 1.1), 0.9),         # abdominal muscle
        (boundary(12.5, 0.6, 6.0, 2.0), 0.35),        # preperitoneal fat
        (boundary(18.0, 1.2, 3.0, 0.7), 0.65),        # anterior uterine wall
        (boundary(98.0, 3.0, 2.5, 1.3), _anat.FLUID),  # amniotic fluid
        (boundary(106.0, 2.0, 3.5, 0.2), 1.1),        # posterior uterine wall / placenta
    ]
    echo = np.full(geo.x.shape, 0.7, dtype=np.float32)  # deeper maternal tissue
    for lower, value in reversed(layers):
        echo = np.where(d < lower, np.float32(value), echo)
    tex = 1.0 + 0.25 * _anat.texture_pattern("maternal", x, d * np.ones_like(x))
    echo = np.where(echo > _anat.FLUID, echo * tex, echo).astype(np.float32)
    echo.setflags(write=False)
    return echo


def _to_world(anat_points: np.ndarray, *, center_x: float, center_z: float, rotation: float,
              scale: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    u, v = anat_points
    if flip:
        u = -u
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return center_x + scale * (c * u - s * v), center_z + scale * (s * u + c * v)


def _polar_box(geo: _bmode.FanGeometry, x: np.ndarray, z: np.ndarray,
               margin_mm: float = 2.5) -> tuple[slice, slice] | None:
    """Polar-grid index box covering the world points ``(x, z)`` plus a margin."""
    r = np.hypot(x, z)
    th = np.arctan2(x, z)
    r_lo, r_hi = r.min() - margin_mm, r.max() + margin_mm
    row_lo = int(math.floor((r_lo - geo.r0) / geo.dr))
    row_hi = int(math.ceil((r_hi - geo.r0) / geo.dr)) + 1
    dth = margin_mm / max(r_lo, geo.r0)
    col_lo = int(math.floor((th.min() - dth + geo.half_angle) / geo.dtheta))
    col_hi = int(math.ceil((th.max() + dth + geo.half_angle) / geo.dtheta)) + 1
    row_lo, col_lo = max(row_lo, 0), max(col_lo, 0)
    row_hi, col_hi = min(row_hi, geo.n_depth), min(col_hi, geo.n_lines)
    if row_lo >= row_hi or col_lo >= col_hi:
        return None
    return slice(row_lo, row_hi), slice(col_lo, col_hi)


def _elevation_distance(s: Ellipsoid, w: float) -> float:
    """Distance along w from the plane ``w`` to the nearest copy of structure ``s``."""
    if s.period <= 0:
        return abs(w - s.center[2])
    k_lo = math.ceil((s.w_range[0] - s.center[2]) / s.period)
    k_hi = math.floor((s.w_range[1] - s.center[2]) / s.period)
    k = min(max(round((w - s.center[2]) / s.period), k_lo), k_hi)
    return abs(w - (s.center[2] + k * s.period))


def _check_params(plane: str, params: Mapping[str, Any]) -> None:
    if plane not in PLANES:
        raise ConfigError(f"unknown plane {plane!r}; choose one of {', '.join(PLANES)}")
    if not isinstance(params["flip"], (bool, np.bool_)) and params["flip"] not in (0, 1):
        raise ConfigError(f"flip must be a bool, got {params['flip']!r}")
    for name, value in params.items():
        if name == "flip":
            continue
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    for name in ("noise", "shadow", "motion"):
        if not 0.0 <= params[name] <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {params[name]!r}")
    if not 0.5 <= params["scale"] <= 1.5:
        raise ConfigError(f"scale must be in [0.5, 1.5], got {params['scale']!r}")
    if abs(params["tilt"]) >= 60:
        raise ConfigError(f"tilt must be within (-60, 60) degrees, got {params['tilt']!r}")
    if params["attenuation"] < 0:
        raise ConfigError(f"attenuation must be >= 0 dB/cm, got {params['attenuation']!r}")


def simulate_polar(
    plane: str,
    *,
    offset: float = 0.0,
    gain: float = 0.0,
    focus_error: float = 0.0,
    noise: float = 0.0,
    shadow: float = 0.0,
    motion: float = 0.0,
    tilt: float = 0.0,
    rotation: float = 0.0,
    flip: bool = False,
    scale: float = 1.0,
    center_x: float = 0.0,
    center_depth: float = _CENTER_DEPTH,
    shadow_angle: float = 0.0,
    motion_angle: float = 0.0,
    attenuation: float = _TGC_DB_PER_CM,
    size=(256, 320),
    seed: int | np.random.Generator = 0,
) -> PolarFrame:
    """Simulate one frame and return all its polar stages (see :func:`simulate_frame`).

    Use this to inspect the echogenicity map, the beam transmission or the
    envelope before log compression (e.g. to check the speckle statistics).
    """
    params = dict(offset=offset, tilt=tilt, gain=gain, focus_error=focus_error, noise=noise,
                  shadow=shadow, motion=motion, rotation=rotation, flip=flip, scale=scale,
                  center_x=center_x, center_depth=center_depth, shadow_angle=shadow_angle,
                  motion_angle=motion_angle, attenuation=attenuation)
    _check_params(plane, params)
    params = {k: (bool(v) if k == "flip" else float(v)) for k, v in params.items()}
    if isinstance(seed, np.random.Generator):
        rng, seed_value = seed, None
    else:
        try:
            seed_value = int(seed)
        except (TypeError, ValueError):
            raise ConfigError(f"seed must be an int or a numpy Generator, got {seed!r}") from None
        rng = np.random.default_rng(seed_value)
    geo = _bmode.fan_geometry(size)
    anat = plane_anatomy(plane)

    # --- section of the anatomy in fetal coordinates on the polar grid
    cz = geo.r0 + center_depth
    cos_r, sin_r = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    dx = geo.x - np.float32(center_x)
    dz = geo.z - np.float32(cz)
    inv = np.float32(1.0 / scale)
    u = (cos_r * dx + sin_r * dz) * inv
    v = (-sin_r * dx + cos_r * dz) * inv
    if flip:
        u = -u
    tan_t = math.tan(math.radians(tilt))
    w_plane = anat.w_standard + offset
    w = w_plane + np.float32(tan_t) * dz * inv

    echo = _background(geo).copy()
    att = np.zeros_like(echo)
    boxes = []
    for s in anat.structures:
        reach = max(s.axes[0], s.axes[1])
        # the plane's w varies over the structure's footprint when tilted
        dist = _elevation_distance(s, w_plane + tan_t * _center_dz(s, rotation, flip))
        if dist - s.axes[2] > 4.0 * _anat.ELEVATION_SIGMA_MM + abs(tan_t) * reach:
            boxes.append(None)
            continue
        wx, wz = _to_world(_outline(plane, s.name), center_x=center_x, center_z=cz,
                           rotation=rotation, scale=scale, flip=flip)
        boxes.append(_polar_box(geo, wx, wz))
    _anat.render_section(anat.structures, u, v, w, echo, att, boxes)

    if shadow > 0:
        limb = _limb(anat, shadow=shadow, shadow_angle=shadow_angle, center_depth=center_depth,
                     scale=scale, r0=geo.r0)
        zeros = np.zeros_like(echo)
        limb_boxes = []
        for s in limb:
            pts = s.outline()
            limb_boxes.append(_polar_box(geo, pts[0], pts[1]))
        _anat.render_section(limb, geo.x, geo.z, zeros, echo, att, limb_boxes)

    # --- beam transmission: depth attenuation and acoustic shadows (amplitude, round trip)
    depth = (geo.radius - geo.r0).astype(np.float32)
    alpha = attenuation / (10.0 * 20.0 / math.log(10.0))  # dB/cm -> Np/mm
    transmission = np.broadcast_to(np.exp(-alpha * depth)[:, None], att.shape).copy()
    cols = np.flatnonzero(att.any(axis=0))  # only A-lines that cross bone are shadowed
    if cols.size:
        a = att[:, cols]
        transmission[:, cols] *= np.exp((np.cumsum(a, axis=0) - 0.5 * a) * np.float32(-geo.dr))
    amplitude = np.sqrt(echo) * transmission

    # --- speckle, PSF with focal zone, noise, envelope
    focus_r = geo.r0 + center_depth + focus_error
    lat_mm = _bmode.lateral_sigma(geo.radius, focus_r, _LATERAL_SIGMA_MM, _RAYLEIGH_MM)
    lat_lines = np.maximum(lat_mm / (geo.radius * geo.dtheta), 0.6)
    ax_samples = max(_AXIAL_SIGMA_MM / geo.dr, 0.6)
    noise_std = 10.0 ** ((-62.0 + 42.0 * noise) / 20.0) if noise > 0 else 0.0
    env = _bmode.speckle_envelope(amplitude, rng=rng, axial_sigma=ax_samples,
                                  lateral_sigma=lat_lines, noise_std=noise_std)
    tgc = np.exp(_TGC_DB_PER_CM / (10.0 * 20.0 / math.log(10.0)) * depth).astype(np.float32)
    env *= tgc[:, None]
    env = _bmode.motion_blur(env, geo, length_mm=10.0 * motion, angle_deg=motion_angle)
    bmode = _bmode.log_compress(env, gain_db=gain, white_db=_WHITE_DB,
                                dynamic_range_db=_DYNAMIC_RANGE_DB)

    truth: dict[str, Any] = {"plane": plane}
    truth.update(params)
    truth["seed"] = seed_value
    truth.update(quality_factors(plane, offset=offset, tilt=tilt, gain=gain,
                                 focus_error=focus_error, noise=noise, shadow=shadow,
                                 motion=motion))
    return PolarFrame(echogenicity=echo, transmission=transmission.astype(np.float32),
                      envelope=env, bmode=bmode, truth=truth)


def _center_dz(s: Ellipsoid, rotation: float, flip: bool) -> float:
    """Depth offset (unscaled mm) of a structure's centre below the fetal centre."""
    u, v = s.center[0], s.center[1]
    if flip:
        u = -u
    return math.sin(math.radians(rotation)) * u + math.cos(math.radians(rotation)) * v


_OUTLINES: dict[tuple[str, str], np.ndarray] = {}


def _outline(plane: str, name: str) -> np.ndarray:
    key = (plane, name)
    if key not in _OUTLINES:
        s = next(s for s in plane_anatomy(plane).structures if s.name == name)
        _OUTLINES[key] = s.outline()
    return _OUTLINES[key]


def _limb(anat, *, shadow: float, shadow_angle: float, center_depth: float, scale: float,
          r0: float) -> tuple[Ellipsoid, ...]:
    """A fetal limb bone above the anatomy (world coordinates) casting a shadow of strength ``shadow``."""
    depth = max(center_depth - anat.radius * scale - 9.0, 21.0)
    r = r0 + depth
    psi = math.radians(shadow_angle)
    cx, cz = r * math.sin(psi), r * math.cos(psi)
    half_len = 3.0 + 7.0 * shadow
    angle = -shadow_angle  # long axis perpendicular to the beam
    bone_echo = 300.0 * min(1.0, shadow / 0.15)
    return (
        Ellipsoid("limb_soft", (cx, cz, 0.0), (half_len + 3.0, 5.0, 1e6), 0.8, angle=angle,
                  texture=0.1),
        Ellipsoid("limb_bone", (cx, cz, 0.0), (half_len, 2.5, 1e6), bone_echo, angle=angle,
                  attenuation=4.0 * shadow / 5.0),
    )


def simulate_frame(
    plane: str,
    *,
    offset: float = 0.0,
    gain: float = 0.0,
    focus_error: float = 0.0,
    noise: float = 0.0,
    shadow: float = 0.0,
    motion: float = 0.0,
    size=(256, 320),
    seed: int | np.random.Generator = 0,
    **anatomy: Any,
) -> tuple[np.ndarray, dict]:
    """Simulate one B-mode frame of a fetal standard plane and its ground truth.

    Parameters
    ----------
    plane : {"abdomen", "4ch", "head"}
        Which standard plane the probe aims at.
    offset : float
        Elevation distance (mm, reference-size fetus) of the imaging plane from
        the standard plane; 0 is the standard plane.
    gain : float
        Gain error in dB (0 = correct gain).
    focus_error : float
        Focal depth minus the depth of the anatomy centre, mm.
    noise, shadow, motion : float
        Electronic noise, acoustic-shadow strength and probe-motion blur, in [0, 1].
    size : (int, int)
        Output ``(H, W)`` in pixels.
    seed : int or numpy.random.Generator
        Randomness of the speckle and noise.
    **anatomy
        Further parameters (defaults in brackets): ``tilt`` plane tilt in degrees
        [0], ``rotation`` in-plane rotation of the fetus in degrees [0],
        ``flip`` mirror the fetus left-right [False], ``scale`` fetal size
        factor [1], ``center_x`` / ``center_depth`` position of the anatomy centre
        in mm (lateral, depth below the skin) [0, 60], ``shadow_angle`` beam angle
        of the shadowing limb in degrees [0], ``motion_angle`` direction of the
        probe motion in degrees (0 = lateral) [0], ``attenuation`` tissue
        attenuation in dB/cm round trip [3.0, what the TGC compensates].

    Returns
    -------
    image : ndarray, float32, shape (H, W)
        B-mode grey levels in [0, 1]; 0 outside the fan.
    truth : dict
        ``plane``, every parameter above, ``seed`` (None for a Generator) and
        ``plane_closeness``, ``acquisition_factor``, ``true_quality`` (see the
        module docstring).
    """
    unknown = set(anatomy) - set(PARAMETERS)
    if unknown:
        raise ConfigError(f"unknown simulate_frame parameter(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(PARAMETERS)}")
    frame = simulate_polar(plane, offset=offset, gain=gain, focus_error=focus_error, noise=noise,
                           shadow=shadow, motion=motion, size=size, seed=seed, **anatomy)
    image = _bmode.scan_convert(frame.bmode, _bmode.fan_geometry(size))
    return image, frame.truth


# ----------------------------------------------------------------------------- sweeps

def _smooth_walk(rng: np.random.Generator, n: int, correlation: float) -> np.ndarray:
    """Smooth random walk of ``n`` steps with unit marginal std (Gaussian-filtered white noise)."""
    pad = int(3 * correlation) + 1
    z = ndimage.gaussian_filter1d(rng.standard_normal(n + 2 * pad), correlation, mode="wrap")
    z = z[pad:pad + n]
    std = math.sqrt(1.0 / (2.0 * math.sqrt(math.pi) * correlation)) if correlation > 0 else 1.0
    return z / std


def _check_ranges(ranges: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    unknown = set(ranges) - set(DEFAULT_RANGES)
    if unknown:
        raise ConfigError(f"unknown range(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(DEFAULT_RANGES)}")
    out = dict(DEFAULT_RANGES)
    for name, value in ranges.items():
        try:
            lo, hi = (float(x) for x in value)
        except (TypeError, ValueError):
            raise ConfigError(f"range {name} must be a pair (low, high), got {value!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ConfigError(f"range {name} must satisfy low <= high, got {value!r}")
        if name in ("noise", "shadow", "motion") and (lo < 0 or hi > 1):
            raise ConfigError(f"range {name} must lie within [0, 1], got {value!r}")
        if name == "offset" and lo < 0:
            raise ConfigError(f"range offset gives |start| and |end| of the sweep, must be >= 0, "
                             f"got {value!r}")
        out[name] = (lo, hi)
    return out


def sweep_parameters(plane: str, n_frames: int, *, seed: int,
                     **ranges: tuple[float, float]) -> list[dict[str, Any]]:
    """Per-frame parameters of a sweep (without rendering); see :func:`simulate_sweep`."""
    if plane not in PLANES:
        raise ConfigError(f"unknown plane {plane!r}; choose one of {', '.join(PLANES)}")
    n = _check_frames(n_frames)
    rg = _check_ranges(ranges)
    rng = np.random.default_rng(seed)
    anat = plane_anatomy(plane)
    corr = max(1.5, n / 12.0)

    # elevation path through the standard plane: the sweep speed varies smoothly
    # and slows down near the standard plane (the sonographer lingers there)
    start = -rng.uniform(*rg["offset"])
    end = rng.uniform(*rg["offset"])
    if rng.random() < 0.5:
        start, end = -start, -end
    grid = np.linspace(start, end, 512)
    speed = (0.3 + 0.7 * (1.0 - np.exp(-(grid / 6.0) ** 2))) * np.exp(
        0.3 * _smooth_walk(rng, grid.size, grid.size / 8.0))
    elapsed = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(grid)) * 0.5
                                               * (1.0 / speed[1:] + 1.0 / speed[:-1]))])
    if n > 1 and elapsed[-1] > 0:
        offsets = np.interp(np.linspace(0.0, elapsed[-1], n), elapsed, grid)
    else:
        offsets = np.full(n, 0.5 * (start + end))

    # acquisition factors: per sweep severity x smooth walk within [low, high];
    # motion and shadow also get short bursts (fetal movement, a limb passing)
    acq = {}
    frames_idx = np.arange(n)
    for name in ("tilt", "gain", "focus_error", "noise", "shadow", "motion"):
        lo, hi = rg[name]
        clean = min(max(0.0, lo), hi)
        severity = rng.uniform() ** 1.5  # most sweeps mildly degraded, a few badly
        walk = ndtr(_smooth_walk(rng, n, corr))
        values = clean + (lo + (hi - lo) * walk - clean) * severity
        if name in ("shadow", "motion"):
            for _ in range(rng.poisson(0.025 * n)):
                centre, width, height = rng.uniform(0, n), rng.uniform(1.0, 3.0), rng.uniform(0.2, 0.7)
                values = values + (hi - clean) * height * np.exp(
                    -0.5 * ((frames_idx - centre) / width) ** 2)
        acq[name] = np.clip(values, lo, hi)

    # anatomy and probe pose: per sweep draw, slow drift, motion jitter
    rotation = rng.uniform(*anat.rotation_range)
    flip = bool(rng.random() < 0.5)
    scale = rng.uniform(0.88, 1.12)
    cx = rng.uniform(-10.0, 10.0)
    cdepth = _CENTER_DEPTH + rng.uniform(-4.0, 4.0)
    attenuation = rng.uniform(2.6, 3.4)
    lateral = math.degrees(math.atan2(cx, _bmode.PROBE_RADIUS_MM + cdepth))
    spread = math.degrees(anat.radius * scale / (_bmode.PROBE_RADIUS_MM + cdepth))
    shadow_angle = lateral + rng.uniform(-0.6, 0.6) * spread
    motion_angle = rng.uniform(0.0, 180.0)
    drift = {k: _smooth_walk(rng, n, corr) for k in ("x", "z", "rot", "shadow", "motion")}
    jitter = rng.standard_normal((3, n))
    seeds = rng.integers(0, 2**31 - 1, size=n)

    frames = []
    for i in range(n):
        m = float(acq["motion"][i])
        p = {
            "offset": offsets[i],
            "tilt": acq["tilt"][i],
            "gain": acq["gain"][i],
            "focus_error": acq["focus_error"][i],
            "noise": acq["noise"][i],
            "shadow": acq["shadow"][i],
            "motion": m,
            "rotation": rotation + 3.0 * drift["rot"][i] + 2.0 * m * jitter[0, i],
            "flip": flip,
            "scale": scale,
            "center_x": cx + 2.5 * drift["x"][i] + 1.5 * m * jitter[1, i],
            "center_depth": cdepth + 1.5 * drift["z"][i] + 1.5 * m * jitter[2, i],
            "shadow_angle": shadow_angle + 2.0 * drift["shadow"][i],
            "motion_angle": (motion_angle + 15.0 * drift["motion"][i]) % 180.0,
            "attenuation": attenuation,
        }
        p = {k: (v if isinstance(v, bool) else round(float(v), 4)) for k, v in p.items()}
        for k in ("noise", "shadow", "motion"):
            p[k] = min(max(p[k], 0.0), 1.0)
        p["seed"] = int(seeds[i])
        frames.append(p)
    return frames


def _check_frames(n_frames: Any, size=None, *, minimum: int = 1, maximum: int = MAX_SWEEP_PIXELS // 32**2) -> int:
    """``n_frames`` if it is an integer in [minimum, maximum] and, with ``size``, a sweep of that many frames stays
    within :data:`MAX_SWEEP_PIXELS`; else :class:`ConfigError`. The default maximum is that bound at the smallest
    frames (32 x 32, :func:`~crl_uiqa.data.bmode.check_size`): a frame's parameters take less than its pixels."""
    n = validate.integer("n_frames (--frames)", n_frames, minimum=minimum, maximum=maximum)
    if size is not None:
        h, w = _bmode.check_size(size)
        if n * h * w > MAX_SWEEP_PIXELS:
            raise ConfigError(f"a sweep of {n} frames of {h}x{w} pixels (--frames, --size) would take "
                              f"{n * h * w * 4 / 2**30:.1f} GiB; at most {MAX_SWEEP_PIXELS // (h * w)} frames of "
                              "that size (4 GiB): ask for fewer frames or smaller ones")
    return n


def simulate_sweep(plane: str, n_frames: int, *, seed: int, size=(256, 320),
                   **ranges: tuple[float, float]) -> tuple[np.ndarray, list[dict]]:
    """Simulate a freehand sweep of the probe through a standard plane.

    The imaging plane moves continuously through the standard plane: ``offset``
    goes from ``-U(low, high)`` to ``+U(low, high)`` (direction random, speed
    varying smoothly and slowing down to 30 % near the standard plane, where a
    sonographer lingers). The acquisition factors follow smooth random walks
    (Gaussian-filtered noise mapped into their range, scaled by a per-sweep
    severity ``U(0, 1) ** 1.5``), and ``motion`` and ``shadow`` get short bursts
    (fetal movement, a limb passing), so that some sweeps and some stretches of
    a sweep are degraded; the fetus pose is drawn per sweep and drifts slowly,
    with a jitter proportional to ``motion``.

    Parameters
    ----------
    plane : {"abdomen", "4ch", "head"}
    n_frames : int
        Number of frames.
    seed : int
        Seed of everything (the same seed gives identical frames).
    size : (int, int)
        Frame size ``(H, W)``.
    **ranges : (low, high)
        Override :data:`DEFAULT_RANGES`: ``offset`` bounds ``|start|`` and
        ``|end|`` of the sweep (mm); ``tilt`` (deg), ``gain`` (dB),
        ``focus_error`` (mm), ``noise``, ``shadow``, ``motion`` (in [0, 1]) bound
        their random walks (``(0, 0)`` switches a degradation off).

    Returns
    -------
    frames : ndarray, float32, shape (n_frames, H, W)
    truths : list of dict
        Per frame the ground truth of :func:`simulate_frame`; rendering
        ``simulate_frame(plane, **{k: t[k] for k in PARAMETERS}, seed=t["seed"], size=size)``
        reproduces the frame exactly.
    """
    _check_frames(n_frames, size)
    params = sweep_parameters(plane, n_frames, seed=seed, **ranges)
    h, w = _bmode.check_size(size)
    frames = np.empty((len(params), h, w), dtype=np.float32)
    truths = []
    for i, p in enumerate(params):
        kwargs = {k: p[k] for k in PARAMETERS}
        frames[i], truth = simulate_frame(plane, size=(h, w), seed=p["seed"], **kwargs)
        truths.append(truth)
    return frames, truths


# ----------------------------------------------------------------------------- dataset

@dataclass(frozen=True)
class SimulatedDataset:
    """Where :func:`simulate_dataset` wrote a simulated dataset.

    Attributes
    ----------
    root : Path
        Output folder.
    train_dir : Path
        ``root/train/<sweep_id>/<frame:04d>.png``: unlabeled training pool.
    references_dir : Path
        ``root/references/<sweep_id>.png``: best frame of each reference sweep.
    test_dir : Path
        ``root/test/<sweep_id>/<frame:04d>.png``: held-out sweeps.
    manifest_csv : Path
        One row per image: path, split, sweep, frame, plane, true_quality,
        parameters.
    pairs_csv : Path
        Test pairs ``better,worse,type`` (paths relative to ``root``).
    n_train, n_references, n_test, n_pairs : int
        Number of images per split and of pairs written.
    """

    root: Path
    train_dir: Path
    references_dir: Path
    test_dir: Path
    manifest_csv: Path
    pairs_csv: Path
    n_train: int = 0
    n_references: int = 0
    n_test: int = 0
    n_pairs: int = 0


#: manifest.csv columns.
MANIFEST_FIELDS: tuple[str, ...] = (
    ("path", "split", "sweep", "frame", "plane", "true_quality")
    + PARAMETERS + ("seed", "plane_closeness", "acquisition_factor")
)
_MARKER = "simulation.json"


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    data = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(data, mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _sweep_seed(seed: int, plane: str, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), PLANES.index(plane), int(index)])
               .generate_state(1)[0])


#: the files a simulation writes in its folders (relative to its root, as the manifest names them): what a rerun
#: may delete. Sweep ids are ``<plane>_s<NNN>``, frames ``<NNNN>.png``
_SWEEP_ID = "(?:" + "|".join(map(re.escape, PLANES)) + r")_s\d{3,}"
_WRITTEN = re.compile(rf"(?:train|test)/{_SWEEP_ID}/\d{{4,}}\.png|references/{_SWEEP_ID}\.png")
_FOLDERS = ("train", "references", "test")


def _prepare_out(root: Path) -> None:
    """Create ``root``; clear a previous simulation there, refuse foreign content (the one policy of
    :func:`crl_uiqa.files.check_outputs_free`: what no crl-uiqa run wrote is never replaced, and a rerun deletes
    train/, references/ and test/ whole, so everything in them counts)."""
    root.mkdir(parents=True, exist_ok=True)
    ours = (*_FOLDERS, "manifest.csv", "pairs.csv", _MARKER)
    present = [name for name in ours if (root / name).exists() or (root / name).is_symlink()]
    if not present:
        return
    # a simulation written before crl-uiqa kept a record of its outputs (none in the folder): its marker and manifest
    # beside its layout of files (links are refused by check_outputs_free)
    earlier = (not (root / OUTPUTS_RECORD).exists() and all((root / n).is_file() and not (root / n).is_symlink()
                                                            for n in (_MARKER, "manifest.csv")))
    check_outputs_free(root, present,
                       also=lambda rel: earlier and (rel in ours or _WRITTEN.fullmatch(rel) is not None))
    for name in present:
        target = root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def _pair_type(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    d_plane = abs(math.log(a["plane_closeness"]) - math.log(b["plane_closeness"]))
    d_acq = abs(math.log(a["acquisition_factor"]) - math.log(b["acquisition_factor"]))
    return "plane" if d_plane >= d_acq else "acquisition"


def make_pairs(rows: Iterable[Mapping[str, Any]], *, margin: float = 0.15, n_pairs: int = 400,
               seed: int = 0) -> list[dict[str, str]]:
    """Pairs of frames of the same sweep whose ``true_quality`` differ by at least ``margin``.

    ``rows`` are manifest rows (``path``, ``sweep``, ``true_quality``,
    ``plane_closeness``, ``acquisition_factor``). All qualifying pairs are listed;
    if there are more than ``n_pairs``, up to half of them are drawn at random
    from each type (the rest from the other type), deterministically for
    ``seed``. The result is sorted by sweep and path. Each pair is
    ``{"better", "worse", "type"}`` where ``type`` is ``"plane"`` when the
    plane-closeness factors differ more than the acquisition factors (in log
    scale: ``|d log plane_closeness| >= |d log acquisition_factor|``) and
    ``"acquisition"`` otherwise.
    """
    if margin <= 0:
        raise ConfigError(f"pair margin must be > 0, got {margin!r}")
    by_sweep: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_sweep.setdefault(str(r["sweep"]), []).append(r)
    candidates = []
    for sweep in sorted(by_sweep):
        items = sorted(by_sweep[sweep], key=lambda r: r["path"])
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                a, b = items[i], items[j]
                qa, qb = float(a["true_quality"]), float(b["true_quality"])
                if abs(qa - qb) < margin:
                    continue
                better, worse = (a, b) if qa > qb else (b, a)
                candidates.append((sweep, better["path"], worse["path"], _pair_type(a, b)))
    if n_pairs < len(candidates):
        # draw up to half of the pairs from each type, the rest from the other one
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
        by_type = {t: [c for c in candidates if c[3] == t] for t in ("acquisition", "plane")}
        n_acq = min(len(by_type["acquisition"]), n_pairs // 2)
        n_plane = min(len(by_type["plane"]), n_pairs - n_acq)
        n_acq = min(len(by_type["acquisition"]), n_pairs - n_plane)
        chosen = []
        for t, k in (("acquisition", n_acq), ("plane", n_plane)):
            pool = by_type[t]
            keep = rng.choice(len(pool), size=k, replace=False)
            chosen += [pool[i] for i in keep]
        candidates = chosen
    candidates.sort()
    return [{"better": b, "worse": w, "type": t} for _, b, w, t in candidates]


@holds_output_dir("out_dir")
def simulate_dataset(
    out_dir,
    *,
    planes=("abdomen",),
    n_train_sweeps: int = 12,
    n_reference_sweeps: int = 6,
    n_test_sweeps: int = 4,
    n_frames: int = 40,
    size=(256, 320),
    seed: int = 0,
    progress: bool = True,
    n_pairs: int = 400,
    pair_margin: float = 0.15,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    reference_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> SimulatedDataset:
    """Write a simulated fetal ultrasound dataset for CRL-UIQA (8-bit PNGs + CSVs).

    Layout under ``out_dir``:

    * ``train/<sweep_id>/<frame:04d>.png`` - all frames of the training sweeps
      (the unlabeled pool);
    * ``references/<sweep_id>.png`` - the best frame (max ``true_quality``) of
      each reference sweep, the high-quality standard planes a sonographer
      would pick; reference sweeps are acquired with :data:`REFERENCE_RANGES`
      (careful acquisitions) and are not used elsewhere;
    * ``test/<sweep_id>/<frame:04d>.png`` - held-out sweeps;
    * ``manifest.csv`` - one row per image (:data:`MANIFEST_FIELDS`);
    * ``pairs.csv`` - ``better,worse,type`` test pairs from :func:`make_pairs`
      (same sweep, quality difference >= ``pair_margin``, at most ``n_pairs``
      per plane);
    * ``simulation.json`` - the settings used.

    Sweep ids are ``<plane>_s<NNN>``, numbered per plane over train, reference
    and test sweeps in this order. Everything is deterministic for ``seed``
    (same bytes). Writing into a folder that holds a previous simulation
    replaces it; a folder with other ``train``/``test`` content is refused. The
    folder is held for the call (:func:`crl_uiqa.files.output_lock`): while
    another run fills it, the call is refused before anything there changes.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created).
    planes : sequence of str
        Planes to simulate (:data:`PLANES`); each gets its own sweeps.
    n_train_sweeps, n_reference_sweeps, n_test_sweeps : int
        Number of sweeps per plane and split.
    n_frames : int
        Frames per sweep.
    size : (int, int)
        Frame size ``(H, W)``.
    seed : int
        Seed of the whole dataset.
    progress : bool
        Show a progress bar (when attached to a terminal).
    n_pairs : int
        Maximum number of test pairs per plane.
    pair_margin : float
        Minimum ``true_quality`` difference of a pair.
    ranges, reference_ranges : dict or None
        Overrides of :data:`DEFAULT_RANGES` for the train/test sweeps, and the
        ranges of the reference sweeps (default :data:`REFERENCE_RANGES`); see
        :func:`simulate_sweep`.

    Returns
    -------
    SimulatedDataset
    """
    from ..progress import progress as _progress

    if isinstance(planes, str):
        planes = (planes,)
    planes = tuple(planes)
    if not planes:
        raise ConfigError("planes must name at least one plane")
    for p in planes:
        if p not in PLANES:
            raise ConfigError(f"unknown plane {p!r}; choose from {', '.join(PLANES)}")
    if len(set(planes)) != len(planes):
        raise ConfigError(f"planes must not repeat, got {planes!r}")
    n_train_sweeps = validate.integer("n_train_sweeps (--sweeps)", n_train_sweeps, minimum=1)
    n_reference_sweeps = validate.integer("n_reference_sweeps (--reference-sweeps)", n_reference_sweeps, minimum=0)
    n_test_sweeps = validate.integer("n_test_sweeps (--test-sweeps)", n_test_sweeps, minimum=0)
    n_frames = _check_frames(n_frames, size, minimum=2, maximum=MAX_FRAMES)
    sweeps = n_train_sweeps + n_reference_sweeps + n_test_sweeps
    if (total := len(planes) * sweeps * n_frames) > MAX_DATASET_FRAMES:
        raise ConfigError(f"the simulation would render {total} frames ({len(planes)} "
                          f"plane(s) x {sweeps} sweeps (--sweeps + --reference-sweeps + --test-sweeps) x {n_frames} "
                          f"frames (--frames)); at most {MAX_DATASET_FRAMES}: ask for fewer sweeps or frames")
    h, w = _bmode.check_size(size)
    train_ranges = dict(ranges or {})
    ref_ranges = dict(REFERENCE_RANGES if reference_ranges is None else reference_ranges)
    _check_ranges(train_ranges)
    _check_ranges(ref_ranges)
    # every setting before anything in the output folder changes (the lock of holds_output_dir comes first and
    # leaves nothing): a bad one must not cost the previous simulation there
    seed = validate.integer("seed (--seed)", seed, minimum=0)
    n_pairs = validate.integer("n_pairs (--pairs)", n_pairs, minimum=0)
    pair_margin = validate.real("pair_margin (--pair-margin)", pair_margin, minimum=0.0, strict_min=True)
    if not str(out_dir).strip():
        raise ConfigError("the output folder (--out) must not be empty")

    root = Path(out_dir)
    _prepare_out(root)
    config = {
        "generator": "crl_uiqa.data.simulate", "planes": list(planes),
        "n_train_sweeps": int(n_train_sweeps), "n_reference_sweeps": int(n_reference_sweeps),
        "n_test_sweeps": int(n_test_sweeps), "n_frames": int(n_frames), "size": [h, w],
        "seed": int(seed), "n_pairs": int(n_pairs), "pair_margin": float(pair_margin),
        "ranges": {**DEFAULT_RANGES, **train_ranges}, "reference_ranges": ref_ranges,
    }
    write_json(root / _MARKER, config)

    plan = []  # (plane, split, index)
    for plane in planes:
        k = 0
        for split, count in (("train", n_train_sweeps), ("reference", n_reference_sweeps),
                             ("test", n_test_sweeps)):
            for _ in range(int(count)):
                plan.append((plane, split, k))
                k += 1

    manifest: list[dict[str, Any]] = []
    for plane, split, k in _progress(plan, desc="simulating sweeps", unit="sweep", enabled=progress):
        sweep_id = f"{plane}_s{k:03d}"
        sweep_ranges = ref_ranges if split == "reference" else train_ranges
        frames, truths = simulate_sweep(plane, int(n_frames), seed=_sweep_seed(seed, plane, k),
                                        size=(h, w), **sweep_ranges)
        if split == "reference":
            best = int(np.argmax([t["true_quality"] for t in truths]))
            selected = [(best, f"references/{sweep_id}.png")]
        else:
            folder = "train" if split == "train" else "test"
            selected = [(i, f"{folder}/{sweep_id}/{i:04d}.png") for i in range(len(truths))]
        for i, rel in selected:
            write_bytes(root / rel, _png_bytes(frames[i]))
            row = {"path": rel, "split": split, "sweep": sweep_id, "frame": i}
            row.update(truths[i])
            manifest.append(row)

    manifest_csv = write_csv(root / "manifest.csv", manifest, MANIFEST_FIELDS)
    pairs = []
    for p_idx, plane in enumerate(planes):
        test_rows = [r for r in manifest if r["split"] == "test" and r["plane"] == plane]
        pairs += make_pairs(test_rows, margin=pair_margin, n_pairs=n_pairs,
                            seed=int(np.random.SeedSequence([int(seed), p_idx]).generate_state(1)[0]))
    pairs_csv = write_csv(root / "pairs.csv", pairs, ("better", "worse", "type"))
    n_split = {s: sum(1 for r in manifest if r["split"] == s) for s in ("train", "reference", "test")}
    log.debug("simulated %d train, %d reference, %d test images and %d pairs in %s",
             n_split["train"], n_split["reference"], n_split["test"], len(pairs), root)
    return SimulatedDataset(
        root=root, train_dir=root / "train", references_dir=root / "references",
        test_dir=root / "test", manifest_csv=manifest_csv, pairs_csv=pairs_csv,
        n_train=n_split["train"], n_references=n_split["reference"], n_test=n_split["test"],
        n_pairs=len(pairs),
    )
