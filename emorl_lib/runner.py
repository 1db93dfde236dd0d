"""Run the numbered notebooks of a profile with papermill, skipping stages whose outputs are current.

One invalidation rule (infra/fingerprint.py): a stage is current when its executed copy exists and nothing it
depends on changed since it ran: the notebook, the profile sections it reads (its setup's, profile.READS), the
library code it runs (the import closure of the notebook's imports, not the whole library) with the numeric packages'
versions, and its inputs (the outputs of the stages it reads: manifests, trained adapters, predictions; an upstream
stage that reran and produced the same outputs does not rerun what follows). Inside a stage the same rule holds for
each trained adapter (training/runs.py) and each prediction file (evaluation/matrix.py), so a stage that reruns
because a plot changed retrains nothing. `--force` reruns the chosen stages and passes `force=True` to the notebooks
that take it (training retrains, evaluation regenerates, data preparation rebuilds its caches); `--list` says why
each stage is or is not current. A failing notebook stops the run and names the notebook, the cell and the
executed copy to open. Every run ends with a per-stage time table, also written to results/<profile>/run_summary.*,
and an HTML copy of each executed notebook beside it (results/<profile>/notebooks/<name>.html).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .infra import progress
from .infra.progress import PROGRESS_ENV
from .infra.config import ConfigError
from .infra.determinism import describe, thread_env
from .infra.fingerprint import (
    changed,
    digest,
    file_digest,
    module_digests,
    notebook_imports,
    package_versions,
    weights_digest,
)
from .infra.io import atomic_write_text, read_jsonl
from .infra.log import get_logger
from .infra.paths import REPO_ROOT, Paths, repo_root
from .profile import READS, eval_setup, load_profile

log = get_logger(__name__)


@dataclass(frozen=True)
class Stage:
    key: str  # "01"
    notebook: Path


@dataclass(frozen=True)
class StageSpec:
    """What a stage of the kit reads and writes: the profile sections it reads (`runtime` is always added), the
    stages whose outputs it reads, and the outputs its successors read (see `outputs_digest`)."""

    sections: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    outputs: str = ""  # manifests | adapters:sft | adapters:grpo | predictions | "" (nothing a later stage reads)


# Which upstream outputs each notebook of the kit reads; the sections it reads are its setup's (profile.READS).
STAGE_SPECS: dict[str, StageSpec] = {
    "01_data_prep": StageSpec(READS["data"], (), "manifests"),
    "02_emotion_prior": StageSpec(READS["prior"]),
    "03_sft_warmup": StageSpec(READS["sft"], ("01_data_prep",), "adapters:sft"),
    "04_grpo_eswr_esr": StageSpec(READS["grpo"], ("01_data_prep", "03_sft_warmup"), "adapters:grpo"),
    "05_evaluation": StageSpec(READS["eval"], ("01_data_prep", "03_sft_warmup", "04_grpo_eswr_esr"), "predictions"),
    "06_paper_figures": StageSpec(READS["eval"], ("01_data_prep", "02_emotion_prior", "03_sft_warmup",
                                                  "04_grpo_eswr_esr", "05_evaluation")),  # 02: its prior figure
}
ALWAYS_SECTIONS = ("runtime",)
# Fields of a prediction line that vary from run to run without changing the prediction (wall time).
VOLATILE_FIELDS = ("seconds",)


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def discover_stages(nb_dir: Path | None = None) -> list[Stage]:
    nb_dir = nb_dir or notebooks_dir()
    out = []
    for nb in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")):
        out.append(Stage(nb.name[:2], nb))
    return out


def select_stages(stages: list[Stage], wanted: list[str]) -> list[Stage]:
    if not wanted:
        return stages
    keys = {s.key: s for s in stages}
    names = {s.notebook.stem: s for s in stages}
    chosen = []
    for w in wanted:
        w = w.removesuffix(".ipynb")
        s = keys.get(w.zfill(2)) if w.isdigit() else names.get(w)
        if s is None:
            raise SystemExit(f"run_all: no notebook '{w}'; available: {', '.join(s.notebook.name for s in stages)}")
        chosen.append(s)
    return sorted(set(chosen), key=lambda s: s.key)


# ---- fingerprints ------------------------------------------------------------------------------------------------
def spec_of(stage: Stage, earlier: list[Stage]) -> StageSpec:
    """The kit's stages have a declared spec; any other notebook reads the whole profile and every earlier stage."""
    spec = STAGE_SPECS.get(stage.notebook.stem)
    if spec is not None:
        return spec
    return StageSpec(("*",), tuple(s.notebook.stem for s in earlier))


