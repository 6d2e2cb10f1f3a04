"""``mmroute data``: validate an outcome table, generate the synthetic default.

    mmroute data validate PATH [--images error|warn|ignore] [--dataset A+B] [--json]
                          [--image-root DIR] [--allow-outside-images]
    mmroute data synth OUT_DIR [--n N] [--seed S] [--image-size PX]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmroute.cli._types import add_image_access
from mmroute.vocabulary import IMAGE_POLICIES

if TYPE_CHECKING:  # pragma: no cover
    from mmroute.data.table import TableSummary


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="validate outcome tables, generate the synthetic default",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    val = sub.add_parser("validate", help="load a table, check it, print a summary (non-zero exit on problems)")
    val.add_argument("path", metavar="PATH",
                     help="a table file, a directory, <root>/<name>[+<name>...] or synthetic[:n=..,seed=..]")
    val.add_argument("--images", choices=IMAGE_POLICIES, default="error",
                     help="image paths that do not exist: fail (default), warn, or do not check")
    val.add_argument("--dataset", default=None, help="keep only these datasets, joined by '+'")
    val.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_image_access(val)
    val.set_defaults(func=cmd_validate)

    syn = sub.add_parser("synth", help="write the synthetic default table (CSV + PNG images)")
    syn.add_argument("out_dir", metavar="OUT_DIR", help="directory to write")
    syn.add_argument("--n", type=int, default=2000, help="number of instances (default 2000)")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    syn.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    syn.set_defaults(func=cmd_synth)
    return parser


def format_summary(summary: TableSummary, missing_per_model: dict[str, int]) -> str:
    """Human-readable table summary: counts, datasets, missing outcomes, per-model accuracy and cost."""
    lines = [f"{summary['source']}: {summary['n_instances']} instances x {summary['n_models']} models",
             f"instances with an image: {summary['n_with_image']}"]
    datasets = summary["datasets"]
    shown = ", ".join(f"{d} {n}" for d, n in list(datasets.items())[:20])
    more = f", ... ({len(datasets) - 20} more)" if len(datasets) > 20 else ""
    lines.append(f"datasets ({len(datasets)}): {shown}{more}")
    missing = {m: n for m, n in missing_per_model.items() if n}
    lines.append(f"missing outcomes: {summary['missing_outcomes']}"
                 + (" (" + ", ".join(f"{m} {n}" for m, n in missing.items()) + ")" if missing else ""))
    width = max([len("model")] + [len(m) for m in summary["model_accuracy"]])
    lines.append(f"{'model':<{width}}  accuracy   mean cost  missing")
    for m, acc in summary["model_accuracy"].items():
        if acc is None:  # every outcome missing: there is no accuracy to show, and 0 would be a lie
            lines.append(f"{m:<{width}}  {'no outcomes':>20}  {missing_per_model.get(m, 0):7d}")
            continue
        lines.append(f"{m:<{width}}  {acc:8.4f}  {summary['model_mean_cost'][m]:10.4g}  "
                     f"{missing_per_model.get(m, 0):7d}")
    empty = summary.get("models_without_outcomes") or []
    if empty:
        lines.append(f"warning: {len(empty)} model(s) have no outcome at all: {', '.join(empty)}")
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    from mmroute.data import TableValidationError, load_table

    try:
        table = load_table(args.path, images=args.images, dataset=args.dataset, image_root=args.image_root,
                           allow_outside_images=args.allow_outside_images)
    except TableValidationError as err:
        print(f"mmroute data validate: {err}", file=sys.stderr)
        return 1
    summary = table.summary()
    missing = {m: int(n) for m, n in zip(table.models, table.missing.sum(axis=0))}
    if args.json:
        print(json.dumps({**summary, "missing_per_model": missing}, indent=2))
    else:
        print(format_summary(summary, missing))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from mmroute.data import load_table, make_synthetic

    out = make_synthetic(args.out_dir, n_instances=args.n, seed=args.seed, image_size=args.image_size)
    table = load_table(out)
    print(f"wrote {table.n_instances} instances x {table.n_models} models "
          f"({', '.join(f'{d} {n}' for d, n in table.summary()['datasets'].items())}) to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``mmroute data ...`` as a function (tests and MLproject entry points call it)."""
    from mmroute.cli import main as cli_main

    return cli_main(["data", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
