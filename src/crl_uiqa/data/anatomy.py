"""3-D fetal anatomy for the ultrasound simulator, cut by the imaging plane.

The anatomy is a list of ellipsoids (:class:`Ellipsoid`) in a fetal coordinate
frame, in millimetres for a reference-size fetus:

* ``u`` - lateral, toward the fetal left,
* ``v`` - antero-posterior, toward the back (the spine is at ``+v``),
* ``w`` - along the body axis (cranio-caudal, toward the feet is ``+w``); the
  imaging plane of a sweep is the plane ``w = w_standard + offset``.

Each ellipsoid is filled (or a shell of given thickness, optionally limited to an
angular sector, e.g. a rib arc) with an intensity reflectivity ("echogenicity";
soft tissue ~ 1, fluid ~ 1e-4, specular bone ~ 1000) and may attenuate the beam (bone casts
an acoustic shadow). Where the plane cuts an ellipsoid the section is an
ellipse that shrinks as the plane moves away from the centre, and the elevation
thickness of the ultrasound beam (a Gaussian of standard deviation
``ELEVATION_SIGMA_MM``) mixes in what lies just off the plane (partial-volume
effect): the occupied fraction of the beam at in-plane position ``(u, v)`` is

``m = Phi((h - dw) / s) - Phi((-h - dw) / s)``

with ``h`` the half chord of the ellipsoid along ``w`` at ``(u, v)``, ``dw`` the
distance of the plane from the ellipsoid centre and ``Phi`` the normal CDF
(:func:`normal_cdf`).
At the centre plane the section has sharp edges and full contrast; near the
tip of the ellipsoid it becomes small, fuzzy and faint, then vanishes - which is
how the stomach, the heart chambers or the thalami appear, sharpen and vanish
along a sweep.

Three planes are modelled (:data:`PLANES`):

* ``abdomen`` - transverse abdominal circumference plane: round abdomen with a
  bright skin line, liver, anechoic stomach bubble (fetal left), umbilical vein
  in the anterior third, aorta, vertebra with its two laminae (bright, with a
  posterior acoustic shadow) and a short rib on each side. Cranially the heart
  and lungs appear, caudally the kidneys and bowel.
* ``4ch`` - four-chamber heart plane of the same trunk 26 mm cranial: echogenic
  lungs, heart with a bright pericardium, four anechoic chambers separated by
  the septa and the atrioventricular valves meeting at the crux, descending
  aorta, spine and long rib arcs.
* ``head`` - transthalamic head plane: bright skull, midline echo (falx),
  cavum septi pellucidi, thalami; the ventricular atria with the choroid plexus
  appear cranially and the cerebellum with the cisterna magna caudally.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..errors import ConfigError

__all__ = [
    "Ellipsoid",
    "PlaneAnatomy",
    "PLANES",
    "ELEVATION_SIGMA_MM",
    "FLUID",
    "normal_cdf",
    "plane_anatomy",
    "render_section",
    "texture_pattern",
]

#: standard deviation of the elevation (slice thickness) beam profile, mm.
ELEVATION_SIGMA_MM = 1.2
#: echogenicity of anechoic fluid (amniotic fluid, stomach, vessels, heart chambers).
FLUID = 1e-4


@dataclass(frozen=True)
class Ellipsoid:
    """One anatomical structure: a (shell of an) ellipsoid in fetal coordinates.

    Attributes
    ----------
    name : str
        Structure name (documentation and texture seed).
    center : tuple of 3 floats
        ``(u, v, w)`` centre in mm.
    axes : tuple of 3 floats
        Semi-axes ``(a, b, c)`` in mm; ``a`` and ``b`` lie in the plane (before
        the in-plane rotation ``angle``), ``c`` along the body axis ``w``.
    echo : float
        Intensity reflectivity painted where the structure is.
    angle : float
        In-plane rotation of the ``a`` axis from the ``u`` axis, degrees.
    shell : float
        Shell thickness in mm (0 = filled ellipsoid).
    sector : tuple of 2 floats or None
        Keep only the part whose in-plane polar angle (degrees, measured from
        the ``a`` axis toward the ``b`` axis) lies in ``[start, end]``.
    attenuation : float
        Extra amplitude attenuation of the beam inside the structure (Np/mm,
        round trip); bone uses ~0.3.
    period : float
        If > 0 the structure repeats along ``w`` with this period (ribs),
        for copies whose centre lies within ``w_range``.
    w_range : tuple of 2 floats
        ``w`` range of the repeated copies' centres.
    texture : float
        Relative amplitude of a smooth echotexture modulation (0 = none).
    closed : bool
        For shells: ``True`` closes the shell along ``w`` too (skull, skin,
        pericardium: the plane near the tip cuts a bright cap); ``False`` makes
        an open band extruded along ``w`` with half-thickness ``c`` (a rib).
    """

    name: str
    center: tuple[float, float, float]
    axes: tuple[float, float, float]
    echo: float
    angle: float = 0.0
    shell: float = 0.0
    sector: tuple[float, float] | None = None
    attenuation: float = 0.0
    period: float = 0.0
    w_range: tuple[float, float] = (-math.inf, math.inf)
    texture: float = 0.0
    closed: bool = True

    def outline(self, n: int = 24) -> np.ndarray:
        """Points ``(2, k)`` in fetal ``(u, v)`` bounding the in-plane footprint."""
        a, b, _ = self.axes
        lo, hi = self.sector if self.sector is not None else (0.0, 360.0)
        t = np.radians(np.linspace(lo, hi, n))
        ca, sa = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        p = a * np.cos(t)
        q = b * np.sin(t)
        pts = [np.stack([p, q])]
        if self.sector is not None:
            inner = 1.0 - self.shell / max(min(a, b), 1e-6)
            pts.append(np.stack([p * inner, q * inner]))
        pq = np.concatenate(pts, axis=1)
        u = self.center[0] + ca * pq[0] - sa * pq[1]
        v = self.center[1] + sa * pq[0] + ca * pq[1]
        return np.stack([u, v])


@cache
def _texture_waves(name: str) -> tuple[float, ...]:
    r = np.random.default_rng(hash_name(name))
    k1, k2 = 2 * np.pi / r.uniform(5.0, 9.0, size=2)
    t1, t2, ph1, ph2 = r.uniform(0, 2 * np.pi, size=4)
    waves = (k1 * math.cos(t1), k1 * math.sin(t1), ph1, k2 * math.cos(t2), k2 * math.sin(t2), ph2)
    return tuple(float(x) for x in waves)  # python floats keep float32 arrays in float32


def texture_pattern(name: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Smooth echotexture pattern in [-1, 1] at in-plane positions ``(p, q)`` (mm).

    Two crossed cosine waves of 5-9 mm wavelength whose directions and phases
    are fixed by ``name``, so a structure keeps its texture from frame to frame.
    """
    a1, b1, ph1, a2, b2, ph2 = _texture_waves(name)
    return np.cos(a1 * p + b1 * q + ph1) * np.cos(a2 * p + b2 * q + ph2)