def components(stage: Stage, spec: StageSpec, sections: dict, inputs: dict[str, str]) -> dict:
    """Everything a stage's currency depends on, each part digested separately so a change can be named."""
    names = sorted(sections) if "*" in spec.sections else sorted(set(spec.sections) | set(ALWAYS_SECTIONS))
    mods = notebook_imports(stage.notebook)
    return {
        "notebook": file_digest(stage.notebook),
        "sections": {k: digest(sections.get(k)) for k in names},
        "code": module_digests(mods) if mods else {},
        "versions": package_versions(),
        "inputs": inputs,
    }


def reasons(old: dict | None, new: dict, executed: bool) -> list[str]:
    """Why a stage is not current ([] when it is)."""
    if old is None or "components" not in old:
        return ["never ran (no stamp)"]
    if not executed:
        return ["its executed copy is missing"]
    o, out = old["components"], []
    if o.get("notebook") != new["notebook"]:
        out.append("the notebook changed")
    for k in changed(o.get("sections", {}), new["sections"]):
        out.append(f"profile section '{k}' changed")
    files = changed(o.get("code", {}), new["code"])
    if files:
        out.append("library code changed: " + ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4
                                                                       else ""))
    pk = changed(o.get("versions", {}), new["versions"])
    if pk:
        out.append("package versions changed: " + ", ".join(f"{p} {new['versions'].get(p)}" for p in pk))
    for k in changed(o.get("inputs", {}), new["inputs"]):
        out.append(f"its input from {k} changed")
    return out


def _prediction_lines(path: Path) -> list:
    rows = []
    for r in read_jsonl(path, tolerate_partial_last=True):
        rows.append({k: v for k, v in r.items() if k not in VOLATILE_FIELDS})
    return rows


def outputs_digest(kind: str, paths: Paths) -> str:
    """A digest of what a stage's successors read from it (stable across reruns that produce the same results)."""
    if not kind:
        return ""
    parts: dict[str, str | None] = {}
    if kind == "manifests":
        for f in sorted(paths.manifests.glob("*.jsonl")):
            if not f.name.endswith(".descriptors.jsonl"):
                parts[f.name] = file_digest(f)
    elif kind.startswith("adapters:"):
        stage = kind.split(":", 1)[1]
        for d in sorted(paths.checkpoints.glob(f"*_{stage}_*/final")):
            parts[d.parent.name] = weights_digest(d)
    elif kind == "predictions":
        for f in sorted(paths.predictions.glob("*/*.jsonl")):
            parts[f"{f.parent.name}/{f.name}"] = digest(_prediction_lines(f))
    return digest(parts)


