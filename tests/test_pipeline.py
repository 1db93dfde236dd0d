"""End to end: all six notebooks through the runner behind run_all.sh, on a miniature of the embedded default.

The profile `extends: default` and shrinks only sizes (corpus size, steps, test-set subsets), so every code path
of `./run_all.sh` runs: synthetic corpora -> manifests -> priors -> SFT -> GRPO -> evaluation -> figures.
With EMORL_E2E_PROFILE=<profile> the same checks run on that profile's finished run instead (CI: the full default
run it has just made and compared with the golden tables), and no miniature is run.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from emorl_lib.infra.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, kit_paths):
    existing = os.environ.get("EMORL_E2E_PROFILE")
    if existing:
        from emorl_lib.profile import load_profile

        prof = load_profile(existing)
        return 0, prof.paths.results, prof.paths.run, existing
    root = tmp_path_factory.mktemp("e2e")
    prof = {
        "extends": "default",
        "paths": {"cache": str(kit_paths.cache), "runs": str(root / "runs"), "results": str(root / "results")},
        "data": {"synthetic_size": 0.1, "workers": 1},
        "experiments": {"corpora": ["iemocap", "meld"], "iemocap_folds": [1], "sft_conditions": ["IR", "ESR"],
                        "grpo_runs": [["binary", "ESR"], ["eswr", "ESR"], ["eswr", "IR"]]},
        "sft": {"max_steps": 4, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 4, "report_to": []},
        "grpo": {"max_steps": 2, "save_steps": 2, "num_generations": 3, "per_device_train_batch_size": 3,
                 "max_completion_length": 24, "report_to": []},
        "eval": {"max_utterances": 4, "bootstrap": 50, "max_new_tokens": {"IR": 8, "EUR": 24, "ESR": 24}},
    }
    path = root / "e2e.yaml"
    path.write_text(yaml.safe_dump(prof))
    from emorl_lib import runner

    rc = runner.main([str(path)])
    return rc, root / "results" / "e2e", root / "runs" / "e2e", path


def test_every_notebook_runs(e2e):
    rc, results, runs, _ = e2e
    assert rc == 0
    nbs = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(nbs) == 6
    assert sorted(p.name for p in (results / "notebooks").glob("*.ipynb")) == nbs


def test_every_table_is_written_with_values_in_range(e2e):
    _, results, _, _ = e2e
    tables = results / "tables"
    for name in ("main_results", "ablation_eswr", "ablation_reasoning", "crosscorpus", "inference_cost"):
        for ext in ("csv", "md", "tex"):
            f = tables / f"{name}.{ext}"
            assert f.exists() and f.stat().st_size > 0, f
    scores = pd.read_csv(tables / "eval_scores.csv")
    stages = set(scores["stage"])
    assert {"zeroshot", "sft", "grpo"} <= stages
    for m in ("ua", "wa", "f1", "unparseable"):
        assert scores[m].between(0, 1).all(), m
    for m in ("ua", "wa", "f1"):
        lo, hi = scores[f"{m}_lo"], scores[f"{m}_hi"]
        assert ((lo <= scores[m] + 1e-9) & (scores[m] <= hi + 1e-9)).all(), m
    assert (pd.read_csv(tables / "inference_cost.csv").select_dtypes("number") >= 0).all().all()
    for name in ("sft_training_summary", "grpo_training_summary", "data_summary", "zero_advantage_share"):
        assert (tables / f"{name}.csv").exists(), name
    report = (results / "evaluation_report.md").read_text()
    assert "SMOKE" in report and "73.54" in report  # our numbers beside the EmoBox reference


def test_every_figure_is_written(e2e):
    _, results, _, _ = e2e
    figs = {p.stem for p in (results / "figures").glob("*.png")}
    for name in ("data_class_distribution", "prior_heatmaps", "zero_advantage_vs_G", "sft_loss", "grpo_curves"):
        assert name in figs, (name, sorted(figs))
    assert len(figs) >= 12
    assert {p.stem for p in (results / "figures").glob("*.pdf")} & figs


def test_trained_adapters_and_logs(e2e):
    from emorl_lib.profile import load_profile
    from emorl_lib.training.experiments import grpo_runs, sft_runs

    _, _, runs, path = e2e
    prof = load_profile(path)
    exp = prof.section("experiments")
    finals = sorted(p.parent.name for p in (runs / "checkpoints").glob("*/final"))
    assert finals == sorted(r.name for r in sft_runs(exp) + grpo_runs(exp))
    grpo = grpo_runs(exp)
    assert grpo and sft_runs(exp)
    run = next((r for r in grpo if r.condition == "ESR"), grpo[0])  # the paper's method where the profile has it
    meta = json.loads((runs / "checkpoints" / run.name / "final" / "emorl_run.json").read_text())
    sft_name = run.name.replace(f"_grpo_{run.reward}_", "_sft_")
    assert meta["start_adapter"].endswith(f"{sft_name}/final")
    assert meta["steps"] == prof.values("grpo").max_steps
    log = pd.read_csv(runs / "logs" / f"{run.name}.csv")
    for col in ("reward", "reward_std", "frac_reward_zero_std", "kl", "completions/mean_length", "learning_rate",
                "rewards/accuracy_reward/mean", f"rewards/format_{run.condition}_reward/mean"):
        assert col in log.columns, col


def test_a_second_run_skips_finished_stages(e2e, capsys):
    rc, _, _, path = e2e
    from emorl_lib import runner

    capsys.readouterr()
    assert runner.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("current, skipped") == 6 and "running" not in out
