"""Golden tables: a profile's result tables committed as its expected outputs, compared cell by cell after a run.

`tests/golden/<profile>/*.csv` hold every CSV table of `results/<profile>/tables/` minus the columns that measure
wall time (VOLATILE: they differ on every run and every machine) and the time table itself (VOLATILE_TABLES).
`check` compares a run's tables with them by exact string equality of every cell and prints each changed cell;
`update` makes a run's tables the golden set and regenerates the README's results section (between the
`<!-- results:<profile>:begin/end -->` markers) from them, so no number there is typed by hand. Commands:

    ./run_all.sh --update-golden            # run the default profile, then make its tables the golden set
    python -m emorl_lib.golden check   # compare results/default/tables with tests/golden/default
    python -m emorl_lib.golden readme  # rewrite the README's results section from the golden set (and the
                                       # planner's tables, from emorl_lib/plan.py)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

from .infra.io import atomic_write_text, read_csv
from .infra.log import get_logger
from .infra.paths import repo_root

log = get_logger(__name__)

VOLATILE = re.compile(r"seconds|per_second|runtime")  # column names that measure wall time
# Tables that are wall time through and through (which stages ran in this process, and for how long): never golden.
VOLATILE_TABLES = ("cost.csv",)
RUN_SUMMARY = "run_summary.json"  # copied beside the golden tables: which machine made them, and in how long


def golden_dir(profile: str = "default") -> Path:
    return repo_root() / "tests" / "golden" / profile


def _stable(rows: list[dict[str, str]], header: list[str]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in header if not VOLATILE.search(c)]
    return cols, [[r.get(c, "") for c in cols] for r in rows]


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of a CSV without its volatile columns."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return _stable(rows, list(reader.fieldnames or []))


def stable_csv(path: Path) -> str:
    cols, rows = read_table(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    w.writerows(rows)
    return buf.getvalue()


def compare(golden: Path, tables: Path) -> list[str]:
    """Every difference between the golden set and a run's tables, one line each (empty: equal)."""
    diffs: list[str] = []
    want = {p.name: p for p in sorted(Path(golden).glob("*.csv"))}
    have = {p.name: p for p in sorted(Path(tables).glob("*.csv")) if p.name not in VOLATILE_TABLES}
    if not want:
        return [f"{golden}: no golden tables (make them with ./run_all.sh --update-golden)"]
    for name in sorted(set(want) - set(have)):
        diffs.append(f"{name}: in the golden set, not written by the run")
    for name in sorted(set(have) - set(want)):
        diffs.append(f"{name}: written by the run, not in the golden set")
    for name in sorted(set(want) & set(have)):
        gc, grows = read_table(want[name])
        hc, hrows = read_table(have[name])
        if gc != hc:
            diffs.append(f"{name}: columns {gc} are now {hc}")
            continue
        if len(grows) != len(hrows):
            diffs.append(f"{name}: {len(grows)} rows in the golden set, {len(hrows)} now")
        for i, (g, h) in enumerate(zip(grows, hrows), 1):
            for c, a, b in zip(gc, g, h):
                if a != b:
                    label = f"row {i}" + (f" ({g[0]})" if g and g[0] and c != gc[0] else "")
                    diffs.append(f"{name} {label}, column '{c}': golden {a!r}, now {b!r}")
    return diffs


def check(profile: str = "default", tables: Path | None = None) -> int:
    """Compare a run's tables with the golden set; print every changed cell; 0 when equal, 1 otherwise."""
    from .profile import load_profile

    tables = Path(tables) if tables else load_profile(profile).paths.tables
    gdir = golden_dir(profile)
    diffs = compare(gdir, tables)
    n = len(list(gdir.glob("*.csv")))
    if diffs:
        bad = len({d.split(":")[0].split(" ")[0] for d in diffs})
        log.error("%d of %d tables differ from %s (%d differences):\n  %s", bad, n, gdir, len(diffs),
                  "\n  ".join(diffs[:200]) + (f"\n  ... {len(diffs) - 200} more" if len(diffs) > 200 else ""))
        return 1
    log.info("all %d tables equal the golden set %s", n, gdir)
    return 0


def update(profile: str = "default", tables: Path | None = None) -> Path:
    """Make a run's tables (without their volatile columns) the golden set, and regenerate the README section."""
    from .profile import load_profile

    prof = load_profile(profile)
    tables = Path(tables) if tables else prof.paths.tables
    src = [p for p in sorted(tables.glob("*.csv")) if p.name not in VOLATILE_TABLES]
    if not src:
        raise FileNotFoundError(f"{tables}: no tables to make golden (run ./run_all.sh {profile} first)")
    gdir = golden_dir(profile)
    if gdir.exists():
        shutil.rmtree(gdir)
    gdir.mkdir(parents=True)
    for p in src:
        atomic_write_text(gdir / p.name, stable_csv(p))
    summary = prof.paths.results / "run_summary.json"
    if summary.exists():
        shutil.copyfile(summary, gdir / RUN_SUMMARY)
    log.info("%d tables written to %s", len(src), gdir)
    write_readme(profile)
    return gdir


