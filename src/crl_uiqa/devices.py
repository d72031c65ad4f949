"""Where the networks run: the ``--device`` setting of every command, checked before any work."""
from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "prepare_model", "autocast_enabled", "autocast"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a clear error for an absent CUDA."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {str(device)!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {dev}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for but MPS is not available")
    return dev


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Eval mode on ``device``, channels-last memory (faster convs on CPU and GPU)."""
    return model.eval().to(device=device, memory_format=torch.channels_last)


def autocast_enabled(amp: bool | str, device) -> bool:
    """Whether the ``amp`` setting turns bfloat16 autocast on for ``device``.

    ``True`` (the default everywhere): on CUDA only; ``"bf16"``: on the CPU
    too (fast where the CPU has AVX-512 BF16 or AMX; see BENCHMARKS.md);
    ``False``: never.
    """
    kind = torch.device(device).type
    return (amp is True and kind == "cuda") or (amp == "bf16" and kind in ("cuda", "cpu"))


def autocast(device, enabled: bool):
    """``torch.autocast`` to bfloat16 on ``device`` (a no-op context when not enabled)."""
    kind = torch.device(device).type
    return torch.autocast(device_type=kind if kind in ("cuda", "cpu") else "cpu", dtype=torch.bfloat16,
                          enabled=enabled)
