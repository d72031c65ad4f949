"""``crl-uiqa embed``: save embeddings P(x) for reuse."""
from __future__ import annotations

from ._common import add_backbone, add_crop, add_runtime, crop_tuple, report_failures


def register(sub) -> None:
    p = sub.add_parser("embed", help="write embeddings of images (.npy or .safetensors)",
                       description="Embed images with the backbone and save the vectors. With .npy the paths go "
                       "to a sibling .paths.txt; with .safetensors they are stored in its metadata.")
    p.add_argument("--images", required=True, nargs="+", help="folder(s), glob(s), manifest CSV(s) or path lists (.txt)")
    p.add_argument("--out", required=True, help="output file, .npy or .safetensors")
    add_crop(p)
    add_backbone(p)
    add_runtime(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..backbones import get_backbone
    from ..embed import check_embeddings_path, check_one_line_paths, compute_embeddings
    from ..io import list_images

    check_embeddings_path(args.out)
    paths = list_images(args.images)
    check_one_line_paths(paths)  # before any work: save would refuse them at the end
    model = get_backbone(args.backbone, args.weights)
    emb = compute_embeddings(paths, model, layer=args.layer, batch_size=args.batch_size, device=args.device,
                             crop=crop_tuple(args.crop), strict=args.strict, num_workers=args.workers,
                             progress=not args.quiet)
    emb.save(args.out)
    print(f"wrote {emb.vectors.shape[0]} x {emb.vectors.shape[1]} embeddings ({args.layer}) to {args.out}")
    report_failures(emb.failures, args.out)
    return 0