def _stamp_path(run_dir: Path, stage: Stage) -> Path:
    return run_dir / "stamps" / f"{stage.notebook.stem}.json"


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def takes_parameter(notebook: Path, name: str) -> bool:
    """Whether the notebook's `parameters` cell assigns `name` (papermill only injects what a notebook expects)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for c in nb.get("cells", []):
        if "parameters" in (c.get("metadata", {}).get("tags") or []):
            return re.search(rf"^{re.escape(name)}\s*=", "".join(c.get("source", "")), re.M) is not None
    return False


# ---- the run -----------------------------------------------------------------------------------------------------
@dataclass
class StageResult:
    notebook: str
    status: str  # ran | current | failed | not chosen | to run | current (listed)
    seconds: float = 0.0
    why: list[str] = field(default_factory=list)
    # a stage skipped as current: what its last run took and when it finished (so that a summary after an
    # incremental run still says where the time of the whole pipeline goes)
    last_seconds: float | None = None
    last_finished: str | None = None


def run(profile: str = "default", only: list[str] | None = None, force: bool = False,
        kernel: str = "python3", list_only: bool = False) -> int:
    try:
        prof = load_profile(profile)
    except ConfigError as e:
        log.error(f"{e}")
        return 2
    paths = prof.paths.ensure()
    # what the notebook kernels inherit: the runtime's threads, and progress as whole lines (an executed notebook and
    # the terminal its workers write to hold lines, not walls of carriage returns)
    os.environ.update({**thread_env(prof.section("runtime").threads), PROGRESS_ENV: "lines"})
    stages = discover_stages()
    if not stages:
        log.error(f"no numbered notebooks in {notebooks_dir()}")
        return 2
    chosen = {s.key for s in select_stages(stages, only or [])}
    executed_dir = paths.results / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    # notebooks run from notebooks/: a profile given as a file path must be absolute there
    profile_arg = str(Path(profile).resolve()) if profile.endswith((".yaml", ".yml")) else profile
    log.info(f"profile '{prof.name}' ({shown(prof.path)}): {len(chosen)} of {len(stages)} stages; results in "
             f"{shown(paths.results)}")
    if eval_setup(prof).smoke:
        log.info("SMOKE numbers: a model the kit builds, or synthetic corpora: they show the mechanism at work, "
                 "not what the method achieves")
    t_start = time.time()
    results: list[StageResult] = []
    outputs: dict[str, str] = {}  # stage name -> the digest of its outputs, as recorded when it last ran
    pending: set[str] = set()  # stages (listed only) that would run first, so their outputs are not known yet
    rc = 0
    for i, stage in enumerate(stages):
        name = stage.notebook.stem
        spec = spec_of(stage, stages[:i])
        stamp_path = _stamp_path(paths.run, stage)
        old = _read_stamp(stamp_path)
        out_nb = executed_dir / stage.notebook.name
        inputs = {k: outputs.get(k, "") for k in spec.inputs}
        comp = components(stage, spec, prof.sections, inputs)
        why = reasons(old, comp, out_nb.exists())
        if not why and old and spec.outputs and outputs_digest(spec.outputs, paths) != old.get("outputs"):
            why = ["its outputs changed or disappeared since it ran"]
        waits = sorted(set(spec.inputs) & pending)
        recorded = (old or {}).get("outputs", "") if spec.outputs else (old or {}).get("fingerprint", "")
        if stage.key not in chosen:
            outputs[name] = recorded
            results.append(StageResult(stage.notebook.name, "not chosen"))
            continue
        if list_only:
            if waits:
                why = why + [f"runs after {', '.join(waits)}, which would run first"]
            results.append(StageResult(stage.notebook.name, "to run" if why else "current", why=why))
            log.info(f"{stage.notebook.name}: " + ("to run: " + "; ".join(why) if why else "current"))
            if why:
                pending.add(name)
            outputs[name] = recorded
            continue
        if not why and not force:
            log.info(f"{stage.notebook.name}: current, skipped (--force reruns it)")
            results.append(StageResult(stage.notebook.name, "current", last_seconds=(old or {}).get("seconds"),
                                       last_finished=(old or {}).get("finished")))
            outputs[name] = recorded
            continue
        why = why or ["--force"]
        log.info(f"{stage.notebook.name}: running ({'; '.join(why)}) ...")
        progress.at(f"during {stage.notebook.name} (profile '{prof.name}')",
                    "run the same command again to resume: finished notebooks are skipped, training resumes from its "
                    "last checkpoint and evaluation keeps its predictions")
        t0 = time.time()
        stamp_path.unlink(missing_ok=True)
        params = {"profile": profile_arg}
        if force and takes_parameter(stage.notebook, "force"):
            params["force"] = True
        rc = _execute(stage, out_nb, params, kernel)
        seconds = round(time.time() - t0, 1)
        if rc != 0:
            results.append(StageResult(stage.notebook.name, "failed", seconds, why))
            break
        fp = digest(comp)
        made = outputs_digest(spec.outputs, paths) if spec.outputs else fp
        atomic_write_text(stamp_path, json.dumps({"fingerprint": fp, "components": comp, "outputs": made,
                                                  "seconds": seconds,
                                                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
        outputs[name] = made
        results.append(StageResult(stage.notebook.name, "ran", seconds, why))
        log.info(f"{stage.notebook.name}: done in {progress.duration(seconds)}")
    if not list_only:
        export_html(executed_dir)
        write_summary(paths, prof.name, results, round(time.time() - t_start, 1), force)
    return rc


def shown(path: Path | str | None) -> str:
    """A path as a person reads it: relative to the working folder when inside it."""
    if path is None:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def export_html(executed_dir: Path) -> list[Path]:
    """An HTML copy beside each executed notebook (<name>.html, figures and tables embedded), so a run's outputs
    can be read in a browser without Jupyter or a kernel. Paths inside the checkout are shown relative to it (a
    committed copy should not carry the machine's folders). Only a copy older than its notebook is written again; a
    notebook that cannot be converted is named in a warning and does not fail the run (the notebook is the record)."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    exporter = HTMLExporter()
    exporter.register_preprocessor(CoalesceStreamsPreprocessor(), enabled=True)  # progress bars: their last state
    written = []
    for nb_path in sorted(executed_dir.glob("[0-9][0-9]_*.ipynb")):
        html = nb_path.with_suffix(".html")
        if html.exists() and html.stat().st_mtime >= nb_path.stat().st_mtime:
            continue
        try:
            body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4))
        except Exception as e:  # noqa: BLE001 - any converter failure: the run's results stand
            log.warning(f"{nb_path.name}: no HTML copy ({type(e).__name__}: {e})")
            continue
        for root in sorted({str(repo_root()), str(REPO_ROOT)}, key=len, reverse=True):
            body = body.replace(root + "/", "")
        written.append(atomic_write_text(html, body))
    return written


