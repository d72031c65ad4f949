"""B-mode image formation for the ultrasound simulator: fan geometry, speckle, log compression.

The simulator works in the polar (depth x angle) coordinates of a curvilinear
probe: every column of a polar array is one A-line (a beam direction), every row
one depth sample. This module turns a polar map of echogenicity into a B-mode
image the way a scanner does:

1. **Scatterers.** Each polar sample holds a circular complex Gaussian scatterer
   whose amplitude is ``sqrt(echogenicity)`` times the transmission of the beam
   down to that depth (tissue attenuation and acoustic shadows).
2. **Point-spread function.** The scatterer field is convolved (with FFTs)
   with a Gaussian axial pulse envelope (complex base-band, so no carrier is
   needed) and a Gaussian lateral beam profile whose width grows away from the
   focal depth, ``sigma(r) = sigma0 * sqrt(1 + ((r - r_focus) / z_R)^2)``
   (the Gaussian-beam law). The kernels are normalised to unit energy so that a
   region of uniform echogenicity ``E`` has mean intensity ``E``.
3. **Electronic noise** (complex Gaussian) is added to the IQ signal, then the
   **envelope** ``|IQ|`` is detected. For a uniform region the envelope is
   Rayleigh distributed: mean / std = sqrt(pi / (4 - pi)) ~= 1.913
   (fully developed speckle).
4. **Time-gain compensation** multiplies the envelope by the inverse of the
   nominal depth attenuation (which also amplifies the noise with depth), an
   optional incoherent **motion blur** averages the intensity along the probe
   motion, and **log compression** maps ``20 log10(envelope) + gain`` over a
   fixed dynamic range to [0, 1].
5. **Scan conversion** resamples the polar image onto the Cartesian fan with
   :func:`scipy.ndimage.map_coordinates`; pixels outside the fan are black (0).

All lengths are in millimetres; the geometry of a given output size is computed
once and cached.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from ..errors import ConfigError, InputError

__all__ = [
    "FanGeometry",
    "check_size",
    "fan_geometry",
    "lateral_sigma",
    "sampled_gaussian_transfer",
    "speckle_envelope",
    "motion_blur",
    "log_compress",
    "scan_convert",
    "RAYLEIGH_MEAN_OVER_STD",
]

#: mean / standard deviation of a Rayleigh distributed envelope (fully developed speckle).
RAYLEIGH_MEAN_OVER_STD = math.sqrt(math.pi / (4.0 - math.pi))

#: virtual apex of the curvilinear probe above the skin line (mm); the probe radius.
PROBE_RADIUS_MM = 40.0
#: imaging depth below the skin line (mm).
DEPTH_MM = 110.0
#: half opening angle of the fan (degrees).
HALF_ANGLE_DEG = 30.0


@dataclass(frozen=True, eq=False)
class FanGeometry:
    """Polar sampling grid and scan-conversion map of the simulated curvilinear probe.

    Attributes
    ----------
    size : tuple of int
        Output image size ``(H, W)`` in pixels.
    n_depth, n_lines : int
        Polar grid size: depth samples per A-line and number of A-lines.
    r0, r1 : float
        Radii (mm from the virtual apex) of the first and last depth sample;
        ``r0`` is the skin line (probe face), ``r1 - r0`` the imaging depth.
    half_angle : float
        Half opening angle of the fan in radians.
    radius : ndarray, shape (n_depth,)
        Radius of each depth sample (mm).
    angle : ndarray, shape (n_lines,)
        Steering angle of each A-line (radians, 0 = straight down, positive to
        the right of the image).
    x, z : ndarray, shape (n_depth, n_lines)
        Cartesian position (mm) of every polar sample: ``x`` lateral (positive to
        the image right), ``z`` depth below the virtual apex.
    pixel_mm : float
        Size of an output pixel (mm, square pixels).
    fan_index : ndarray of intp
        Flat indices of the output pixels that lie inside the fan.
    fan_coords : ndarray, shape (2, n_fan)
        Fractional (depth index, line index) of those pixels in the polar grid,
        the coordinates handed to :func:`scipy.ndimage.map_coordinates`.
    """

    size: tuple[int, int]
    n_depth: int
    n_lines: int
    r0: float
    r1: float
    half_angle: float
    radius: np.ndarray
    angle: np.ndarray
    x: np.ndarray
    z: np.ndarray
    pixel_mm: float
    fan_index: np.ndarray
    fan_coords: np.ndarray

    @property
    def dr(self) -> float:
        """Depth sample spacing (mm)."""
        return (self.r1 - self.r0) / (self.n_depth - 1)

    @property
    def dtheta(self) -> float:
        """Angular spacing of the A-lines (radians)."""
        return 2.0 * self.half_angle / (self.n_lines - 1)

    @property
    def fan_mask(self) -> np.ndarray:
        """Boolean (H, W) mask of the pixels inside the fan."""
        mask = np.zeros(self.size[0] * self.size[1], dtype=bool)
        mask[self.fan_index] = True
        return mask.reshape(self.size)

    def pixel_to_world(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map output pixel coordinates to Cartesian millimetres ``(x, z)``."""
        h, w = self.size
        fan_height = self.r1 - self.r0 * math.cos(self.half_angle)
        z_top = self.r0 * math.cos(self.half_angle) - (h * self.pixel_mm - fan_height) / 2.0
        x = (np.asarray(col, dtype=np.float64) + 0.5 - w / 2.0) * self.pixel_mm
        z = z_top + (np.asarray(row, dtype=np.float64) + 0.5) * self.pixel_mm
        return x, z


