"""Where the networks run: the ``--device`` setting of every command, checked before any work."""
from __future__ import annotations

import weakref

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "prepare_model", "fold_batch_norm", "autocast_enabled", "autocast"]


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


def prepare_model(model: torch.nn.Module, device: torch.device, *, fold: bool = True) -> torch.nn.Module:
    """The network to run for inference: ``model`` in eval mode on ``device`` with channels-last memory (faster
    convs on CPU and GPU; both set on ``model`` itself), and with ``fold`` a copy of it whose batch norms are folded
    into the convolutions before them (:func:`fold_batch_norm`), so ``model`` itself keeps its layers and weights.
    Use the returned network, and only to run it: the copy is kept while ``model``'s parameters and buffers are the
    same tensors, unchanged in place, and every caller gets it (a change through ``.data`` or to a plain attribute
    such as a batch norm's ``eps`` is not seen: call :func:`fold_batch_norm` then, or ``fold=False``)."""
    # outside inference mode even when called in it (scoring is): tensors moved or copied here stay usable for
    # training, the caller's model's among them (its weights converted to channels-last in inference mode could
    # not be trained any more)
    with torch.inference_mode(False):
        model = model.eval().to(device=device, memory_format=torch.channels_last)
    if not fold:
        return model
    key = _state_key(model)
    kept = _FOLDED.get(model) if key is not None else None
    if kept is not None and kept[0] == key:  # the same weights as when it was folded: the copy made then
        return model if kept[1] is None else kept[1].eval()
    with torch.inference_mode(False):
        folded = fold_batch_norm(model)
        folded = folded if folded is model else folded.to(memory_format=torch.channels_last)
    if key is not None:  # nothing folded: no copy to keep (a value holding the model would keep it alive for ever)
        _FOLDED[model] = (key, None if folded is model else folded)
    return folded


#: the folded copy :func:`prepare_model` made of each live model, with the state it was made from: a caller that
#: scores a frame at a time does not copy the network for every call (the copy costs about one forward pass)
_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_key(model: torch.nn.Module) -> tuple | None:
    """What a folded copy depends on: every parameter and buffer, by identity, storage and in-place version (a
    changed weight, ``load_state_dict``, a move to another device each change it); None for a model with tensors
    made in inference mode, which keep no version (folded anew at every call)."""
    tensors = (*model.parameters(), *model.buffers())
    if any(t.is_inference() for t in tensors):
        return None
    return tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors)


def fold_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` for inference in which each 2-D convolution followed by a batch norm in eval mode (the
    two adjacent in one ``nn.Sequential``, as SonoNet's conv-BN-ReLU layers) is one convolution with the batch
    norm's scale and shift in its weights and bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`); the batch
    norm becomes an ``nn.Identity``. The scores are those of ``model`` up to float rounding (about 1e-6 relative in
    float32; under bfloat16 autocast either network rounds by about 1e-2), and a batch norm no longer costs a pass
    over every feature map (a fifth of SonoNet-16's forward time on the CPU; BENCHMARKS.md "Batch norm folded into
    the convolutions"). ``model`` itself is unchanged; it is returned as it is when nothing folds (no such pair, a
    batch norm that trains or has no running statistics)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    found = []  # (the nn.Sequential's name, the convolution's index in it); a deep copy has the same names
    for name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            layers = list(seq)
            for i in range(len(layers) - 1):
                conv, bn = layers[i], layers[i + 1]
                if (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and not conv.training
                        and not bn.training and bn.running_mean is not None and bn.running_var is not None):
                    found.append((name, i))
    if not found:
        return model
    import copy

    folded = copy.deepcopy(model)
    for name, i in found:
        seq = folded.get_submodule(name) if name else folded
        seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
        seq[i + 1] = nn.Identity()
    return folded


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