# ---- the README's results section -----------------------------------------------------------------------------
def markers(profile: str) -> tuple[str, str]:
    return f"<!-- results:{profile}:begin -->", f"<!-- results:{profile}:end -->"


_SCORE = re.compile(r"(^|_)(ua|wa|f1|value|diff)$")  # the result columns of a table (empty: the run is not trained)


def _cell(text: str) -> str:
    """A number as a reader wants it: one decimal for percentages and points, three significant digits below 10."""
    try:
        x = float(text)
    except ValueError:
        return text
    if x == int(x) and abs(x) < 1e6 and "." not in text:
        return text
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _md(path: Path, columns: list[str] | None = None) -> str:
    """A golden CSV as a Markdown table: `x`, `x_lo`, `x_hi` shown as one cell `x [lo, hi]`, numbers rounded, rows
    whose result columns are all empty (recipes this profile does not train) left out and counted."""
    rows = read_csv(path)
    header = [c for c in (rows[0] if rows else {}) if not VOLATILE.search(c)]
    cols = [c for c in columns if c in header] if columns else []
    cols = cols or header  # a table of another shape (an older golden set): every column
    cols = [c for c in cols if not (c.endswith(("_lo", "_hi")) and c[:-3] in cols)]
    scores = [c for c in cols if _SCORE.search(c)]
    kept = [r for r in rows if not scores or any(r.get(c, "") != "" for c in scores)]

    def show(r: dict[str, str], c: str) -> str:
        v = _cell(r.get(c, ""))
        lo, hi = r.get(c + "_lo", ""), r.get(c + "_hi", "")
        return f"{v} [{_cell(lo)}, {_cell(hi)}]" if v and lo and hi else v

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(show(r, c) for c in cols) + " |" for r in kept]
    if len(kept) < len(rows):
        out += ["", f"({len(rows) - len(kept)} rows without results left out: recipes this profile does not train.)"]
    return "\n".join(out) if kept else ""


README_TABLES = (  # (file, heading, columns or None for all): what the README shows of the golden set, in order
    ("main_results.csv", "Main table, UA / WA / macro-F1 % [95 % CI]",
     ["row", "condition", "meld_ua", "meld_wa", "meld_f1", "meld_n", "iemocap_ua", "iemocap_wa", "iemocap_f1",
      "iemocap_n"]),
    ("comparisons.csv", "Declared comparisons (profile section `comparisons`): B - A in points, 95 % paired bootstrap "
                        "interval", ["comparison", "scope", "test_sets", "metric", "a", "b", "a_value", "b_value",
                                     "diff", "seeds_favouring_b", "utterances_per_seed"]),
    ("ablation_eswr.csv", "ESWR ablation", None),
    ("crosscorpus.csv", "Cross-corpus accuracy %", None),
    ("grpo_training_summary.csv", "GRPO training, mean of the first vs the last 10 logged steps",
     ["run", "steps", "reward_first", "reward_last", "accuracy_first", "accuracy_last", "zero_advantage_share_first",
      "zero_advantage_share_last", "kl_first", "kl_last", "length_first", "length_last"]),
    ("training_runs.csv", "During training, at the start and at the end: greedy held-out UA % (held-out training "
                          "data: MELD dev, IEMOCAP's held-out slice) and the policy's exact expected accuracy % at "
                          "the sampling temperature on the training prompts and expected UA % on the held-out set; "
                          "min delta: the lowest logged training expected accuracy minus the start",
     ["run", "steps", "heldout_ua_start", "heldout_ua_end", "train_exp_acc_start", "train_exp_acc_end",
      "train_exp_acc_min_delta", "heldout_exp_ua_start", "heldout_exp_ua_end"]),
)


def policy_summary(path: Path) -> str:
    """One sentence on the collapse check over the GRPO runs of `training_runs.csv`: how many end below their start
    on their training prompts, and which dipped below it at a logged step (GRPO must not lower either), with the
    dip's standard error where the points are estimates."""
    runs = [r for r in read_csv(path) if r.get("train_exp_acc_start") and r.get("train_exp_acc_end")]
    if not runs:
        return ""
    below = [r["run"] for r in runs if float(r["train_exp_acc_end"]) < float(r["train_exp_acc_start"])]
    dips = [f"{r['run']} ({float(r['train_exp_acc_min_delta']):+.1f}"
            + (f" ± {float(r['train_exp_acc_min_delta_se']):.1f}" if r.get("train_exp_acc_min_delta_se") else "")
            + ")" for r in runs if r.get("train_exp_acc_min_delta") and float(r["train_exp_acc_min_delta"]) < 0]
    return (f"Of {len(runs)} GRPO runs, {len(runs) - len(below)} end at or above their start on their training "
            "prompts"
            + (f" and {len(below)} below it ({', '.join(below)})" if below else "")
            + "; " + (f"{len(dips)} dipped below the start at a logged step (lowest point minus the start, in "
                      f"points, ± its standard error where the points sample reasoning prefixes): "
                      f"{', '.join(dips)}." if dips else "none dipped below the start at a logged step."))