def check_size(size) -> tuple[int, int]:
    """Validate an image size ``(H, W)`` (32 to 4096 pixels per side) and return it as ints."""
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be two integers (H, W), got {size!r}") from None
    if h < 32 or w < 32 or h > 4096 or w > 4096:
        raise ConfigError(f"size must be between 32 and 4096 pixels per side, got {size!r}")
    return h, w


@functools.lru_cache(maxsize=8)
def _fan_geometry(h: int, w: int) -> FanGeometry:
    r0 = PROBE_RADIUS_MM
    r1 = PROBE_RADIUS_MM + DEPTH_MM
    half = math.radians(HALF_ANGLE_DEG)
    n_depth = h
    n_lines = max(48, int(round(0.6 * w)))
    radius = np.linspace(r0, r1, n_depth)
    angle = np.linspace(-half, half, n_lines)
    x = (radius[:, None] * np.sin(angle)[None, :]).astype(np.float32)
    z = (radius[:, None] * np.cos(angle)[None, :]).astype(np.float32)

    fan_width = 2.0 * r1 * math.sin(half)
    fan_height = r1 - r0 * math.cos(half)
    pixel_mm = 1.02 * max(fan_width / w, fan_height / h)
    geo = FanGeometry(
        size=(h, w), n_depth=n_depth, n_lines=n_lines, r0=r0, r1=r1, half_angle=half,
        radius=radius, angle=angle, x=x, z=z, pixel_mm=pixel_mm,
        fan_index=np.empty(0, dtype=np.intp), fan_coords=np.empty((2, 0)),
    )
    rows, cols = np.mgrid[0:h, 0:w]
    px, pz = geo.pixel_to_world(rows, cols)
    r = np.hypot(px, pz)
    theta = np.arctan2(px, pz)
    inside = (r >= r0) & (r <= r1) & (np.abs(theta) <= half)
    fan_index = np.flatnonzero(inside)
    coords = np.stack([
        (r.ravel()[fan_index] - r0) / (r1 - r0) * (n_depth - 1),
        (theta.ravel()[fan_index] + half) / (2 * half) * (n_lines - 1),
    ]).astype(np.float32)
    for arr in (radius, angle, x, z, fan_index, coords):
        arr.setflags(write=False)
    object.__setattr__(geo, "fan_index", fan_index)
    object.__setattr__(geo, "fan_coords", coords)
    return geo


def fan_geometry(size=(256, 320)) -> FanGeometry:
    """Return the (cached) :class:`FanGeometry` for an output image of ``size = (H, W)``.

    The fan (60 degree sector, 110 mm deep, 40 mm probe radius) is centred in the
    image with square pixels. The polar grid has ``H`` depth samples and
    ``0.6 * W`` A-lines.
    """
    return _fan_geometry(*check_size(size))


def lateral_sigma(radius: np.ndarray, focus_mm: float, sigma0_mm: float = 0.8,
                  rayleigh_mm: float = 16.0) -> np.ndarray:
    """Lateral Gaussian beam width (mm, standard deviation) at each radius.

    ``sigma(r) = sigma0 * sqrt(1 + ((r - focus) / z_R)^2)``: narrowest at the
    focal depth ``focus_mm`` (a radius, mm from the apex) and widening on both
    sides with the Rayleigh range ``rayleigh_mm``.
    """
    radius = np.asarray(radius, dtype=np.float64)
    return sigma0_mm * np.sqrt(1.0 + ((radius - focus_mm) / rayleigh_mm) ** 2)


