"""``crl-uiqa export``: a trained model as ONNX or TorchScript, checked against PyTorch."""
from __future__ import annotations

from .. import validate
from ._common import add_crop, crop_tuple


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript (checked to give PyTorch's scores)",
        description=(
            "Write the model as ONNX (torch.onnx dynamo exporter; the legacy exporter when onnxscript is missing or "
            "the dynamo exporter cannot export the model, said in one INFO line, details with -v) "
            "or TorchScript (torch.jit.trace), with a dynamic batch axis: input 'images' (batch, 1, H, W) "
            "float32 in [0, 1] at the model's training size, output 'scores' (batch,), higher = better. "
            "The export is then run (ONNX Runtime / TorchScript) on random images, and on --check-images, "
            "and compared with PyTorch: the command fails, writing nothing, when a score differs by more "
            "than --atol. `select`/`live --runtime onnx|torchscript` use RUN_DIR/model.onnx or "
            "RUN_DIR/model.torchscript.pt when present."
        ),
    )
    p.add_argument("--model", required=True, help="run directory of `train`/`fit` (or its model.safetensors)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default=None,
                   help="export format (default: from the --out suffix, .onnx or .pt; onnx without --out); the check runs "
                   "the format written, whatever the suffix")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="output file (default: RUN_DIR/model.onnx or RUN_DIR/model.torchscript.pt)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest allowed |exported - PyTorch| score difference, a finite number > 0 (default 1e-4)")
    p.add_argument("--check-images", nargs="+", default=None, metavar="IMAGES",
                   help="real images (folders, globs, manifest CSVs, path lists) scored in the check besides random ones")
    p.add_argument("--max-check-images", type=int, default=32, help="use at most this many check images (default 32, at most 4096)")
    add_crop(p, what="check images")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="ONNX exporter: dynamo (torch.export-based, needs onnxscript), legacy (TorchScript-based) "
                   "or auto (dynamo when onnxscript is installed)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default: the exporter's); checked before any work against the range the "
                   "installed torch's exporter writes (the error says which)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import check_export_settings, default_export_path, export_model, format_from_path

    # 0 or less used none of --check-images, and the check still said OK over the random images alone; the check
    # images are held at once and scored as one batch (export.compare_scores): a batch's bound
    validate.integer(validate.flag("max_check_images"), args.max_check_images, minimum=1, maximum=validate.MAX_BATCH)
    fmt = args.format or (format_from_path(args.out) if args.out else "onnx")
    check_export_settings(fmt, atol=args.atol, exporter=args.exporter, opset=args.opset)  # before reading images
    out = args.out or default_export_path(args.model, fmt)
    images = None
    if args.check_images:
        images = _check_images(args.check_images, args.max_check_images, crop_tuple(args.crop))
    res = export_model(args.model, out, fmt, check=not args.no_check, atol=args.atol, check_images=images,
                       exporter=args.exporter, opset=args.opset)
    print(f"wrote {res.path} ({res.format}, {res.exporter} exporter, input (batch, 1, {res.image_size[0]}, "
          f"{res.image_size[1]}))")
    if res.max_abs_diff is not None:
        print(f"check: max |{res.format} - pytorch| = {res.max_abs_diff:.3g} over {res.n_checked} images "
              f"(atol {args.atol:g}): OK")
    return 0


def _check_images(sources, limit: int, crop) -> list:
    """The readable --check-images (at most ``limit``); unreadable ones are skipped and listed, as in every command
    that reads images, so one bad file in a folder does not stop the export."""
    from ..errors import InputError
    from ..io import list_images
    from ._common import read_images, report_failures

    failures: list = []
    images, _ = read_images(list_images(sources)[: max(0, limit)], crop, False, failures, "check images")
    report_failures(failures)
    if failures and not images:
        raise InputError(f"none of the {len(failures)} --check-images could be read (the first: {failures[0].path}: "
                         f"{failures[0].reason})")
    return images
