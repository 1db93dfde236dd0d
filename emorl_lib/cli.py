"""`emorl` command line: one subcommand per stage, each calling the same function its notebook calls.

Each stage adds itself with a small `add_<name>(subparsers)` function registered in SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .corpora import CORPORA


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="default", help="params/<profile>.yaml (default: default)")


def _run_prepare(args: argparse.Namespace) -> int:
    from .corpora.report import LayoutError
    from .prep import prepare

    data: dict = {}
    if args.corpus:
        data["corpora"] = list(args.corpus)
    if args.root:
        if not args.corpus or len(args.root) != len(args.corpus):
            print("emorl prepare: give one --root per --corpus, in the same order", file=sys.stderr)
            return 2
        data["synthetic"] = False
        data["roots"] = dict(zip(args.corpus, args.root))
    if args.workers is not None:
        data["workers"] = args.workers
    try:
        out = prepare(args.profile, {"data": data} if data else None, progress=not args.quiet)
    except (LayoutError, ValueError, KeyError) as e:
        print(f"emorl prepare: {e}", file=sys.stderr)
        return 1
    print(out.table())
    print(f"manifests: {out.paths.manifests}")
    bad = [c for c, r in out.reports.items() if r.official_mismatches]
    if bad:
        print(f"!!! official counts do not match for: {', '.join(bad)} (see above)", file=sys.stderr)
    return 0


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode corpora into the 16 kHz cache and write manifests + reports")
    _profile_args(p)
    p.add_argument("--corpus", action="append", choices=list(CORPORA),
                   help="prepare only this corpus (repeatable); default: the profile's data.corpora")
    p.add_argument("--root", action="append",
                   help="real corpus root for the matching --corpus (implies data.synthetic: false)")
    p.add_argument("--workers", type=int, help="decoding processes (default: data.workers)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_prepare)


# Stages register here: name -> function adding its subparser.
SUBCOMMANDS: list[Callable] = [add_prepare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emorl", description="emorl-kit: EMO-RL reproducibility kit")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