def hash_name(name: str) -> int:
    """Stable (process independent) integer hash of a structure name."""
    h = 2166136261
    for ch in name.encode("utf-8"):
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, tanh approximation (max abs. error 1.8e-4, ~50x faster than ndtr)."""
    return 0.5 + 0.5 * np.tanh(x * (0.7978845608 + 0.0356774 * (x * x)))


def _occupancy(s: Ellipsoid, u: np.ndarray, v: np.ndarray, w: np.ndarray,
               sigma: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Fraction of the elevation beam occupied by ``s`` at each point, and its echotexture.

    Returns ``(m, modulation)``: occupancy in [0, 1] and the multiplicative
    echotexture of the structure (``None`` without texture).
    """
    a, b, c = s.axes
    inv_sigma = np.float32(1.0 / sigma)
    du = u - s.center[0]
    dv = v - s.center[1]
    ca, sa = math.cos(math.radians(s.angle)), math.sin(math.radians(s.angle))
    p = ca * du + sa * dv
    q = -sa * du + ca * dv
    if s.period > 0:
        k = np.round((w - s.center[2]) / s.period)
        k_lo = math.ceil((s.w_range[0] - s.center[2]) / s.period)
        k_hi = math.floor((s.w_range[1] - s.center[2]) / s.period)
        k = np.clip(k, k_lo, k_hi)
        dw = w - (s.center[2] + k * s.period)
    else:
        dw = w - s.center[2]

    def filled(a_, b_, c_):
        rho2 = (p / a_) ** 2 + (q / b_) ** 2
        h = c_ * np.sqrt(np.clip(1.0 - rho2, 0.0, None))
        return normal_cdf((h - dw) * inv_sigma) - normal_cdf((-h - dw) * inv_sigma)

    if s.shell > 0 and not s.closed:
        # open band: an in-plane ring (soft edges of ~0.6 mm) extruded along w over +-c
        t = s.shell
        edge = 0.6
        r_out = np.sqrt((p / a) ** 2 + (q / b) ** 2)
        r_in = np.sqrt((p / max(a - t, 1e-3)) ** 2 + (q / max(b - t, 1e-3)) ** 2)
        ring = (np.clip((1.0 - r_out) * min(a, b) / edge + 0.5, 0.0, 1.0)
                * np.clip((r_in - 1.0) * min(a, b) / edge + 0.5, 0.0, 1.0))
        m = ring * (normal_cdf((c - dw) * inv_sigma) - normal_cdf((-c - dw) * inv_sigma))
    else:
        m = filled(a, b, c)
        if s.shell > 0:
            t = s.shell
            m = np.clip(m - filled(max(a - t, 1e-3), max(b - t, 1e-3), max(c - t, 1e-3)),
                        0.0, 1.0)
    if s.sector is not None:
        ang = np.degrees(np.arctan2(q / b, p / a))
        lo, hi = s.sector
        centre = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        dist = np.abs((ang - centre + 180.0) % 360.0 - 180.0)
        m = m * np.clip((half - dist) / 6.0 + 0.5, 0.0, 1.0)
    if s.texture:
        m_echo = 1.0 + s.texture * texture_pattern(s.name, p, q)
        return m, m_echo
    return m, None