def summary_markdown(profile: str, results: list[StageResult], total: float) -> str:
    lines = [f"Run of profile `{profile}`: {total:.0f} s in all.", "",
             "| stage | status | seconds | why it ran |", "|---|---|---|---|"]
    for r in results:
        why = "; ".join(r.why)
        if r.last_seconds is not None:
            why = f"skipped; its last run took {r.last_seconds:.0f} s (finished {r.last_finished})"
        lines.append(f"| {r.notebook} | {r.status} | {r.seconds:.0f} | {why} |")
    return "\n".join(lines) + "\n"


def write_summary(paths: Paths, profile: str, results: list[StageResult], total: float, force: bool) -> None:
    """Where the time went, per stage: logged and written to results/<profile>/run_summary.{json,md}."""
    from .infra.perf import load_average

    # the load average at the end says whether other jobs shared the cores (the time table means little otherwise)
    data = {"profile": profile, "seconds": total, "force": force, "machine": describe(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "load_average": load_average(),
            "stages": [{"notebook": r.notebook, "status": r.status, "seconds": r.seconds, "why": r.why,
                        **({"last_seconds": r.last_seconds, "last_finished": r.last_finished}
                           if r.last_seconds is not None else {})} for r in results]}
    atomic_write_text(paths.results / "run_summary.json", json.dumps(data, indent=1) + "\n")
    md = summary_markdown(profile, results, total)
    atomic_write_text(paths.results / "run_summary.md", md)
    lines = [f"finished in {progress.duration(total)} ({shown(paths.results / 'run_summary.md')}):"]
    for r in results:
        took = (f"{progress.duration(r.seconds)}" if r.status in ("ran", "failed") else
                f"(last run {progress.duration(r.last_seconds)})" if r.last_seconds is not None else "")
        lines.append(f"  {r.notebook.removesuffix('.ipynb'):<20} {r.status:<11} {took}")
    page = paths.results / "results.md"
    lines.append(f"results page: {shown(page)}" if page.exists() else f"results: {shown(paths.results)}")
    lines.append(f"the executed notebooks, to read in a browser: {shown(paths.results / 'notebooks')}/*.html")
    log.info("%s", "\n".join(lines))


def ipc_kernel_manager():
    """nbclient's kernel manager, talking to the kernel over local IPC sockets instead of TCP (nothing of the notebook
    crosses a network port, and the kernel has no cause to warn that it runs over TCP without encryption), and ending
    an idle kernel with a shutdown request alone: jupyter_client first sends SIGINT, which races the kernel's last
    message and makes it log "KeyboardInterrupt caught in kernel" on the terminal. (Ctrl-C reaches the kernel from
    the terminal directly, not through here.)"""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return IPCKernelManager


def _execute(stage: Stage, out_nb: Path, params: dict, kernel: str) -> int:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    try:
        pm.execute_notebook(
            str(stage.notebook), str(out_nb), parameters=params, kernel_name=kernel, cwd=str(stage.notebook.parent),
            progress_bar=False, log_output=False, kernel_manager_class=ipc_kernel_manager(),
        )
    except PapermillExecutionError as e:
        if e.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
            raise KeyboardInterrupt from None
        log.error(
            f"run_all: notebook {stage.notebook.name} FAILED in cell {e.cell_index} (execution count {e.exec_count}):"
            f"\n  {e.ename}: {e.evalue}\n  open the executed copy to see the traceback: {out_nb}",
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", nargs="?", default="default", help="params/<profile>.yaml or a YAML path")
    ap.add_argument("notebooks", nargs="*", help="a subset: numbers (01 03) or names; default all")
    ap.add_argument("--force", action="store_true",
                    help="rerun the chosen stages and recompute everything in them (training, predictions, caches)")
    ap.add_argument("--list", action="store_true", help="show which stages are current and why not, run nothing")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel (default: this interpreter's)")
    ap.add_argument("--check-golden", action="store_true",
                    help="after the run, compare the tables with tests/golden/<profile>/ and fail on a difference")
    ap.add_argument("--update-golden", action="store_true",
                    help="after the run, make its tables the golden set (tests/golden/<profile>/) and regenerate "
                         "the README's results section from them")
    a = ap.parse_args(argv)
    if a.profile and a.profile[:2].isdigit() and not a.profile.endswith((".yaml", ".yml")):
        a.notebooks.insert(0, a.profile)  # `run_all.sh 01 02`: notebooks of the default profile
        a.profile = "default"
    progress.clear()
    try:
        rc = run(a.profile, a.notebooks, a.force, a.kernel, a.list)
    except KeyboardInterrupt:
        progress.close_bars()
        log.error(progress.interrupted_line("run_all"))
        return progress.INTERRUPTED_EXIT
    if rc == 0 and not a.list and (a.check_golden or a.update_golden):
        from . import golden

        prof = load_profile(a.profile)
        if a.update_golden:
            golden.update(prof.name, prof.paths.tables)
        else:
            rc = golden.check(prof.name, prof.paths.tables)
    return rc


if __name__ == "__main__":
    sys.exit(main())
