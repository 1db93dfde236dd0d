"""`emorl` command line: one subcommand per stage, each calling the same function its notebook calls.

Each stage adds itself with a small `add_<name>(subparsers)` function registered in SUBCOMMANDS.

Exit status: 0 done; 1 an error (its message names the file or setting); 2 a usage or profile error;
3 (`prepare`) data incomplete: official counts missed or cross-corpus entries unresolved (`--allow-partial` accepts a
known partial corpus); (`sft`, `grpo`, `plan`) the profile does not fit the GPU, even with the planner's changes that
keep the recipe; 130 interrupted (Ctrl-C), with one line saying where it stopped and how to resume.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .data.corpora import CORPORA

DATA_INCOMPLETE = 3  # exit status of `emorl prepare` when the data is incomplete (see the module docstring)


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="default", help="params/<profile>.yaml or a YAML path (default: default)")


def _load(args: argparse.Namespace, overrides: dict | None = None):
    from .profile import load_profile

    return load_profile(args.profile, overrides)


def _run_prepare(args: argparse.Namespace) -> int:
    from .data.corpora.report import LayoutError
    from .data.prep import prepare
    from .profile import data_setup

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
    if args.allow_partial:
        data["allow_partial"] = True
    prof = _load(args, {"data": data} if data else None)
    try:
        out = prepare(data_setup(prof), progress=not args.quiet)
    except (LayoutError, ValueError, KeyError) as e:
        print(f"emorl prepare: {e}", file=sys.stderr)
        return 1
    print(out.table())
    print(f"manifests: {out.paths.manifests}")
    problems = out.problems()
    if problems:
        verdict = "accepted (--allow-partial / data.allow_partial)" if out.cfg.allow_partial else "exit status 3"
        print(f"emorl prepare: data incomplete, {verdict}:\n  " + "\n  ".join(problems), file=sys.stderr)
        if not out.cfg.allow_partial:
            print("emorl prepare: fix the corpus roots, or pass --allow-partial for a corpus known to be partial",
                  file=sys.stderr)
            return DATA_INCOMPLETE
    return 0


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode corpora into the 16 kHz cache and write manifests + reports")
    _profile_args(p)
    p.add_argument("--corpus", action="append", choices=list(CORPORA),
                   help="prepare only this corpus (repeatable); default: the profile's data.corpora")
    p.add_argument("--root", action="append",
                   help="real corpus root for the matching --corpus (implies data.synthetic: false)")
    p.add_argument("--workers", type=int, help="decoding processes (default: data.workers)")
    p.add_argument("--allow-partial", action="store_true",
                   help="exit 0 even when official counts are missed or cross-corpus entries stay unresolved "
                        "(a corpus known to be partial); default: exit status 3")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_prepare)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.matrix import collect, run_matrix, write_environment
    from .evaluation.tables import write_all
    from .profile import eval_setup

    overrides = {"eval": {"max_utterances": args.max_utterances}} if args.max_utterances else None
    s = eval_setup(_load(args, overrides))
    try:
        if not args.tables_only:
            print(run_matrix(s, stages=args.stage, progress=not args.quiet).summary())
        write_environment(s)
        written = write_all(collect(s))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"emorl evaluate: {e}", file=sys.stderr)
        return 1
    print("written:\n  " + "\n  ".join(str(p) for p in written))
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score zero-shot + every trained adapter of the profile; write tables")
    _profile_args(p)
    p.add_argument("--stage", action="append", choices=["zeroshot", "sft", "grpo"],
                   help="evaluate only runs of this stage (repeatable); default: all")
    p.add_argument("--max-utterances", type=int, help="per test set (smoke run; stated in every table)")
    p.add_argument("--tables-only", action="store_true", help="no generation: rebuild tables from predictions")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_evaluate)


def _run_infer(args: argparse.Namespace) -> int:
    from .evaluation.infer import infer_folder

    prof = _load(args)
    ecfg = prof.section("eval")
    try:
        res = infer_folder(args.input, args.out, adapter=args.adapter, condition=args.condition,
                           labels=args.labels.split(",") if args.labels is not None else None,
                           backbone_cfg=prof.section("backbone"), prompt_cfg=prof.section("prompt"), paths=prof.paths,
                           batch_size=args.batch_size or ecfg.batch_size,
                           max_new_tokens_by_condition=ecfg.max_new_tokens,
                           require_answer_tag=ecfg.require_answer_tag, progress=not args.quiet,
                           long_audio=args.long_audio)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"emorl infer: {e}", file=sys.stderr)
        return 1
    print(res.summary())
    return 0


def add_infer(sub) -> None:
    p = sub.add_parser("infer", help="label a folder of audio files (wav, flac, mp3, mp4, ...) with emotion + reasoning")
    _profile_args(p)
    p.add_argument("--input", required=True, help="folder of audio files (searched recursively)")
    p.add_argument("--adapter", help="a saved LoRA adapter folder (default: the base model, zero-shot)")
    p.add_argument("--condition", choices=["IR", "EUR", "ESR"],
                   help="prompt condition (default: the adapter's, recorded when it was trained; else the profile's)")
    p.add_argument("--labels", help="comma-separated candidate labels, each one of the kit's labels (default: the "
                                    "adapter's; for the base model the seven of MELD)")
    p.add_argument("--out", default="emotions.csv",
                   help="x.csv or x.jsonl: both x.csv and x.jsonl are written (default: emotions.csv)")
    p.add_argument("--long-audio", choices=["first", "windows"], default="first",
                   help="audio longer than the model's window (30 s; the tiny model's own chunk): label its first "
                        "window only (default), or every window and combine them by majority")
    p.add_argument("--batch-size", type=int, help="default: eval.batch_size")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_infer)


def _run_train(args: argparse.Namespace) -> int:
    from .plan import DoesNotFit
    from .profile import training_setup
    from .training.runs import train_stage

    prof = _load(args)
    try:
        done = train_stage(training_setup(prof, args.command, only=args.run), force=args.force)
    except DoesNotFit as e:
        print(f"emorl {args.command}: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"emorl {args.command}: {e}", file=sys.stderr)
        return 1
    from .infra.log import is_main_process

    if is_main_process():  # under `accelerate launch`, once
        for name, final in done.items():
            print(f"{name}: {final}")
    return 0


def _add_train(sub, name: str, what: str) -> None:
    p = sub.add_parser(name, help=f"{what} for every run of the profile's experiment matrix (resumable); "
                                  "runs on several GPUs under `accelerate launch -m emorl_lib.cli`")
    _profile_args(p)
    p.add_argument("--run", action="append", help="train only this run (repeatable), e.g. meld_grpo_eswr_ESR")
    p.add_argument("--force", action="store_true", help="retrain from scratch even if a final adapter exists")
    p.set_defaults(func=_run_train)


def add_sft(sub) -> None:
    _add_train(sub, "sft", "SFT warm-up on rationale targets")


def add_grpo(sub) -> None:
    _add_train(sub, "grpo", "GRPO with ESWR/binary rewards and IR/EUR/ESR prompts")


def _run_config(args: argparse.Namespace) -> int:
    from .profile import describe

    prof = _load(args)
    rows = describe(prof, everything=args.all)
    print(f"profile {prof.name} ({prof.path}): {len(rows)} settings; 'from': the profile file or the class default; "
          "tags: quoted = the paper, via a third party; inferred = related work; kit = this kit's choice; "
          "library = TRL's / transformers' default")
    width = max(len(r["setting"]) for r in rows)
    for r in rows:
        value = str(r["value"])
        value = value if len(value) <= 48 else value[:45] + "..."
        print(f"{r['setting']:<{width}}  {value:<48}  {r['from']:<7}  {r['tag']:<11}  {r['why']}")
    return 0


def add_config(sub) -> None:
    p = sub.add_parser("config", help="every setting of a profile: value, where it comes from, provenance tag")
    _profile_args(p)
    p.add_argument("--all", action="store_true", help="also every untouched field of TRL's / transformers' configs")
    p.set_defaults(func=_run_config)


def _run_plan(args: argparse.Namespace) -> int:
    from .plan import gpu_from_arg, plan, render

    prof = _load(args)
    try:
        gpu = gpu_from_arg(args.gpu)
    except ValueError as e:
        print(f"emorl plan: {e}", file=sys.stderr)
        return 2
    p = plan(prof, gpu, clip_s=args.clip_seconds)
    print(render(p))
    return 0 if p.fits() else 3


def add_plan(sub) -> None:
    p = sub.add_parser("plan", help="estimate GPU memory and step time of the profile's GRPO and SFT settings "
                                    "(no weights, no download); exit status 3 when they do not fit")
    _profile_args(p)
    p.add_argument("--gpu", default="t4", help="t4 | a100-40 | h100, or a memory size in GiB (default: t4)")
    p.add_argument("--clip-seconds", type=float,
                   help="audio per prompt (default: the whole 30 s window, the longest clip the model takes)")
    p.set_defaults(func=_run_plan)


# Stages register here: name -> function adding its subparser.
SUBCOMMANDS: list[Callable] = [add_prepare, add_sft, add_grpo, add_evaluate, add_infer, add_config, add_plan]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emorl", description="emorl-kit: EMO-RL reproducibility kit")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .infra import progress
    from .infra.config import ConfigError

    args = build_parser().parse_args(argv)
    progress.clear()
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:  # a profile that cannot be read: say where, before any work
        print(f"emorl {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close_bars()
        print(progress.interrupted_line(f"emorl {args.command}"), file=sys.stderr)
        return progress.INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
