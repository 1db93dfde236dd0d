"""Run the numbered notebooks of a profile with papermill, skipping stages whose outputs are current.

A stage is current when its executed copy exists and its fingerprint matches: the notebook, the merged profile,
the library's source and the previous stage's fingerprint. Any change upstream reruns everything after it.
A failing notebook stops the run and names the notebook, the cell and the executed copy to open.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import progress
from .config import ConfigError, load_profile
from .determinism import runtime_config, thread_env
from .io import atomic_write_text
from .log import get_logger
from .paths import PACKAGE_ROOT, repo_root

log = get_logger(__name__)


@dataclass(frozen=True)
class Stage:
    key: str  # "01"
    notebook: Path


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


def _library_digest() -> str:
    h = hashlib.sha256()
    lib = PACKAGE_ROOT
    for f in sorted(lib.rglob("*")):
        if f.is_file() and f.suffix in (".py", ".jsonl", ".jinja", ".md", ".txt"):
            h.update(f.relative_to(lib).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def fingerprint(stage: Stage, profile_sections: dict, upstream: str, library: str) -> str:
    h = hashlib.sha256()
    h.update(stage.notebook.read_bytes())
    h.update(json.dumps(profile_sections, sort_keys=True, default=str).encode())
    h.update(upstream.encode())
    h.update(library.encode())
    return h.hexdigest()[:20]


def _stamp_path(run_dir: Path, stage: Stage) -> Path:
    return run_dir / "stamps" / f"{stage.notebook.stem}.json"


def run(profile: str = "default", only: list[str] | None = None, force: bool = False,
        kernel: str = "python3", list_only: bool = False) -> int:
    try:
        prof = load_profile(profile)
    except ConfigError as e:
        log.error(f"{e}")
        return 2
    paths = prof.paths.ensure()
    os.environ.update(thread_env(runtime_config(prof).threads))  # the notebook kernels inherit this environment
    stages = discover_stages()
    if not stages:
        log.error(f"no numbered notebooks in {notebooks_dir()}")
        return 2
    chosen = {s.key for s in select_stages(stages, only or [])}
    executed_dir = paths.results / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    library = _library_digest()
    upstream = ""
    # notebooks run from notebooks/: a profile given as a file path must be absolute there
    profile_arg = str(Path(profile).resolve()) if profile.endswith((".yaml", ".yml")) else profile
    log.info(f"profile '{prof.name}' ({prof.path}); results -> {paths.results}")
    if prof.name == "default":
        log.info("the embedded default runs a tiny model on synthetic corpora: its numbers are SMOKE numbers")
    for stage in stages:
        fp = fingerprint(stage, prof.sections, upstream, library)
        upstream = fp
        out_nb = executed_dir / stage.notebook.name
        stamp = _stamp_path(paths.run, stage)
        current = (out_nb.exists() and stamp.exists()
                   and json.loads(stamp.read_text()).get("fingerprint") == fp)
        if stage.key not in chosen:
            continue
        if list_only:
            log.info(f"{stage.notebook.name}: {'current' if current else 'to run'}")
            continue
        if current and not force:
            log.info(f"{stage.notebook.name}: current, skipped (--force reruns it)")
            continue
        log.info(f"{stage.notebook.name}: running ...")
        progress.at(f"during {stage.notebook.name} (profile '{prof.name}')",
                    "run the same command again to resume: finished notebooks are skipped, training resumes from its "
                    "last checkpoint and evaluation keeps its predictions")
        t0 = time.time()
        stamp.unlink(missing_ok=True)
        rc = _execute(stage, out_nb, profile_arg, kernel)
        if rc != 0:
            return rc
        atomic_write_text(stamp, json.dumps({"fingerprint": fp, "seconds": round(time.time() - t0, 1),
                                             "finished": time.strftime("%Y-%m-%d %H:%M:%S")}))
        log.info(f"{stage.notebook.name}: done in {time.time() - t0:.0f} s -> {out_nb}")
    return 0


def _execute(stage: Stage, out_nb: Path, profile_arg: str, kernel: str) -> int:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    try:
        pm.execute_notebook(
            str(stage.notebook), str(out_nb), parameters={"profile": profile_arg},
            kernel_name=kernel, cwd=str(stage.notebook.parent), progress_bar=True, log_output=False,
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
    ap.add_argument("--force", action="store_true", help="rerun stages whose outputs are current")
    ap.add_argument("--list", action="store_true", help="show which stages are current, run nothing")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel (default: this interpreter's)")
    a = ap.parse_args(argv)
    if a.profile and a.profile[:2].isdigit() and not a.profile.endswith((".yaml", ".yml")):
        a.notebooks.insert(0, a.profile)  # `run_all.sh 01 02`: notebooks of the default profile
        a.profile = "default"
    progress.clear()
    try:
        return run(a.profile, a.notebooks, a.force, a.kernel, a.list)
    except KeyboardInterrupt:
        progress.close_bars()
        log.error(progress.interrupted_line("run_all"))
        return progress.INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