def render_section(
    structures: tuple[Ellipsoid, ...],
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    echo: np.ndarray,
    attenuation: np.ndarray,
    boxes: list[tuple[slice, slice] | None],
    sigma: float = ELEVATION_SIGMA_MM,
) -> None:
    """Paint the section of ``structures`` into ``echo`` and ``attenuation`` (in place).

    Parameters
    ----------
    structures : tuple of Ellipsoid
        Painted in order (later ones cover earlier ones, weighted by occupancy).
    u, v, w : ndarray
        Fetal coordinates (mm) of every sample of the (polar) grid.
    echo, attenuation : ndarray
        Echogenicity and bone attenuation maps, same shape, updated in place.
    boxes : list
        Per structure a ``(row slice, column slice)`` region of the grid outside
        of which it is known to be absent, or ``None`` to skip the structure.
    sigma : float
        Elevation beam standard deviation (mm).
    """
    for s, box in zip(structures, boxes):
        if box is None:
            continue
        uu, vv, ww = u[box], v[box], w[box]
        m, modulation = _occupancy(s, uu, vv, ww, sigma)
        value = s.echo if modulation is None else s.echo * modulation
        e = echo[box]
        e += m * (value - e)
        if s.attenuation:
            attenuation[box] += m * s.attenuation


# --------------------------------------------------------------------------- planes

_BONE = 1000.0
_SKIN = 6.0


