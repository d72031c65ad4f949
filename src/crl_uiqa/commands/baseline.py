"""``crl-uiqa baseline``: score images with a comparison method of Table 2 (BRISQUE, NIQE, MSSIM, ...).

A thin layer over :func:`crl_uiqa.baselines.run_baseline`; the methods come
from the registry :data:`crl_uiqa.baselines.BASELINES`, so methods added there
are available here without changes.
"""
from __future__ import annotations

from ..errors import ConfigError, CRLUIQAError, InputError, reworded
from ._common import add_crop, add_device, crop_tuple, option_value, read_images, report_failures


def register(sub) -> None:
    p = sub.add_parser(
        "baseline",
        help="score images with a baseline method (brisque, niqe, niqe-ref, mssim, ...) into path,score CSV",
        description="Score images with one of the comparison methods of the paper's Table 2 and write a CSV "
        "path,score (higher = better: BRISQUE and NIQE are negated). Methods comparing with high-quality "
        "standard planes (mssim, niqe-ref) need --references. `crl-uiqa baseline --list` lists the methods.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="method name (see --list)")
    p.add_argument("--list", action="store_true", help="list the available methods and what they need, then exit")
    p.add_argument("--images", nargs="+", metavar="SRC", help="images to score: folder(s), glob(s), manifest CSV(s) or path lists (.txt)")
    p.add_argument("--references", nargs="+", metavar="SRC", default=None,
                   help="high-quality reference images (standard planes) for methods that compare with them")
    p.add_argument("--out", metavar="CSV", help="output CSV with columns path,score")
    add_crop(p)
    add_crop(p, "--reference-crop", "references (default: --crop)")
    p.add_argument("--weights", default=None, metavar="PATH", help="model file, for methods that use one")
    add_device(p, "for methods that use torch (ignored by the others)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra method argument, VALUE parsed as JSON when possible, repeatable "
                   "(e.g. --option reduction=max --option size=[224,288] for mssim, "
                   "--option patch_size=64 for niqe-ref)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image instead of skipping and listing it")
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict:
    """``["k=v", ...]`` -> ``{k: json.loads(v) or v}`` (lists become tuples)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {item!r}")
        out[key] = option_value(raw)
    return out


def _list_methods() -> None:
    from ..baselines import SPECS

    for name in sorted(SPECS):
        spec = SPECS[name]
        needs = [f"references: {spec.references}"] if spec.references != "none" else []
        if spec.weights != "none":
            needs.append(f"weights: {spec.weights}")
        print(f"{name:12s} {spec.summary}" + (f"  [{'; '.join(needs)}]" if needs else ""))


def run(args) -> int:
    from ..baselines import get_spec, name_files, run_baseline
    from ..files import write_csv
    from ..io import list_images, list_references

    if args.list:
        _list_methods()
        return 0
    if not args.name:
        from ..baselines import BASELINES

        raise ConfigError(f"give a method NAME, one of: {', '.join(sorted(BASELINES))}")
    spec = get_spec(args.name)
    if not args.images or not args.out:
        raise ConfigError("--images and --out are required")
    if args.references and spec.references == "none":
        raise ConfigError(f"baseline {args.name!r} does not use --references")
    if not args.references and spec.references == "required":
        raise ConfigError(f"baseline {args.name!r} needs --references (high-quality reference images)")
    options = parse_options(args.option)

    failures: list = []
    images, paths = read_images(list_images(args.images), crop_tuple(args.crop), args.strict, failures, "reading images",
                          spec.undefined)
    references, ref_paths = None, []
    if args.references:
        ref_crop = crop_tuple(args.reference_crop) or crop_tuple(args.crop)
        references, ref_paths = read_images(list_references(args.references), ref_crop, args.strict, failures,
                                      "reading references", spec.undefined)
    if not images:
        report_failures(failures, args.out)
        raise InputError("none of the images could be read")
    if args.references and not references:
        report_failures(failures, args.out)
        raise InputError("none of the reference images could be read")
    try:
        scores = run_baseline(args.name, images, references=references, weights=args.weights,
                              device=args.device, **options)
    except CRLUIQAError as exc:  # named with the files; a library's own ValueError is a bug, not rephrased
        raise reworded(exc, name_files(str(exc), paths, ref_paths)) from None
    except ImportError as exc:  # a missing optional dependency: its message says what to install
        from ..cli import CLIError

        raise CLIError(str(exc)) from None
    write_csv(args.out, zip(paths, (float(s) for s in scores)), ["path", "score"])
    print(f"wrote {len(paths)} {args.name} scores to {args.out}")
    report_failures(failures, args.out)
    return 0
