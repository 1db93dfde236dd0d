"""The runner's invalidation rule, --list reasons, --force reaching the notebooks, the run summary, golden tables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_notebook

from emorl_lib import golden, runner
from emorl_lib.infra.paths import REPO_ROOT


@pytest.fixture
def kit(tmp_path, monkeypatch):
    """A scratch kit with two notebooks named like the kit's data and prior stages (so their specs apply)."""
    monkeypatch.setenv("EMORL_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "default.yaml").write_text(
        "paths: {results: results, runs: runs}\ndata: {synthetic_seed: 1}\nreward: {alpha: 0.5}\neval: {batch_size: 8}\n")
    log = tmp_path / "log.txt"
    write_notebook(tmp_path / "notebooks" / "01_data_prep.ipynb",
              "from emorl_lib.infra import io\n"
              f"open({str(log)!r}, 'a').write(f'01 force={{force}}\\n')",
              'profile = "default"\nforce = False')
    write_notebook(tmp_path / "notebooks" / "02_emotion_prior.ipynb", f"open({str(log)!r}, 'a').write('02\\n')")
    return tmp_path, log


def _profile(root: Path, text: str) -> None:
    (root / "params" / "default.yaml").write_text(text)


def test_a_stage_reruns_only_for_what_it_reads_and_list_says_why(kit, capsys):
    root, log = kit
    assert runner.main([]) == 0 and log.read_text().splitlines() == ["01 force=False", "02"]
    capsys.readouterr()
    # a section only the evaluation reads: neither stage is affected
    _profile(root, (root / "params" / "default.yaml").read_text().replace("batch_size: 8", "batch_size: 4"))
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "01_data_prep.ipynb: current" in out and "02_emotion_prior.ipynb: current" in out
    # the reward section: the prior stage only, and --list names the section
    _profile(root, (root / "params" / "default.yaml").read_text().replace("alpha: 0.5", "alpha: 0.3"))
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "01_data_prep.ipynb: current" in out and "profile section 'reward' changed" in out
    assert runner.main([]) == 0 and log.read_text().splitlines()[-1] == "02" and log.read_text().count("01") == 1
    # the library code a stage imports: simulated edit of emorl_lib/infra/io.py
    real = runner.module_digests
    runner.module_digests = lambda mods: {k: (v + "x" if k.endswith("infra/io.py") else v)
                                          for k, v in real(mods).items()}
    try:
        assert runner.main(["--list"]) == 0
        out = capsys.readouterr().out
        assert "library code changed: emorl_lib/infra/io.py" in out
    finally:
        runner.module_digests = real