def readme_block(profile: str = "default") -> str:
    """The README's results section, generated from the golden tables only."""
    gdir = golden_dir(profile)
    begin, end = markers(profile)
    parts = [begin, f"<!-- generated by `python -m emorl_lib.golden readme` from tests/golden/{profile}/: "
                    "do not edit by hand -->", ""]
    if not list(gdir.glob("*.csv")):
        parts += [f"No golden set for this profile yet: `./run_all.sh{'' if profile == 'default' else ' ' + profile}"
                  " --update-golden` makes one.", "", end]
        return "\n".join(parts)
    for name, heading, columns in README_TABLES:
        table = _md(gdir / name, columns) if (gdir / name).exists() else ""
        if table:
            parts += [f"{heading} (`{name}`):", "", table, ""]
            if name == "training_runs.csv" and (line := policy_summary(gdir / name)):
                parts += [line, ""]
    summary = gdir / RUN_SUMMARY
    if summary.exists():
        s = json.loads(summary.read_text())
        m = s.get("machine", {})
        ran = [st for st in s.get("stages", []) if st.get("status") == "ran"
               or st.get("status") == "current" and st.get("last_seconds") is not None]
        load = (f"; {s['cpus']} cores, load average over the last 1 / 5 / 15 minutes at the end "
                f"{s['load_average'].replace(' ', ' / ')}" if s.get("load_average") and s.get("cpus") else "")
        some = " for the stages it ran" if any(st["status"] == "current" for st in ran) else ""
        parts += [f"Time per stage of the run that made this golden set ({s.get('seconds', 0) / 60:.0f} min in all"
                  f"{some}, "
                  f"{m.get('machine', '?')} CPU, torch threads {m.get('env', {}).get('OMP_NUM_THREADS', '?')} per "
                  f"process, finished {s.get('finished', '?')}{load}):", "",
                  "| stage | seconds |", "|---|---|"]
        parts += [f"| {st['notebook']} | {st['seconds']:.0f} |" if st["status"] == "ran" else
                  f"| {st['notebook']} | {st['last_seconds']:.0f} (skipped as current: its run that finished "
                  f"{st['last_finished']}) |" for st in ran] + [""]
    parts.append(end)
    return "\n".join(parts)


def readme_path() -> Path:
    return repo_root() / "README.md"


def current_readme_block(profile: str = "default", text: str | None = None) -> str | None:
    text = readme_path().read_text(encoding="utf-8") if text is None else text
    begin, end = markers(profile)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        return None
    return text[i:j + len(end)]


def write_readme(profile: str = "default") -> Path:
    """Replace the README's results section (between the markers) with the one the golden tables generate."""
    path = readme_path()
    text = path.read_text(encoding="utf-8")
    old = current_readme_block(profile, text)
    if old is None:
        begin, end = markers(profile)
        raise ValueError(f"{path}: no results section: expected the lines {begin} ... {end}")
    atomic_write_text(path, text.replace(old, readme_block(profile)))
    return path


PLANNED = ("paper",)  # profiles whose planner table the README shows (emorl_lib/plan.py readme_block)


def planned_block(profile: str) -> str:
    from .plan import readme_block
    from .profile import load_profile

    return readme_block(load_profile(profile))


def current_plan_block(profile: str, text: str | None = None) -> str | None:
    from .plan import readme_markers

    text = readme_path().read_text(encoding="utf-8") if text is None else text
    begin, end = readme_markers(profile)
    i, j = text.find(begin), text.find(end)
    return text[i:j + len(end)] if 0 <= i < j else None


def write_plan_blocks() -> Path:
    """Replace the README's planner tables (between the plan markers) with what the planner estimates now."""
    path = readme_path()
    text = path.read_text(encoding="utf-8")
    for profile in PLANNED:
        old = current_plan_block(profile, text)
        if old is None:
            raise ValueError(f"{path}: no planner table for profile {profile!r}: expected its plan markers")
        text = text.replace(old, planned_block(profile))
    atomic_write_text(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emorl_lib.golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["check", "update", "readme"])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--tables", default=None, help="a run's tables folder (default: results/<profile>/tables)")
    a = ap.parse_args(argv)
    if a.command == "check":
        return check(a.profile, a.tables)
    if a.command == "update":
        update(a.profile, a.tables)
        return 0
    write_readme(a.profile)
    write_plan_blocks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
