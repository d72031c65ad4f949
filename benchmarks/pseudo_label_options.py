"""Which SonoNet layer and which k make the best pseudo-label (paper Eq. 1)? Plus throughput.

On the development protocol (:mod:`dev_protocol`: 45 HC18 references, 200
held-out test images degraded at two severities), score every pair image by the
distance score itself, ``s = -mean(k smallest Euclidean distances to the 45
references)`` (no training, no smoothing: Yeo-Johnson and min-max are monotone
and cannot change a pairwise order), for each embedding layer in
(block3, block4, block5, adaptation, logits) and k in (1, 3, 5, 10, 20), and
report the pairwise accuracy (ties 0.5) on the main pairs (noise, JPEG,
contrast, gamma), per type, and on the blur pairs.

Every image is embedded once: forward hooks on SonoNet's blocks 3-5 and first
adaptation layer collect all five pooled embeddings from a single forward pass
(checked against :meth:`SonoNet.embed` on the first batch).

Throughput, in the same run:

* bare SonoNet-16 forward at 224 x 288, batch 32, channels-last,
  ``torch.inference_mode``, after warm-up (random input);
* end-to-end embedding of the 200 clean test PNGs with
  :func:`crl_uiqa.embed.compute_embeddings` (decode + resize + forward);
* end-to-end pseudo-labels of all 999 HC18 images with
  :func:`crl_uiqa.pseudo_labels.label_images` and the 45 references (k=5, block5).

Prints Markdown tables and writes ``bench-out/pseudo_label_options.json``.

Usage::

    python benchmarks/pseudo_label_options.py [--hc18 DIR] [--workers 1] [--device auto]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dev_protocol import BLUR_TYPES, MAIN_TYPES, ROOT, build_dev_protocol  # noqa: E402

LAYERS = ("block3", "block4", "block5", "adaptation", "logits")
KS = (1, 3, 5, 10, 20)


def embed_all_layers(model, paths, *, layers=LAYERS, batch_size=32, device="cpu", num_workers=1, progress=True,
                     statistics=False):
    """Pooled embeddings of ``paths`` for several SonoNet layers from one forward pass each batch.

    Returns ``(kept_paths, {layer: (N, D) float32 array}, failures)``; with ``statistics`` the dict also
    holds ``"stats"``, the images' :func:`crl_uiqa.reference_stats.image_statistics` (N, 6) from the same batches
    (the six of ``SIX_STATISTICS``, as in the runs BENCHMARKS.md reports).
    """
    import torch

    from crl_uiqa.embed import prepare_model, resolve_device
    from crl_uiqa.io import iter_batches
    from crl_uiqa.reference_stats import SIX_STATISTICS, image_statistics

    dev = resolve_device(device)
    model = prepare_model(model, dev)
    modules = {"block1": model.blocks[0], "block2": model.blocks[1], "block3": model.blocks[2],
               "block4": model.blocks[3], "block5": model.blocks[4], "adaptation": model.adaptation[0]}
    current: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        if name in modules:
            handles.append(modules[name].register_forward_hook(
                lambda _m, _i, out, name=name: current.__setitem__(name, out.mean(dim=(2, 3)))))
    out: dict[str, list] = {name: [] for name in layers}
    if statistics:
        out["stats"] = []
    kept, failures, checked = [], [], False
    try:
        with torch.inference_mode():
            for batch in iter_batches(paths, size=tuple(model.input_size), batch_size=batch_size,
                                      num_workers=num_workers, failures=failures,
                                      progress="embedding (all layers)" if progress else False):
                x = batch.images.to(dev).contiguous(memory_format=torch.channels_last)
                current.clear()
                logits = model(x)
                current["logits"] = logits
                current["probs"] = logits.softmax(dim=1)
                if not checked:  # the hooks give exactly what the public API gives
                    for name in layers:
                        ref = model.embed(x, name)
                        if not torch.allclose(current[name], ref, rtol=1e-4, atol=1e-4):
                            raise RuntimeError(f"hooked {name} embedding differs from SonoNet.embed")
                    checked = True
                for name in layers:
                    out[name].append(current[name].float().cpu())
                if statistics:
                    out["stats"].append(image_statistics(x, SIX_STATISTICS).cpu())
                kept.extend(batch.indices)
    finally:
        for h in handles:
            h.remove()
    return [paths[i] for i in kept], {k: torch.cat(v).numpy() for k, v in out.items()}, failures


def layer_k_study(proto, model, *, device, workers, batch_size, n_boot=1000, progress=True) -> dict:
    """Pairwise accuracy of the distance score for every (layer, k)."""
    from crl_uiqa.evaluation import pairwise_accuracy
    from crl_uiqa.pseudo_labels import topk_mean_distance

    t0 = time.perf_counter()
    paths = list(proto.references) + list(proto.pair_images)
    kept, emb, failures = embed_all_layers(model, paths, batch_size=batch_size, device=device,
                                           num_workers=workers, progress=progress)
    if failures:
        raise RuntimeError(f"{len(failures)} dev-protocol images could not be read, e.g. {failures[0].path}")
    t_embed = time.perf_counter() - t0
    n_ref = len(proto.references)
    pairs = proto.pairs()
    main = [p for p in pairs if p[2] in MAIN_TYPES]
    blur = [p for p in pairs if p[2] in BLUR_TYPES]
    rows = []
    for layer in LAYERS:
        refs, imgs = emb[layer][:n_ref], emb[layer][n_ref:]
        for k in KS:
            d = topk_mean_distance(imgs, refs, k)
            scores = dict(zip(kept[n_ref:], (-d).tolist()))
            by_type = pairwise_accuracy(scores, pairs, n_boot=n_boot)["by_type"]
            m = pairwise_accuracy(scores, main, n_boot=n_boot)["overall"]
            b = pairwise_accuracy(scores, blur, n_boot=n_boot)["overall"]
            rows.append({"layer": layer, "k": k, "dim": int(refs.shape[1]), "main": m, "blur": b,
                         "by_type": by_type})
    return {"rows": rows, "n_images": len(kept) - n_ref, "n_references": n_ref, "n_pairs_main": len(main),
            "n_pairs_blur": len(blur), "embed_seconds": t_embed,
            "embed_images_per_s": len(kept) / t_embed}


def bare_forward_throughput(model, *, device, batch_size=32, warmup=2, min_seconds=8.0, min_iters=3) -> dict:
    """img/s of SonoNet-16's forward alone on random (B, 1, 224, 288) input."""
    import torch

    from crl_uiqa.embed import prepare_model, resolve_device

    dev = resolve_device(device)
    model = prepare_model(model, dev)
    h, w = model.input_size
    x = torch.rand(batch_size, 1, h, w, generator=torch.Generator().manual_seed(0)).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        n, t0 = 0, time.perf_counter()
        while n < min_iters or time.perf_counter() - t0 < min_seconds:
            model(x)
            n += 1
        sync()
        dt = time.perf_counter() - t0
    return {"images_per_s": n * batch_size / dt, "iterations": n, "batch_size": batch_size, "seconds": dt}