def sampled_gaussian_transfer(freq: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """DFT of a Gaussian kernel sampled at the integers, ``sum_k exp(-2 pi^2 sigma^2 (f - k)^2)``.

    By Poisson summation this is the exact spectrum of the sampled (and, on an
    FFT grid, circularly wrapped) Gaussian ``exp(-n^2 / (2 sigma^2))``, a
    non-negative kernel. Simply sampling ``exp(-2 pi^2 sigma^2 f^2)`` instead
    truncates the spectrum at the Nyquist frequency, which for narrow kernels
    makes sinc-like side lobes (visible streaks next to bright bone in a log
    image).

    Parameters
    ----------
    freq : ndarray, shape (F,)
        Frequencies in cycles per sample (``fftfreq`` or ``rfftfreq``).
    sigma : ndarray, shape (K,)
        Kernel standard deviations in samples.

    Returns
    -------
    ndarray, float32, shape (K, F)
        The sum over the aliases ``k = -1, 0, 1`` (for ``|f| <= 1/2`` the next
        ones are below ``exp(-4.5 pi^2 sigma^2)``, 1e-7 at ``sigma = 0.6``).
    """
    af = np.abs(np.asarray(freq, dtype=np.float32))[None, :]
    a = (np.float32(2.0 * np.pi ** 2)
         * np.atleast_1d(np.asarray(sigma, dtype=np.float32)) ** 2)[:, None]
    return np.exp(-a * af ** 2) + np.exp(-a * (1.0 - af) ** 2) + np.exp(-a * (1.0 + af) ** 2)


@functools.lru_cache(maxsize=32)
def _axial_transfer(n: int, sigma: float) -> np.ndarray:
    return _gaussian_transfer(n, np.array([sigma]))[0]


def _gaussian_transfer(n: int, sigma: np.ndarray) -> np.ndarray:
    """Unit-energy Gaussian transfer functions for ``n``-point complex FFTs, float32.

    ``sigma`` (in samples) may be an array: one transfer function per entry,
    stacked on a leading axis. Unit energy (mean |H|^2 = 1) keeps the mean
    intensity of white complex scatterers unchanged.
    """
    h = sampled_gaussian_transfer(scipy.fft.fftfreq(n), sigma)
    h /= np.sqrt(np.mean(h * h, axis=1, keepdims=True))
    return h


def speckle_envelope(
    amplitude: np.ndarray,
    *,
    rng: np.random.Generator,
    axial_sigma: float = 0.7,
    lateral_sigma: float | np.ndarray = 1.0,
    noise_std: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Envelope of the echo from a field of random scatterers (before log compression).

    Every polar sample holds one scatterer with a circular complex Gaussian
    amplitude (the sum of many sub-resolution scatterers with random phases)
    scaled by ``amplitude``; after the linear PSF the IQ signal is still
    circular Gaussian, so the envelope is Rayleigh distributed.

    Parameters
    ----------
    amplitude : ndarray, shape (n_depth, n_lines)
        Scatterer amplitude per polar sample (``sqrt`` of the local intensity
        reflectivity times the beam transmission). A uniform field gives fully
        developed speckle.
    rng : numpy.random.Generator
        Source of the scatterers and of the noise.
    axial_sigma : float
        Standard deviation of the Gaussian axial pulse envelope, in depth samples.
    lateral_sigma : float or ndarray of shape (n_depth,)
        Standard deviation of the lateral beam profile in A-line units, either
        constant or one value per depth (focusing).
    noise_std : float
        Standard deviation of the circular complex electronic noise added to the
        IQ signal (before envelope detection); 0 adds none.

    Returns
    -------
    ndarray, float32, shape (n_depth, n_lines)
        The envelope ``|IQ|``. For a uniform amplitude ``a`` and no noise its
        mean intensity is ``a**2`` and its mean/std ratio is ~1.913 (Rayleigh).
    """
    amplitude = np.asarray(amplitude, dtype=np.float32)
    if amplitude.ndim != 2:
        raise InputError(f"amplitude must be a 2-D (depth, lines) array, got shape {amplitude.shape}")
    n_r, n_a = amplitude.shape
    lat = np.broadcast_to(np.asarray(lateral_sigma, dtype=np.float64), (n_r,))
    if axial_sigma <= 0 or np.any(lat <= 0):
        raise ConfigError("axial_sigma and lateral_sigma must be positive")
    if noise_std < 0:
        raise ConfigError(f"noise_std must be >= 0, got {noise_std!r}")
    # Zero padding keeps the circular FFT convolution from wrapping the far
    # field onto the near field (and the left fan edge onto the right one).
    pad_r = scipy.fft.next_fast_len(n_r + int(math.ceil(3 * axial_sigma)) + 1)
    pad_a = scipy.fft.next_fast_len(n_a + int(math.ceil(3 * float(lat.max()))) + 1)

    # unit-variance normal real and imaginary parts times sqrt(1/2): E|s|^2 = amplitude^2
    scat = rng.standard_normal((2, n_r, n_a), dtype=np.float32)
    scale = amplitude * np.float32(math.sqrt(0.5))
    field = np.zeros((pad_r, pad_a), dtype=np.complex64)
    field.real[:n_r, :n_a] = scat[0] * scale
    field.imag[:n_r, :n_a] = scat[1] * scale

    spec = scipy.fft.fft(field, axis=0, workers=1, overwrite_x=True)
    spec *= _axial_transfer(pad_r, float(axial_sigma))[:, None]
    field = scipy.fft.ifft(spec, axis=0, workers=1, overwrite_x=True)[:n_r]
    spec = scipy.fft.fft(field, axis=1, workers=1)
    spec *= _gaussian_transfer(pad_a, lat)
    iq = scipy.fft.ifft(spec, axis=1, workers=1, overwrite_x=True)[:, :n_a]

    if noise_std > 0:  # drawn after the scatterers: the speckle does not depend on the noise level
        noise = rng.standard_normal((2, n_r, n_a), dtype=np.float32)
        k = np.float32(noise_std * math.sqrt(0.5))
        return np.hypot(iq.real + noise[0] * k, iq.imag + noise[1] * k)
    return np.abs(iq)


def motion_blur(envelope: np.ndarray, geometry: FanGeometry, *, length_mm: float,
                angle_deg: float) -> np.ndarray:
    """Incoherent blur of the envelope along a straight probe-motion path.

    The intensity (envelope squared) is averaged along the motion, as a scanner
    averaging frames while the probe moves: a path of ``length_mm`` at
    ``angle_deg`` (0 = lateral, 90 = axial) is split into its lateral and axial
    extents, each applied as a Gaussian of the same variance as the uniform
    path (``sigma = extent / sqrt(12)``; Gaussian rather than box kernels avoid
    ringing around bright bone). The lateral blur is converted to A-lines at
    each depth and applied with FFTs. Returns the blurred envelope (same shape).
    """
    if length_mm <= 0:
        return envelope
    n_r, n_a = envelope.shape
    # float64: the intensity spans > 100 dB and float32 FFT round-off would show in the log image
    intensity = envelope.astype(np.float64) ** 2
    ang = math.radians(angle_deg)
    lat_sigma = abs(length_mm * math.cos(ang)) / math.sqrt(12.0)
    ax_sigma = abs(length_mm * math.sin(ang)) / math.sqrt(12.0)
    if lat_sigma > 1e-3:
        sig = lat_sigma / (geometry.radius * geometry.dtheta)  # in A-lines, per depth
        pad = scipy.fft.next_fast_len(n_a + int(math.ceil(4 * sig.max())) + 2)
        h = sampled_gaussian_transfer(scipy.fft.rfftfreq(pad), sig)
        h /= h[:, :1]  # unit gain at DC: the mean intensity is preserved
        padded = np.pad(intensity, ((0, 0), (0, pad - n_a)), mode="edge")
        intensity = scipy.fft.irfft(scipy.fft.rfft(padded, axis=1, workers=1) * h, n=pad, axis=1,
                                    workers=1)[:, :n_a]
    if ax_sigma > 1e-3:
        intensity = ndimage.gaussian_filter1d(intensity, ax_sigma / geometry.dr, axis=0,
                                              mode="nearest")
    return np.sqrt(np.clip(intensity, 0.0, None)).astype(np.float32)


def log_compress(envelope: np.ndarray, *, gain_db: float = 0.0, white_db: float = 20.0,
                 dynamic_range_db: float = 60.0) -> np.ndarray:
    """Log-compress an envelope to display grey levels in [0, 1].

    ``level = 20 log10(envelope) + gain_db``; ``white_db`` maps to 1 and
    ``white_db - dynamic_range_db`` to 0, with clipping outside (so too much
    gain saturates bright structures and too little sinks them into black).
    """
    level = 20.0 * np.log10(np.maximum(envelope, 1e-12)) + gain_db
    out = (level - (white_db - dynamic_range_db)) / dynamic_range_db
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def scan_convert(polar: np.ndarray, geometry: FanGeometry) -> np.ndarray:
    """Resample a polar (depth x line) image onto the Cartesian fan.

    Uses bilinear :func:`scipy.ndimage.map_coordinates` at the precomputed
    polar coordinates of the in-fan pixels; pixels outside the fan are 0.
    Returns a float32 (H, W) image.
    """
    if polar.shape != (geometry.n_depth, geometry.n_lines):
        raise InputError(f"polar image has shape {polar.shape}, geometry expects "
                         f"{(geometry.n_depth, geometry.n_lines)}")
    out = np.zeros(geometry.size[0] * geometry.size[1], dtype=np.float32)
    out[geometry.fan_index] = ndimage.map_coordinates(
        polar.astype(np.float32, copy=False), geometry.fan_coords, order=1, mode="nearest",
        prefilter=False)
    return out.reshape(geometry.size)
