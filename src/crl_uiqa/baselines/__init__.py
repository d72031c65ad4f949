"""Baseline quality scores of the paper's Table 2, behind one small registry.

Every baseline is a plain function ``images -> scores``: ``images`` is a
sequence of float32 (H, W) grayscale arrays in [0, 1] and the result a
float64 numpy array with **higher = better quality** (lower-is-better metrics
are negated). Methods that need more than the images declare it in their
:class:`BaselineSpec`, and receive it as keyword arguments:

- ``references``: high-quality reference images (standard planes), same format;
- ``weights``: a model file path (None lets the method use its default);
- ``device``: a torch device string.

:func:`run_baseline` checks these declarations and calls the function; the
``crl-uiqa baseline`` command is a thin layer over it. To add a method, add a
module with its function and one :func:`register_baseline` call below.

Registered now:

=========  =============================================  ==========
name       function                                       references
=========  =============================================  ==========
brisque    :func:`.brisque.brisque_score` (-BRISQUE)      --
niqe       :func:`.niqe.niqe_score` (-NIQE, LIVE model)   --
niqe-ref   :func:`.niqe.niqe_ref_score` (-NIQE, refs)     required
mssim      :func:`.mssim.mssim_score` (mean SSIM)         required
serfiq     :func:`.serfiq.serfiq_score` (SER-FIQ)         --
sddfiqa    :func:`.sddfiqa.sddfiqa_score` (SDD-FIQA)      --
weighted   :func:`.weighted.weighted_score` (confidence)  optional
=========  =============================================  ==========

``serfiq``, ``sddfiqa`` and ``weighted`` run SonoNet-16 (``weights`` and
``device`` optional). ``weighted`` also has a detector version reached
through options: ``detections=detections.csv``, ``structure_weights=weights.csv``
and ``paths=`` (the image files; ``crl-uiqa compare`` passes them).
SDD-FIQA* (SDD-FIQA scores as pseudo-labels of our training) is
:func:`.sddfiqa.sddfiqa_star`; it needs training, so it is not a registry entry
(``crl-uiqa compare`` offers it as the method ``sddfiqa*``).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ArgumentTypeError, ConfigError
from .brisque import brisque_score
from .mssim import mssim_score
from .niqe import niqe_ref_score, niqe_score

__all__ = [
    "BaselineSpec",
    "BASELINES",
    "SPECS",
    "register_baseline",
    "get_baseline",
    "get_spec",
    "run_baseline",
    "name_files",
    "brisque_score",
    "niqe_score",
    "niqe_ref_score",
    "mssim_score",
]

_NEED = ("none", "optional", "required")
_RESERVED = frozenset({"references", "weights", "device"})


@dataclass(frozen=True)
class BaselineSpec:
    """What a baseline needs besides the images.

    Attributes
    ----------
    func : callable
        ``func(images, **kwargs) -> numpy.ndarray`` of shape (N,), higher = better.
    summary : str
        One line for listings and ``--help``.
    references : {"none", "optional", "required"}
        Whether ``func`` takes ``references=`` (high-quality reference images).
    weights : {"none", "optional", "required"}
        Whether ``func`` takes ``weights=`` (a model file path; None = the method's default).
    device : bool
        Whether ``func`` takes ``device=`` (a torch device string).
    undefined : callable, optional
        ``undefined(image) -> str | None``: why the method is undefined on one image (a constant frame has no
        local contrast for BRISQUE and NIQE), else None. ``crl-uiqa baseline`` skips and lists such images, as
        it does unreadable files, instead of stopping the whole run on one blank frame.
    """

    func: Callable[..., np.ndarray]
    summary: str
    references: str = "none"
    weights: str = "none"
    device: bool = False
    undefined: Callable[[np.ndarray], str | None] | None = None

    def __post_init__(self) -> None:
        for field_name in ("references", "weights"):
            value = getattr(self, field_name)
            if value not in _NEED:
                raise ConfigError(f"BaselineSpec.{field_name} must be one of {_NEED}, got {value!r}")
        if not callable(self.func):
            raise ArgumentTypeError(f"BaselineSpec.func must be callable, got {type(self.func).__name__}")


#: name -> full declaration.
SPECS: dict[str, BaselineSpec] = {}
#: name -> scoring function (the registry's public face).
BASELINES: dict[str, Callable[..., np.ndarray]] = {}


def register_baseline(name: str, spec: BaselineSpec) -> None:
    """Add (or replace) a baseline under ``name`` (lower case, no spaces)."""
    if not name or name != name.strip().lower() or " " in name:
        raise ConfigError(f"baseline names are lower case without spaces, got {name!r}")
    SPECS[name] = spec
    BASELINES[name] = spec.func


def _unknown(name: str) -> ConfigError:
    return ConfigError(f"unknown baseline {name!r}; valid names: {', '.join(sorted(BASELINES))}")


def get_baseline(name: str) -> Callable[..., np.ndarray]:
    """The scoring function registered under ``name`` (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in BASELINES:
        raise _unknown(name)
    return BASELINES[key]


def get_spec(name: str) -> BaselineSpec:
    """The :class:`BaselineSpec` registered under ``name`` (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in SPECS:
        raise _unknown(name)
    return SPECS[key]


def run_baseline(
    name: str,
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray] | None = None,
    weights: str | None = None,
    device: str | None = None,
    **options: Any,
) -> np.ndarray:
    """Score ``images`` with a registered baseline, passing only what it declares.

    Parameters
    ----------
    name : str
        Registered name (see :data:`BASELINES`).
    images : sequence of numpy.ndarray
        Grayscale (H, W) images in [0, 1] (also one (H, W) array or an (N, H, W) stack).
    references : sequence of numpy.ndarray, optional
        High-quality reference images, for methods that take them.
    weights : str, optional
        Model file, for methods that take one.
    device : str, optional
        Torch device, for methods that take one.
    **options
        Further keyword arguments of the method's function (e.g.
        ``reduction="max"`` for mssim); unknown ones raise
        :class:`~crl_uiqa.errors.ConfigError`.

    Returns
    -------
    numpy.ndarray
        (N,) float64 scores, higher = better.

    Raises
    ------
    crl_uiqa.errors.ConfigError
        Unknown method or option, a missing required input, or an input the
        method does not use.
    crl_uiqa.errors.InputError
        Images that are not grayscale arrays in [0, 1] (both errors are ``ValueError``).
    """
    from ._network import check_array_images

    spec = get_spec(name)
    images = check_array_images(images, "images")  # one (H, W) array or an (N, H, W) stack too, as a list
    key = str(name).strip().lower()
    kwargs: dict[str, Any] = {}
    for arg, value, need, what in (
        ("references", references, spec.references, "reference images (--references)"),
        ("weights", weights, spec.weights, "a model file (--weights)"),
    ):
        if value is None:
            if need == "required":
                raise ConfigError(f"baseline {key!r} needs {what}")
        elif need == "none":
            raise ConfigError(f"baseline {key!r} does not use {what}")
        else:
            kwargs[arg] = value
    if device is not None and spec.device:
        kwargs["device"] = device
    if options:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = list(inspect.signature(spec.func).parameters.values())[1:]  # after images
        accepted = [p.name for p in params if p.kind in kinds and p.name not in _RESERVED]
        bad = sorted(set(options) - set(accepted))
        if bad:
            raise ConfigError(
                f"baseline {key!r} has no option {', '.join(bad)}; its options: {', '.join(accepted) or 'none'}"
            )
        kwargs.update(options)
    scores = np.asarray(spec.func(images, **kwargs), dtype=np.float64)
    if scores.shape != (len(images),):
        raise RuntimeError(f"baseline {key!r} returned shape {scores.shape} for {len(images)} images")
    return scores


def _constant(method: str) -> Callable[[np.ndarray], str | None]:
    """The images a natural-scene-statistics method is undefined on: constant ones (no local contrast)."""
    def undefined(image: np.ndarray) -> str | None:
        return f"constant image: {method} is undefined (no local contrast)" if np.ptp(image) == 0 else None

    return undefined


register_baseline(
    "brisque", BaselineSpec(brisque_score, "-BRISQUE as the authors' MATLAB release computes it (LIVE-trained SVR)",
                            undefined=_constant("BRISQUE"))
)
register_baseline(
    "niqe", BaselineSpec(niqe_score, "-NIQE as the authors' MATLAB release computes it (LIVE pristine model)",
                         undefined=_constant("NIQE"))
)
register_baseline(
    "niqe-ref",
    BaselineSpec(
        niqe_ref_score, "-NIQE against a pristine model fitted on the reference images", references="required",
        undefined=_constant("NIQE"),
    ),
)
register_baseline(
    "mssim",
    BaselineSpec(
        mssim_score,
        "mean SSIM to the reference images (Wang et al. 2004; option method=ms-ssim: MS-SSIM, Wang et al. 2003)",
        references="required",
    ),
)

# -- learning-based baselines of Table 2 (SonoNet-16 based) --
def name_files(message: str, images: Sequence[str], references: Sequence[str]) -> str:
    """A baseline's error message with ``images[i]`` / ``references[i]`` (``reference_images[i]``) replaced by the
    file path, so the user sees which file is at fault."""

    def sub(m: re.Match) -> str:
        paths = images if m.group(1) == "images" else references
        i = int(m.group(2))
        return paths[i] if i < len(paths) else m.group(0)

    return re.sub(r"\b(images|references|reference_images)\[(\d+)\]", sub, message)


from .sddfiqa import sddfiqa_score, sddfiqa_star  # noqa: E402
from .serfiq import serfiq_score  # noqa: E402
from .weighted import weighted_score  # noqa: E402

__all__ += ["serfiq_score", "sddfiqa_score", "sddfiqa_star", "weighted_score"]

register_baseline(
    "serfiq",
    BaselineSpec(serfiq_score, "SER-FIQ: robustness of SonoNet embeddings to T=100 dropout passes (Terhoerst 2020)",
                 weights="optional", device=True),
)
register_baseline(
    "sddfiqa",
    BaselineSpec(sddfiqa_score, "SDD-FIQA: Wasserstein distance of same- vs other-class similarities (Ou 2021)",
                 weights="optional", device=True),
)
register_baseline(
    "weighted",
    BaselineSpec(weighted_score, "weighted score: SonoNet confidence of the target plane, or structure detections",
                 references="optional", weights="optional", device=True),
)
