"""The paper's ablation (Table 1) on one data set.

Rows (the paper's order): pseudo-label regression alone; + distribution
smoothing; + smoothing + L_c; + smoothing + L_r; + all three. A row
"distance score" (s_i itself, no training) is added in front: it is what the
regressors learn from, so it is the bar they have to clear.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .files import holds_output_dir
from .model import ModelConfig
from .training import TrainConfig

ABLATION_ROWS: list[tuple[str, dict]] = [
    ("pseudo-label", {"smoothing": False, "consistency": False, "relativity": False}),
    ("+ smoothing", {"smoothing": True, "consistency": False, "relativity": False}),
    ("+ smoothing + L_c", {"smoothing": True, "consistency": True, "relativity": False}),
    ("+ smoothing + L_r", {"smoothing": True, "consistency": False, "relativity": True}),
    ("+ smoothing + L_c + L_r (CRL-UIQA)", {"smoothing": True, "consistency": True, "relativity": True}),
]


@holds_output_dir("out_dir")
def run_ablation(images, references, pairs_csv, out_dir, *, k: int = 5, layer: str = "block4",
                 backbone: str = "sononet16", weights=None, train_config: TrainConfig | None = None,
                 model_config: ModelConfig | None = None, rows: list | None = None, device="auto", crop=None,
                 num_workers=None, progress: bool = True, root=None) -> list[dict]:
    """Train each configuration and evaluate it on ``pairs_csv``; returns table rows.

    Embeddings are computed once; the smoothed and unsmoothed labels come from
    the same distances.
    """
    from .backbones import get_backbone
    from .checkpoint import RUN_FILES
    from .embed import compute_embeddings, resolve_device
    from .evaluation import pairwise_accuracy
    from .files import check_outputs_free, write_csv, write_json
    from .io import list_images, list_references
    from .pseudo_labels import pseudo_labels_from_distances, topk_mean_distance
    from .scoring import score_paths
    from .tables import pair_keys, read_pairs
    from .training import train

    out_dir = Path(out_dir)
    tc = train_config or TrainConfig()
    mc = model_config or ModelConfig(backbone=backbone)
    dev = resolve_device(device)
    root = root if root is not None else Path(pairs_csv).parent
    pairs = pair_keys(read_pairs(pairs_csv), root)
    test_paths = sorted({p for pr in pairs for p in pr[:2]})
    if rows is None:
        wanted = ABLATION_ROWS
    else:  # names of ABLATION_ROWS, or (name, options) with any TrainConfig field among the options
        named = dict(ABLATION_ROWS)
        wanted = [(r, named[r]) if isinstance(r, str) else tuple(r) for r in rows]
    # a file of the user's named like an output: refused before any work (the rows' runs: train checks each again)
    check_outputs_free(out_dir, ["ablation.csv", "ablation.json",
                                 *(f"{_run_folder(name)}/{f}" for name, _ in wanted for f in RUN_FILES)])

    net = get_backbone(backbone, weights)
    common = dict(layer=layer, device=dev, num_workers=num_workers, crop=crop)
    ref_list = list_references(references)
    refs = compute_embeddings(ref_list, net, strict=True, progress="references" if progress else False, **common)
    embs = compute_embeddings(list_images(images), net, progress="images" if progress else False, **common)
    dist = topk_mean_distance(embs.vectors, refs.vectors, k, device=dev)
    test_emb = compute_embeddings(test_paths, net, strict=True, progress="test images" if progress else False, **common)
    test_dist = topk_mean_distance(test_emb.vectors, refs.vectors, k, device=dev)

    def summarise(name, scores: dict, seconds: float) -> dict:
        acc = pairwise_accuracy(scores, pairs)
        row = {"configuration": name, "accuracy": acc["overall"]["accuracy"], "ci_low": acc["overall"]["ci_low"],
               "ci_high": acc["overall"]["ci_high"], "n_pairs": acc["overall"]["n"], "seconds": round(seconds, 1)}
        row.update({f"acc_{t}": v["accuracy"] for t, v in acc["by_type"].items()})
        return row

    size = tuple(getattr(net, "input_size", (224, 288)))
    table = [summarise(f"distance score at {size[0]}x{size[1]} (no training)", dict(zip(test_emb.paths, -test_dist)), 0.0)]
    if tuple(mc.image_size) != size:  # the same score at the resolution the regressors see
        small = compute_embeddings(test_paths, net, strict=True, size=mc.image_size, progress=False, **common)
        d_small = topk_mean_distance(small.vectors, refs.vectors, k, device=dev)
        table.append(summarise(f"distance score at {mc.image_size[0]}x{mc.image_size[1]} (no training)",
                               dict(zip(small.paths, -d_small)), 0.0))
    for name, opts in wanted:
        t0 = time.perf_counter()
        opts = dict(opts)
        pl = pseudo_labels_from_distances(dist, k=k, smoothing=opts.pop("smoothing", True))
        cfg = replace(tc, **opts)
        # the anchored head (the default) starts at its teacher, the distance to these references through this
        # row's label map (Eq. 2-3, smoothed or not), as in fit; without them every row failed after the labelling
        anchor = {} if mc.head != "anchored" else dict(
            references=ref_list, reference_crop=crop,
            anchor_transform=(pl.lmbda, float(pl.smoothed.min()), float(pl.smoothed.max())))
        res = train(embs.paths, pl.label, config=cfg, model_config=mc, weights=weights,
                    run_dir=out_dir / _run_folder(name), device=dev, crop=crop, num_workers=num_workers,
                    progress=progress, **anchor)
        sc = score_paths(res.model, test_paths, device=dev, crop=crop, num_workers=num_workers, progress=False)
        table.append(summarise(name, sc.as_dict(), time.perf_counter() - t0))
    keys: list[str] = []
    for r in table:
        keys += [k for k in r if k not in keys]
    write_csv(out_dir / "ablation.csv", table, keys)
    write_json(out_dir / "ablation.json", table)
    return table


def format_table(table: list[dict]) -> str:
    """Markdown table of :func:`run_ablation` rows."""
    from . import markdown

    types = sorted({k for r in table for k in r if k.startswith("acc_")})
    head = ["configuration", "accuracy", "95% CI", *[t.removeprefix("acc_") for t in types], "seconds"]
    return markdown.table(head, ([r["configuration"], f"{r['accuracy']:.3f}", f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
                                  *[f"{r[t]:.3f}" if t in r else "" for t in types], f"{r['seconds']}"]
                                 for r in table))


def _run_folder(name: str) -> str:
    """The folder of an ablation row's run: its name's words, lower case, joined by ``_``."""
    return "_".join("".join(c if c.isalnum() else " " for c in name).split()).lower()
