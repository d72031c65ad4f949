"""The quality regressor: pretrained backbone + projection + pooling + FC (paper Sec. 3.2).

The paper adds a classification branch to a YOLOv5 backbone pretrained for
key-anatomical-structure detection: "a projection layer to reduce the number
of feature map channels and feeds pooled features into a fully connected layer
to output quality scores". We have no such detector; the default trunk is the
SonoNet-16 conv trunk pretrained on fetal standard planes. Choices the paper
leaves open, made here and documented:

* projection: 1x1 conv from the trunk's C channels to ``proj_channels`` (64),
  batch norm, ReLU;
* pooling: global average;
* FC: ``proj_channels`` -> 1;
* output activation: ``linear`` by default (``sigmoid`` available). With the
  paper's lr a sigmoid head barely moves from its initial constant output; a
  linear head regresses the [0, 1] pseudo-labels directly (BENCHMARKS.md);
* trainable layers: everything (the paper trains end to end), with the
  backbone's batch-norm statistics frozen at their pretrained values
  (batches of 16 mixed views would otherwise shift them); ``train_from``
  freezes the earlier blocks to trade accuracy for CPU speed.

Two heads (``ModelConfig.head``):

* ``paper``: the paper's head above, on the last trunk block, trained from
  scratch to regress the pseudo-labels;
* ``anchored``: a student that starts exactly at its teacher. The trunk runs
  to the pseudo-label layer (``anchor["layer"]``: block4 by default, any
  ``blockN``, or SonoNet's pre-logit ``adaptation`` layer), its pooled
  embedding's mean top-k distance to the stored reference embeddings goes
  through the stored Yeo-Johnson + min-max map of the pseudo-labels (Eq. 1-3),
  and a learned correction is added: 3x3 conv + BN + ReLU, 1x1 conv + BN +
  ReLU, global average pooling, FC whose weight and bias start at zero. At
  step 0 the model's score *is* the pseudo-label of the image, so co-learning
  (Eq. 4-7, unchanged) can only add what the corrupted and augmented views
  teach. The references and the map are buffers saved with the model.
  SonoNet standardises every image by its own mean and deviation, so a
  global contrast or brightness change is invisible to the whole network.
  With ``anchor["reference_stats"]`` (``"norm"``, the default of
  :func:`crl_uiqa.training.settings`) the FC also sees how far low-level
  statistics of the raw input (``anchor["statistics"]``, the default seven:
  gray level, contrast, gradients at three scales, black level; a model
  saved without the key uses the first six) lie from those of the reference
  planes, in either direction (:mod:`crl_uiqa.reference_stats`; centre and
  scale are buffers saved with the model): a learned "deviating from the references is worse" that
  carries over to corruptions the head never trained on. With
  ``anchor["intensity_stats"]`` (the default before) it sees the raw mean
  and standard deviation themselves, signed. With ``anchor["correction"]``
  ``"deviation"`` (what training chooses for a pool under
  ``min_train_images``) there is no conv head: the FC sees the deviation
  features alone: two parameters with ``reference_stats="norm"``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, InputError, NotFoundError
from .reference_stats import MODES as REFERENCE_STATS_MODES
from .reference_stats import SIX_STATISTICS, ReferenceDeviation, check_statistics

#: what the anchored head's learned correction sees: ``full``, the trunk's feature map through a small conv head
#: plus the statistics features; ``deviation``, the deviation-from-references features only (a pool too small for
#: the conv head, :attr:`crl_uiqa.training.TrainConfig.min_train_images`)
CORRECTIONS = ("full", "deviation")
#: most channels of the head's projection (64 by default): a model.json's value sizes weights made before loading
MAX_PROJ_CHANNELS = 4096
#: most numbers one buffer or weight sized by a model's description may hold (1 GiB of float32: 2**28 is, e.g.,
#: 100000 reference embeddings of 2048 dimensions); a larger one was allocated before the file's tensors were compared
MAX_MODEL_ELEMENTS = 2**28


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`QualityModel` (saved as JSON)."""

    backbone: str = "sononet16"
    proj_channels: int = 64
    activation: str = "linear"  # linear | sigmoid
    image_size: tuple[int, int] = (224, 288)
    freeze_bn: bool = True
    train_from: str = "block1"  # first trainable trunk block; "head" trains only the head
    head: str = "paper"  # paper | anchored (see the module docstring)
    # anchored head: {"layer", "k", "n_references", "dim", "smoothing"}; filled by crl_uiqa.training.train
    anchor: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an invalid setting now, before any work (one :class:`~crl_uiqa.errors.ConfigError`)."""
        from . import validate as v
        from .backbones import check_backbone_name, min_input_size, trunk_blocks

        check_backbone_name(self.backbone)
        v.integer("proj_channels", self.proj_channels, minimum=1, maximum=MAX_PROJ_CHANNELS)
        v.choice(v.flag("activation"), self.activation, ("linear", "sigmoid"))
        self.image_size = v.image_size(v.flag("image_size"), self.image_size, minimum=min_input_size(self.backbone))
        v.boolean("freeze_bn", self.freeze_bn)
        if not (self.train_from == "head" or (isinstance(self.train_from, str) and self.train_from.startswith("block")
                                              and self.train_from[5:].isdigit() and int(self.train_from[5:]) >= 1)):
            raise ConfigError(f"{v.flag('train_from')} must be head or blockN (N >= 1), got {self.train_from!r}")
        n_blocks = trunk_blocks(self.backbone)
        if self.train_from != "head" and n_blocks is not None and int(self.train_from[5:]) > n_blocks:
            raise ConfigError(f"{v.flag('train_from')}: {self.backbone} has blocks block1..block{n_blocks}, "
                              f"got {self.train_from!r}")
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra must be a dict, got {type(self.extra).__name__}")
        v.choice(v.flag("head"), self.head, ("paper", "anchored"))
        if not isinstance(self.anchor, dict):
            raise ConfigError(f"anchor must be a dict, got {type(self.anchor).__name__}")
        for key in ("k", "n_references", "dim"):  # sizes of the head's buffers: a model.json is data, not a program
            if key in self.anchor:
                v.integer(f"anchor {key}", self.anchor[key], minimum=1)
        if "smoothing" in self.anchor:
            v.boolean("anchor smoothing", self.anchor["smoothing"])
        n, d = self.anchor.get("n_references", 1), self.anchor.get("dim", 1)
        if n * d > MAX_MODEL_ELEMENTS or d * self.proj_channels * 9 > MAX_MODEL_ELEMENTS:
            raise ConfigError(f"anchor n_references={n}, dim={d} and proj_channels={self.proj_channels} make "
                              f"buffers or weights of more than {MAX_MODEL_ELEMENTS} numbers: not a model crl-uiqa "
                              "wrote (damaged or edited)")
        if self.anchor.get("reference_stats") not in (None, False, *REFERENCE_STATS_MODES):
            raise ConfigError(f"anchor reference_stats must be norm, each or off, got {self.anchor['reference_stats']!r}")
        if self.anchor.get("correction", "full") not in CORRECTIONS:
            raise ConfigError(f"anchor correction must be one of {', '.join(CORRECTIONS)}, "
                              f"got {self.anchor['correction']!r}")
        if self.anchor.get("correction") == "deviation" and not self.anchor.get("reference_stats"):
            raise ConfigError("anchor correction 'deviation' needs anchor reference_stats (norm or each)")
        if "statistics" in self.anchor:
            try:
                self.anchor["statistics"] = list(check_statistics(self.anchor["statistics"]))
            except ValueError as e:
                raise ConfigError(f"anchor {e}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"model_config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        size = d.get("image_size", (224, 288))
        d["image_size"] = tuple(size) if isinstance(size, (list, tuple)) else size
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def _yeo_johnson(x: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
    """Yeo-Johnson transform with a given lambda (scipy.stats.yeojohnson's formula), differentiable."""
    lm = lmbda.to(x.dtype)
    pos = x >= 0
    xp = torch.where(pos, x, torch.zeros_like(x))
    xn = torch.where(pos, torch.zeros_like(x), x)
    if abs(float(lm)) < 1e-12:
        yp = torch.log1p(xp)
    else:
        yp = ((xp + 1) ** lm - 1) / lm
    if abs(float(lm) - 2) < 1e-12:
        yn = -torch.log1p(-xn)
    else:
        yn = -((1 - xn) ** (2 - lm) - 1) / (2 - lm)
    return torch.where(pos, yp, yn)


class TeacherAnchor(nn.Module):
    """The pseudo-label q(x) of paper Eq. 1-3 as a module: embedding -> top-k distance -> YJ -> min-max.

    Buffers: ``references`` (n, D) reference embeddings, ``transform`` =
    (lambda, lo, hi, smoothing) with lo/hi the min and max of the smoothed
    scores of the labelled images (Eq. 3).
    """

    def __init__(self, n_references: int, dim: int, k: int, smoothing: bool = True):
        super().__init__()
        if not 1 <= k <= n_references:
            raise ConfigError(f"anchor k={k} must be in 1..{n_references} (the number of references)")
        self.k = int(k)
        self.register_buffer("references", torch.zeros(n_references, dim))
        self.register_buffer("transform", torch.tensor([0.0, 0.0, 1.0, 1.0 if smoothing else 0.0], dtype=torch.float64))

    def set(self, references: torch.Tensor, lmbda: float | None, lo: float, hi: float) -> None:
        """Store reference embeddings (n, D) and the label map of Eq. 2-3."""
        if tuple(references.shape) != tuple(self.references.shape):
            raise InputError(f"reference embeddings have shape {tuple(references.shape)}, "
                             f"expected {tuple(self.references.shape)}")
        if not hi > lo:
            raise InputError(f"the anchor's label range is empty (lo={lo}, hi={hi}): the images' pseudo-labels do not vary")
        with torch.no_grad():
            self.references.copy_(references)
            self.transform.copy_(torch.tensor([float(lmbda or 0.0), float(lo), float(hi),
                                               0.0 if lmbda is None else 1.0], dtype=torch.float64))

    def distance(self, e: torch.Tensor) -> torch.Tensor:
        """Mean of the k smallest Euclidean distances (B,) of embeddings (B, D) to the references (Eq. 1)."""
        r = self.references.to(e.dtype)
        d = ((e[:, None, :] - r[None, :, :]) ** 2).sum(-1).clamp_min(0).sqrt()  # exact, ONNX-exportable
        return d.topk(self.k, dim=1, largest=False).values.mean(dim=1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        s = -self.distance(e.float())
        lmbda, lo, hi, smooth = self.transform.to(torch.float32).unbind()
        if float(smooth) > 0:
            s = _yeo_johnson(s, lmbda)
        return (s - lo) / (hi - lo)


class QualityModel(nn.Module):
    """Backbone trunk -> head -> score (B,); see the module docstring for the two heads."""

    def __init__(self, backbone: nn.Module, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        if self.config.activation not in ("linear", "sigmoid"):
            raise ConfigError(f"activation must be linear or sigmoid, got {self.config.activation!r}")
        if self.config.head not in ("paper", "anchored"):
            raise ConfigError(f"head must be paper or anchored, got {self.config.head!r}")
        self.backbone = backbone
        p = self.config.proj_channels
        if self.config.head == "anchored":
            a = self.config.anchor
            missing = [k for k in ("layer", "k", "n_references", "dim") if k not in a]
            if missing:
                raise ConfigError(f"the anchored head needs anchor settings {missing} (set by crl_uiqa.training.train)")
            if self.config.activation != "linear":
                raise ConfigError("the anchored head is linear (it adds a correction to the pseudo-label)")
            layer = str(a["layer"])
            if layer in ("logits", "probs") or not (layer.startswith("block") or hasattr(backbone, "embedding_map")):
                raise ConfigError(f"the anchored head needs a feature-map layer (blockN, or a layer of the "
                                 f"backbone's embedding_map); {type(backbone).__name__} has none for {layer!r}")
            self.anchor = TeacherAnchor(int(a["n_references"]), int(a["dim"]), int(a["k"]), bool(a.get("smoothing", True)))
            c = int(a["dim"])
            self.projection = None  # correction "deviation": the FC sees the deviation features only
            if a.get("correction", "full") == "full":
                self.projection = nn.Sequential(
                    nn.Conv2d(c, p, 3, padding=1, bias=False), nn.BatchNorm2d(p), nn.ReLU(inplace=True),
                    nn.Conv2d(p, p, 1, bias=False), nn.BatchNorm2d(p), nn.ReLU(inplace=True))
            extra = 2 if a.get("intensity_stats") else 0
            if a.get("reference_stats"):
                self.deviation = ReferenceDeviation(a["reference_stats"], a.get("statistics", SIX_STATISTICS))
                extra += self.deviation.n_features
            self.fc = nn.Linear((p if self.projection is not None else 0) + extra, 1)
            nn.init.zeros_(self.fc.weight)  # the correction starts at 0: the model starts at its teacher
            nn.init.zeros_(self.fc.bias)
        else:
            c = int(backbone.out_channels)
            self.projection = nn.Sequential(nn.Conv2d(c, p, 1, bias=False), nn.BatchNorm2d(p), nn.ReLU(inplace=True))
            self.fc = nn.Linear(p, 1)
        self._apply_trainable()

    def _trunk_blocks(self) -> list[nn.Module]:
        return list(getattr(self.backbone, "blocks", []))

    def _apply_trainable(self) -> None:
        start = self.config.train_from
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        if start == "head":
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        elif start != "block1":
            try:
                first = int(start.removeprefix("block")) - 1
            except ValueError:
                raise ConfigError(f"train_from must be head or blockN, got {start!r}") from None
            for block in self._trunk_blocks()[:first]:
                for p in block.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> QualityModel:
        super().train(mode)
        if mode and self.config.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def anchor_map(self, x: torch.Tensor) -> torch.Tensor:
        """The anchored head's feature map (B, D, h, w): its global average is the embedding the pseudo-labels
        were computed from (``anchor["layer"]``: ``blockN``, or ``adaptation`` on a backbone with
        ``embedding_map``)."""
        layer = str(self.config.anchor["layer"])
        if hasattr(self.backbone, "embedding_map"):
            return self.backbone.embedding_map(x, layer)
        return self.backbone.feature_maps(x, until=layer)

    def teacher_score(self, x: torch.Tensor) -> torch.Tensor:
        """The anchored head's pseudo-label term q(x) alone (B,) (the model at initialisation)."""
        if self.config.head != "anchored":
            raise ConfigError("teacher_score needs the anchored head")
        return self.anchor(self.anchor_map(x).mean(dim=(2, 3)))

    def anchored_terms(self, x: torch.Tensor, features: tuple[torch.Tensor | None, ...] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher term q(x), learned correction), each (B,), from one trunk pass; their sum is the score.
        ``features``: :meth:`fixed_features` of ``x`` computed already (training computes a frozen trunk's with
        its batch norms folded), so the trunk does not run again."""
        if self.config.head != "anchored":
            raise ConfigError("anchored_terms needs the anchored head")
        f, q0, stats = self.fixed_features(x) if features is None else features
        return q0, self._correction(f, stats)

    @property
    def trunk_frozen(self) -> bool:
        """True when training cannot change what :meth:`fixed_features` returns for an image.

        That is: no backbone parameter trains (``train_from="head"``) and the
        backbone's batch-norm statistics cannot move (``freeze_bn``, or no
        batch norm in it). The teacher's references, its label map and the
        deviation statistics are buffers that training never updates.
        """
        if any(p.requires_grad for p in self.backbone.parameters()):
            return False
        return self.config.freeze_bn or not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                for m in self.backbone.modules())

    def fixed_features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """What the head reads from images ``x`` (B, 1, H, W): the outputs of the model's fixed parts.

        ``forward(x) == from_fixed_features(fixed_features(x))``. With a frozen
        trunk (:attr:`trunk_frozen`) these do not change while the head trains,
        so training computes them once for its fixed validation images. Paper
        head: ``(feature map,)``. Anchored head: ``(feature map or None when the
        correction has no conv head, teacher term q(x), statistics features or
        None)``.
        """
        if self.config.head != "anchored":
            return (self.backbone.feature_maps(x),)
        f = self.anchor_map(x)
        q0 = self.anchor(f.mean(dim=(2, 3)))
        stats = []
        if self.config.anchor.get("intensity_stats"):
            flat = x.flatten(1).float()
            stats += [flat.mean(dim=1, keepdim=True), flat.std(dim=1, keepdim=True)]
        if self.config.anchor.get("reference_stats"):
            stats.append(self.deviation(x))
        s = (torch.cat(stats, dim=1) if len(stats) > 1 else stats[0]) if stats else None
        return (f if self.projection is not None else None), q0, s

    def _correction(self, f: torch.Tensor | None, stats: torch.Tensor | None) -> torch.Tensor:
        """The anchored head's learned correction (B,) from its fixed features."""
        parts = [] if self.projection is None else [self.projection(f).mean(dim=(2, 3)).float()]
        if stats is not None:
            parts.append(stats)
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return self.fc(h.to(self.fc.weight.dtype)).squeeze(1).float()

    def from_fixed_features(self, features: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """Quality scores (B,) from :meth:`fixed_features`' output: the trainable head alone."""
        if self.config.head == "anchored":
            f, q0, stats = features
            return q0 + self._correction(f, stats)
        (f,) = features
        h = self.projection(f).mean(dim=(2, 3))
        out = self.fc(h).squeeze(1)
        return torch.sigmoid(out) if self.config.activation == "sigmoid" else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quality scores (B,) for gray images (B, 1, H, W) in [0, 1]; higher = better."""
        return self.from_fixed_features(self.fixed_features(x))


def build_model(config: ModelConfig | None = None, weights=None, pretrained: bool = True) -> QualityModel:
    """A quality model whose trunk starts from the pretrained backbone ``config.backbone``."""
    from .backbones import get_backbone

    config = config or ModelConfig()
    backbone = get_backbone(config.backbone, weights, pretrained=pretrained)
    return QualityModel(backbone, config)


# ----------------------------------------------------------------------------- run directories


def save_model(model: QualityModel, run_dir: str | Path, *, history=None, extra=None, train_config=None,
               train_paths=None) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``run_dir``."""
    from . import __version__
    from .checkpoint import save_tensors

    run_dir = Path(run_dir)
    meta = {"crl_uiqa_version": __version__, "model_config": model.config.to_dict(), "history": history or [],
            **(extra or {})}
    if train_config is not None:
        meta["train_config"] = train_config.to_dict()
    if train_paths is not None:
        meta["n_train"] = len(train_paths)
    return save_tensors(run_dir / "model.safetensors", model.state_dict(), meta)


def load_model(run_dir: str | Path, device="cpu", *, allow_plugins: bool | None = None) -> tuple[QualityModel, dict]:
    """Load a trained model from a run directory (or its ``model.safetensors``), without pickle.

    A model is data: a ``python:module:function`` backbone named in it is
    refused unless ``allow_plugins`` (default: :func:`crl_uiqa.backbones.plugins_allowed`,
    set by the command line's ``--allow-plugin-backbones``). Damaged files are
    refused by :func:`crl_uiqa.checkpoint.load_tensors`.
    """
    from .backbones import is_plugin, plugins_allowed
    from .checkpoint import load_tensors
    from .errors import ModelError

    p = Path(run_dir)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.exists() and (p.parent / "last.safetensors").exists():
        raise NotFoundError(f"{p.parent} holds no model.safetensors, only the checkpoint last.safetensors (an "
                            "unfinished run, or a finished one whose model was removed); write its model with "
                            "--resume")
    if not p.is_file():
        raise NotFoundError(f"no model at {run_dir} (expected a run folder from fit or train, holding "
                            "model.safetensors and model.json)")
    if p.suffix.lower() == ".json":  # was read as a safetensors: "damaged ... header too large"
        raise ModelError(f"{p}: the JSON description of a model, not the model; give its run folder {p.parent} (or "
                         "its model.safetensors)")
    tensors, meta = load_tensors(p, device=device)
    if not isinstance(meta.get("model_config"), dict):
        raise ModelError(f"{p}: no model_config in its description: not a crl-uiqa quality model")
    try:
        mcfg = ModelConfig.from_dict(meta["model_config"])
    except (ConfigError, TypeError) as exc:
        raise ModelError(f"{p}: invalid model_config: {exc}") from None
    if is_plugin(mcfg.backbone) and not (plugins_allowed() if allow_plugins is None else allow_plugins):
        raise ModelError(f"{p}: names the plug-in backbone {mcfg.backbone!r}; a model is data and loading it does "
                         "not import code. If you trust this model, pass --allow-plugin-backbones "
                         "(Python: allow_plugins=True)")
    model = build_model(mcfg, pretrained=False)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shapes that disagree with model_config
        raise ModelError(f"{p} does not match its model_config: {str(exc).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ModelError(f"{p} does not match the model ({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    return model.to(device).eval(), meta