def test_force_reaches_the_notebooks_and_the_summary_is_written(kit, capsys):
    root, log = kit
    assert runner.main([]) == 0
    assert runner.main(["--force", "01"]) == 0
    assert log.read_text().splitlines() == ["01 force=False", "02", "01 force=True"]
    summary = json.loads((root / "results" / "default" / "run_summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["ran", "not chosen"]
    assert summary["stages"][0]["why"] == ["--force"] and summary["machine"]["env"]["OMP_NUM_THREADS"] == "1"
    assert summary["cpus"] >= 1 and len(summary["load_average"].split()) == 3  # was the machine shared?
    md = (root / "results" / "default" / "run_summary.md").read_text()
    assert "| 01_data_prep.ipynb | ran |" in md and "| 02_emotion_prior.ipynb | not chosen |" in md
    assert runner.main([]) == 0  # both current now: the summary still says what each took when it last ran
    summary = json.loads((root / "results" / "default" / "run_summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["current", "current"]
    assert all(s["last_seconds"] >= 0 and s["last_finished"] for s in summary["stages"])
    assert "skipped; its last run took" in (root / "results" / "default" / "run_summary.md").read_text()


def test_deleted_outputs_make_a_stage_stale(kit, capsys):
    root, _ = kit
    man = root / "runs" / "default" / "manifests"
    man.mkdir(parents=True)
    (man / "iemocap.jsonl").write_text('{"utt_id": "a"}\n')
    assert runner.main([]) == 0
    capsys.readouterr()
    (man / "iemocap.jsonl").write_text('{"utt_id": "b"}\n')
    assert runner.main(["--list"]) == 0
    assert "its outputs changed or disappeared since it ran" in capsys.readouterr().out


# ---- golden tables -------------------------------------------------------------------------------------------------
def test_golden_comparison_names_every_changed_cell(tmp_path):
    g, t = tmp_path / "golden", tmp_path / "tables"
    g.mkdir()
    t.mkdir()
    (g / "main.csv").write_text("method,ua,seconds_per_utt\nSFT,56.2,0.1\nGRPO,62.5,0.2\n")
    (t / "main.csv").write_text("method,ua,seconds_per_utt\nSFT,68.8,0.9\nGRPO,62.5,0.7\n")
    diffs = golden.compare(g, t)
    assert diffs == ["main.csv row 1 (SFT), column 'ua': golden '56.2', now '68.8'"]  # wall time is not compared
    (t / "extra.csv").write_text("a\n1\n")
    assert "extra.csv: written by the run, not in the golden set" in golden.compare(g, t)
    (t / "main.csv").write_text("method,ua,seconds_per_utt\nSFT,56.2,0.3\nGRPO,62.5,0.2\n")
    (t / "extra.csv").unlink()
    assert golden.compare(g, t) == []


def test_golden_update_and_readme_block(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORL_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "default.yaml").write_text("paths: {results: results, runs: runs}\n")
    tables = tmp_path / "results" / "default" / "tables"
    tables.mkdir(parents=True)
    (tables / "main_results.csv").write_text("method,MELD UA,seconds\nSFT (IR),31.0,3.2\n")
    (tables / "cost.csv").write_text("what,seconds\nnotebook 01,3.2\n")  # wall time only: never golden
    (tmp_path / "README.md").write_text("# kit\n\n<!-- results:default:begin -->\nOLD TEXT\n<!-- results:default:end -->\n")
    golden.update("default")
    assert not (tmp_path / "tests" / "golden" / "default" / "cost.csv").exists()
    assert (tmp_path / "tests" / "golden" / "default" / "main_results.csv").read_text() == \
        "method,MELD UA\nSFT (IR),31.0\n"
    readme = (tmp_path / "README.md").read_text()
    assert "| SFT (IR) | 31.0 |" in readme and "OLD TEXT" not in readme
    assert golden.current_readme_block("default") == golden.readme_block("default")
    assert golden.check("default") == 0
    summary = {"profile": "default", "seconds": 60.0, "finished": "2026-01-01 00:00:00", "cpus": 2,
               "load_average": "1.00 0.50 0.25", "machine": {"machine": "x86_64", "env": {"OMP_NUM_THREADS": "1"}},
               "stages": [{"notebook": "01.ipynb", "status": "current", "seconds": 0.0, "last_seconds": 300.0,
                           "last_finished": "2025-12-31 23:00:00"},
                          {"notebook": "02.ipynb", "status": "ran", "seconds": 60.0}]}
    (tmp_path / "tests" / "golden" / "default" / golden.RUN_SUMMARY).write_text(json.dumps(summary))
    block = golden.readme_block("default")
    assert "| 01.ipynb | 300 (skipped as current: its run that finished 2025-12-31 23:00:00) |" in block
    assert "| 02.ipynb | 60 |" in block and "for the stages it ran" in block and "1.00 / 0.50 / 0.25" in block


def test_policy_summary_counts_runs_ending_below_their_start_and_names_the_dips(tmp_path):
    path = tmp_path / "training_runs.csv"
    path.write_text("run,train_exp_acc_start,train_exp_acc_end,train_exp_acc_min_delta,train_exp_acc_min_delta_se\n"
                    "sft_a,,,,\n"                       # SFT rows carry no policy curve
                    "grpo_a,50.0,55.0,0,\n"
                    "grpo_b,50.0,51.0,-0.4,0.71\n"     # a dip it recovered from, estimated (reasoning)
                    "grpo_c,50.0,49.0,-1.0,\n")
    line = golden.policy_summary(path)
    assert line.startswith("Of 3 GRPO runs, 2 end at or above their start") and "1 below it (grpo_c)" in line
    assert "2 dipped below the start at a logged step" in line and "grpo_b (-0.4 ± 0.7), grpo_c (-1.0)" in line
    path.write_text("run,train_exp_acc_start,train_exp_acc_end,train_exp_acc_min_delta\ngrpo_a,50,55,0\n")
    assert golden.policy_summary(path).endswith("none dipped below the start at a logged step.")
    path.write_text("run,train_exp_acc_start,train_exp_acc_end\nsft_a,,\n")
    assert golden.policy_summary(path) == ""


@pytest.mark.parametrize("profile", sorted(p.name for p in (golden.repo_root() / "tests" / "golden").iterdir()
                                             if p.is_dir()))
def test_readme_results_section_is_what_the_golden_tables_generate(profile):
    block = golden.current_readme_block(profile)
    assert block is not None, f"README.md lacks the generated results section of profile {profile}"
    assert block == golden.readme_block(profile), \
        f"README results section is stale: run `python -m emorl_lib.golden readme --profile {profile}`"


# ---- what the entry points print, started as a user starts them ---------------------------------------------------
def _entry(args: list[str], root: Path, **env) -> subprocess.CompletedProcess:
    """A kit entry point in a fresh process (as `./run_all.sh` or a user's shell starts it), the scratch kit as home."""
    return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "EMORL_HOME": str(root), **env})


def test_python_m_runner_list_prints_a_line_per_stage_with_its_state(kit):
    root, _ = kit
    r = _entry(["-m", "emorl_lib.runner", "--list"], root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("[runner] profile 'default' (params/default.yaml): 2 of 2 stages")
    assert "[runner] 01_data_prep.ipynb: to run: never ran (no stamp)" in lines
    assert any(line.startswith("[runner] 02_emotion_prior.ipynb: to run: never ran") for line in lines)


def test_a_run_prints_each_stage_and_ends_with_a_short_summary(kit):
    root, _ = kit
    r = _entry(["-m", "emorl_lib.runner"], root)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "[runner] 01_data_prep.ipynb: running (never ran (no stamp)) ..." in out
    assert re.search(r"\[runner\] 02_emotion_prior\.ipynb: done in \d+ s", out)
    tail = out[out.index("[runner] finished in"):].splitlines()
    assert re.match(r"  01_data_prep +ran +\d+ s$", tail[1]) and re.match(r"  02_emotion_prior +ran", tail[2])
    assert tail[-2].startswith("results") and "notebooks/*.html" in tail[-1]
    assert "Kernel is running over TCP" not in r.stderr and "Unable to parse" not in r.stderr
    again = _entry(["-m", "emorl_lib.runner"], root)
    assert "01_data_prep.ipynb: current, skipped" in again.stdout and re.search(r"current +\(last run", again.stdout)


def test_golden_check_and_emorl_config_print_when_started_as_programs(tmp_path):
    same = REPO_ROOT / "tests" / "golden" / "default"
    r = _entry(["-m", "emorl_lib.golden", "check", "--tables", str(same)], tmp_path, EMORL_HOME=str(REPO_ROOT))
    assert r.returncode == 0 and re.match(r"\[golden\] all \d+ tables equal the golden set", r.stdout), r.stderr
    other = tmp_path / "tables"
    other.mkdir()
    (other / "a.csv").write_text("x\n1\n")
    r = _entry(["-m", "emorl_lib.golden", "check", "--tables", str(other)], tmp_path, EMORL_HOME=str(REPO_ROOT))
    assert r.returncode == 1 and r.stderr.startswith("[golden] ") and "a.csv: written by the run" in r.stderr
    emorl = Path(sys.executable).parent / "emorl"
    r = subprocess.run([str(emorl), "config", "--profile", "default"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert r.returncode == 0 and r.stdout.startswith("profile default") and "grpo.num_generations" in r.stdout