def end_to_end_embedding(model, paths, *, device, workers, batch_size) -> dict:
    from crl_uiqa.embed import compute_embeddings

    t0 = time.perf_counter()
    emb = compute_embeddings(paths, model, layer="block5", batch_size=batch_size, device=device,
                             num_workers=workers, progress=False)
    dt = time.perf_counter() - t0
    return {"images": len(emb.paths), "seconds": dt, "images_per_s": len(emb.paths) / dt}


def label_all(proto, *, weights, device, workers, batch_size) -> dict:
    from crl_uiqa.pseudo_labels import label_images

    t0 = time.perf_counter()
    res = label_images(str(proto.hc18_dir / "images"), proto.references, k=5, layer="block5", weights=weights,
                       device=device, num_workers=workers, batch_size=batch_size, progress=False)
    dt = time.perf_counter() - t0
    return {"images": len(res.paths), "references": len(proto.references), "seconds": dt,
            "images_per_s": (len(res.paths) + len(proto.references)) / dt, "lambda": res.labels.lmbda}


def _pct(s: dict) -> str:
    return f"{s['accuracy']:.3f}"


def markdown(study: dict) -> str:
    head = ["layer", "dim", "k", "main [95% CI]", *MAIN_TYPES, "blur", *BLUR_TYPES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in study["rows"]:
        cells = [r["layer"], str(r["dim"]), str(r["k"]),
                 f"{_pct(r['main'])} [{r['main']['ci_low']:.3f}, {r['main']['ci_high']:.3f}]",
                 *(_pct(r["by_type"][t]) for t in MAIN_TYPES), _pct(r["blur"]),
                 *(_pct(r["by_type"][t]) for t in BLUR_TYPES)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (tests/test_doc_commands.py parses the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hc18", default=None, help="HC18 folder (default: as in dev_protocol.py)")
    ap.add_argument("--dev", default=None, help="dev protocol folder (default bench-out/dev; built if incomplete)")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "pseudo_label_options.json"), help="JSON results")
    ap.add_argument("--weights", default=None, help="SonoNet16.npz or its folder (default: the usual resolution, "
                    "then ../shared/weights/sononet)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--workers", type=int, default=1, help="decoding worker processes (default 1)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-throughput", action="store_true", help="only the layer/k study")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from crl_uiqa.backbones import get_backbone
    from crl_uiqa.embed import resolve_device
    from crl_uiqa.files import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights
    if weights is None and not os.environ.get("CRL_UIQA_WEIGHTS_DIR"):
        shared = Path(os.environ.get("CRL_UIQA_SHARED", ROOT.parent / "shared")) / "weights" / "sononet"
        weights = str(shared) if (shared / "SonoNet16.npz").is_file() else None
    try:
        proto = build_dev_protocol(args.hc18, args.dev)
        model = get_backbone("sononet16", weights)
    except FileNotFoundError as exc:
        print(f"pseudo_label_options: error: {exc}", file=sys.stderr)
        return 1
    device = str(resolve_device(args.device))
    env = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
           "platform": platform.platform(), "workers": args.workers, "batch_size": args.batch_size}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    t0 = time.perf_counter()
    study = layer_k_study(proto, model, device=device, workers=args.workers, batch_size=args.batch_size)
    result = {"environment": env, "study": study}
    print(f"\n## Distance score s = -mean top-k distance, pairwise accuracy (ties 0.5)\n\n"
          f"{study['n_images']} pair images, {study['n_references']} references, {study['n_pairs_main']} main pairs "
          f"({', '.join(MAIN_TYPES)}), {study['n_pairs_blur']} blur pairs; all 5 layers from one pass: "
          f"{study['embed_seconds']:.0f} s ({study['embed_images_per_s']:.1f} img/s).\n")
    print(markdown(study))
    if not args.skip_throughput:
        bare = bare_forward_throughput(model, device=device, batch_size=args.batch_size)
        e2e = end_to_end_embedding(model, proto.test, device=device, workers=args.workers,
                                   batch_size=args.batch_size)
        allpl = label_all(proto, weights=weights, device=device, workers=args.workers, batch_size=args.batch_size)
        result["throughput"] = {"bare_forward": bare, "end_to_end_embedding": e2e, "pseudo_labels_all_hc18": allpl}
        print(f"\n## Throughput ({device}, {env['threads']} threads, {args.workers} decoding worker(s), "
              f"load average at start {env['load_average_at_start'][0]:.1f})\n")
        print("| what | images | seconds | img/s |\n|---|---|---|---|")
        print(f"| bare SonoNet-16 forward, 224x288, batch {bare['batch_size']}, channels-last | "
              f"{bare['iterations'] * bare['batch_size']} | {bare['seconds']:.1f} | {bare['images_per_s']:.1f} |")
        print(f"| end-to-end embedding from PNG (decode+resize+forward), block5 | {e2e['images']} | "
              f"{e2e['seconds']:.1f} | {e2e['images_per_s']:.1f} |")
        print(f"| pseudo-labels, all HC18 + {allpl['references']} references (label_images, k=5) | "
              f"{allpl['images']} | {allpl['seconds']:.1f} | {allpl['images_per_s']:.1f} |")
    result["total_seconds"] = time.perf_counter() - t0
    write_json(args.out, result)
    print(f"\nwrote {args.out} (total {result['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