def _trunk() -> tuple[Ellipsoid, ...]:
    """The fetal trunk; abdominal plane at w = 0, four-chamber plane at w = -26."""
    heart_c = (6.0, -4.0, -26.0)
    heart_angle = -40.0  # long axis (base -> apex) points to the fetal left and anterior
    ca, sa = math.cos(math.radians(heart_angle)), math.sin(math.radians(heart_angle))

    def in_heart(pp: float, qq: float, w_off: float = 0.0) -> tuple[float, float, float]:
        return (heart_c[0] + ca * pp - sa * qq, heart_c[1] + sa * pp + ca * qq, heart_c[2] + w_off)

    body = Ellipsoid("body", (0.0, 0.0, -20.0), (30.0, 27.0, 80.0), 0.9, texture=0.12)
    s = [
        body,
        Ellipsoid("lungs", (0.0, 3.0, -33.0), (26.0, 22.0, 22.0), 1.7, texture=0.1),
        Ellipsoid("liver", (-2.0, -2.0, 6.0), (26.0, 22.0, 17.0), 0.75, texture=0.15),
        Ellipsoid("bowel", (1.0, -4.0, 34.0), (25.0, 20.0, 16.0), 1.5, texture=0.45),
        Ellipsoid("kidney_l", (11.0, 11.0, 27.0), (6.0, 8.5, 11.0), 0.45, angle=-20.0),
        Ellipsoid("kidney_r", (-11.0, 11.0, 27.0), (6.0, 8.5, 11.0), 0.45, angle=20.0),
        Ellipsoid("renal_pelvis_l", (9.0, 9.0, 27.0), (1.8, 3.0, 5.0), FLUID, angle=-20.0),
        Ellipsoid("renal_pelvis_r", (-9.0, 9.0, 27.0), (1.8, 3.0, 5.0), FLUID, angle=20.0),
        Ellipsoid("gallbladder", (-9.0, -9.0, 9.0), (6.0, 2.5, 5.0), FLUID, angle=70.0),
        # heart: myocardium, four chambers, pericardium
        Ellipsoid("heart", heart_c, (16.0, 13.5, 12.0), 0.85, angle=heart_angle),
        Ellipsoid("lv", in_heart(4.6, 5.0), (7.4, 4.2, 8.0), FLUID, angle=heart_angle),
        Ellipsoid("rv", in_heart(4.2, -5.0), (7.2, 4.3, 8.0), FLUID, angle=heart_angle),
        Ellipsoid("la", in_heart(-7.2, 5.0), (4.8, 4.2, 6.5), FLUID, angle=heart_angle),
        Ellipsoid("ra", in_heart(-7.2, -5.0), (4.8, 4.3, 6.5), FLUID, angle=heart_angle),
        Ellipsoid("pericardium", heart_c, (16.6, 14.1, 12.6), 20.0, angle=heart_angle, shell=1.2),
        # great vessels leaving the heart, cranial to the 4ch plane
        Ellipsoid("aortic_arch", (2.0, -2.0, -38.0), (3.0, 3.0, 6.0), FLUID),
        Ellipsoid("pulmonary_trunk", (-3.0, -6.0, -37.0), (3.0, 3.0, 6.0), FLUID),
        # abdomen
        Ellipsoid("stomach", (11.0, -2.0, 2.0), (9.5, 6.0, 8.0), FLUID, angle=-35.0),
        Ellipsoid("umbilical_vein", (-4.0, -13.0, 0.0), (9.0, 2.1, 3.5), FLUID, angle=110.0),
        Ellipsoid("portal_sinus", (-7.0, -3.0, 0.5), (4.0, 1.8, 3.0), FLUID, angle=20.0),
        Ellipsoid("aorta", (3.5, 10.5, -20.0), (2.5, 2.5, 80.0), FLUID),
        Ellipsoid("ivc", (-5.0, 6.0, 0.0), (2.8, 2.2, 30.0), FLUID),
        # spine: vertebral body and laminae, an infinite cylinder along w
        Ellipsoid("vertebra", (0.0, 16.0, 0.0), (4.0, 3.3, 200.0), _BONE, attenuation=0.33),
        Ellipsoid("lamina_l", (4.3, 21.0, 0.0), (1.6, 3.0, 200.0), _BONE, angle=-25.0,
                  attenuation=0.33),
        Ellipsoid("lamina_r", (-4.3, 21.0, 0.0), (1.6, 3.0, 200.0), _BONE, angle=25.0,
                  attenuation=0.33),
        # ribs: arcs inside the body wall, every 8 mm cranial to the abdominal plane;
        # short posterolateral ribs at the abdomen, long arcs around the thorax
        Ellipsoid("ribs_l_short", (0.0, 0.0, 0.0), (26.5, 23.5, 1.6), _BONE, shell=2.0, closed=False,
                  sector=(20.0, 62.0), attenuation=0.2, period=8.0, w_range=(-8.0, 0.0)),
        Ellipsoid("ribs_r_short", (0.0, 0.0, 0.0), (26.5, 23.5, 1.6), _BONE, shell=2.0, closed=False,
                  sector=(118.0, 160.0), attenuation=0.2, period=8.0, w_range=(-8.0, 0.0)),
        Ellipsoid("ribs_l_long", (0.0, 0.0, -2.0), (26.5, 23.5, 1.6), _BONE, shell=2.0, closed=False,
                  sector=(-35.0, 70.0), attenuation=0.2, period=8.0, w_range=(-75.0, -12.0)),
        Ellipsoid("ribs_r_long", (0.0, 0.0, -2.0), (26.5, 23.5, 1.6), _BONE, shell=2.0, closed=False,
                  sector=(110.0, 215.0), attenuation=0.2, period=8.0, w_range=(-75.0, -12.0)),
        Ellipsoid("skin", body.center, (body.axes[0] + 0.6, body.axes[1] + 0.6, body.axes[2]),
                  _SKIN, shell=1.3),
    ]
    return tuple(s)


def _scaled(structures: tuple[Ellipsoid, ...], k: float) -> tuple[Ellipsoid, ...]:
    """Scale every length of ``structures`` by ``k``."""
    out = []
    for s in structures:
        out.append(Ellipsoid(
            s.name, tuple(k * x for x in s.center), tuple(k * x for x in s.axes), s.echo,
            angle=s.angle, shell=k * s.shell, sector=s.sector, attenuation=s.attenuation,
            period=k * s.period, w_range=(k * s.w_range[0], k * s.w_range[1]),
            texture=s.texture, closed=s.closed))
    return tuple(out)


def _head() -> tuple[Ellipsoid, ...]:
    """The fetal head; transthalamic plane at w = 0 (u = occipito-frontal axis, frontal at -u).

    Modelled at a 0.85 scale: occipito-frontal diameter ~76 mm, biparietal ~62 mm.
    """
    return _scaled((
        Ellipsoid("brain", (0.0, 0.0, 0.0), (40.0, 32.0, 34.0), 0.3, texture=0.25),
        Ellipsoid("falx", (0.0, 0.0, 0.0), (37.0, 0.7, 32.0), 15.0),
        Ellipsoid("csp", (-14.0, 0.0, -1.0), (5.5, 2.6, 6.0), FLUID),
        Ellipsoid("thalamus_l", (3.0, 6.0, 0.5), (8.5, 5.5, 9.0), 0.04, angle=18.0),
        Ellipsoid("thalamus_r", (3.0, -6.0, 0.5), (8.5, 5.5, 9.0), 0.04, angle=-18.0),
        Ellipsoid("third_ventricle", (3.0, 0.0, 0.0), (7.0, 0.9, 6.0), FLUID),
        Ellipsoid("sylvian_l", (-2.0, 24.0, -3.0), (8.0, 2.0, 8.0), 3.0, angle=-10.0),
        Ellipsoid("sylvian_r", (-2.0, -24.0, -3.0), (8.0, 2.0, 8.0), 3.0, angle=10.0),
        Ellipsoid("atrium_l", (18.0, 9.0, -13.0), (8.0, 4.0, 6.0), FLUID, angle=15.0),
        Ellipsoid("atrium_r", (18.0, -9.0, -13.0), (8.0, 4.0, 6.0), FLUID, angle=-15.0),
        Ellipsoid("choroid_l", (17.0, 9.0, -13.0), (5.5, 2.8, 4.5), 3.5, angle=15.0),
        Ellipsoid("choroid_r", (17.0, -9.0, -13.0), (5.5, 2.8, 4.5), 3.5, angle=-15.0),
        Ellipsoid("cerebellum_l", (18.0, 6.0, 13.0), (6.0, 6.5, 7.0), 0.9),
        Ellipsoid("cerebellum_r", (18.0, -6.0, 13.0), (6.0, 6.5, 7.0), 0.9),
        Ellipsoid("vermis", (18.0, 0.0, 13.0), (5.0, 2.0, 6.0), 1.6),
        Ellipsoid("cisterna_magna", (26.0, 0.0, 13.0), (3.5, 7.0, 5.0), FLUID),
        Ellipsoid("skull", (0.0, 0.0, 0.0), (42.5, 34.5, 36.5), _BONE, shell=2.5, attenuation=0.22),
        Ellipsoid("scalp", (0.0, 0.0, 0.0), (44.5, 36.5, 38.5), 1.0, shell=2.0),
    ), 0.85)


@dataclass(frozen=True)
class PlaneAnatomy:
    """Anatomy and geometry of one standard plane.

    Attributes
    ----------
    name : str
        Plane name (``abdomen``, ``4ch`` or ``head``).
    structures : tuple of Ellipsoid
        Structures in painting order.
    w_standard : float
        ``w`` of the standard plane (mm).
    radius : float
        Approximate in-plane radius of the anatomy (mm, reference size).
    sigma_offset : float
        Elevation offset (mm) at which the plane-closeness factor drops to 1/e.
    rotation_range : tuple of 2 floats
        Range of the in-plane rotation of the fetus (degrees) drawn for sweeps;
        0 puts the spine (head: the occiput-frontal axis) as in the standard
        textbook view.
    """

    name: str
    structures: tuple[Ellipsoid, ...]
    w_standard: float
    radius: float
    sigma_offset: float
    rotation_range: tuple[float, float]


#: names of the simulated standard planes.
PLANES: tuple[str, ...] = ("abdomen", "4ch", "head")


@cache
def plane_anatomy(plane: str) -> PlaneAnatomy:
    """Return the :class:`PlaneAnatomy` of ``plane`` (one of :data:`PLANES`)."""
    if plane == "abdomen":
        return PlaneAnatomy("abdomen", _trunk(), 0.0, 30.0, 5.0, (-90.0, 90.0))
    if plane == "4ch":
        return PlaneAnatomy("4ch", _trunk(), -26.0, 30.0, 4.0, (-90.0, 90.0))
    if plane == "head":
        return PlaneAnatomy("head", _head(), 0.0, 33.0, 5.0, (-25.0, 25.0))
    raise ConfigError(f"unknown plane {plane!r}; choose one of {', '.join(PLANES)}")
