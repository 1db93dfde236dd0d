"""Settings: one home per setting (the section's config class), profiles checked whole before any work starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from emorl_lib.infra.config import PROVENANCE, ConfigError, resolve
from emorl_lib.infra.paths import REPO_ROOT
from emorl_lib.profile import (
    SECTIONS,
    TRAINER_SECTIONS,
    describe,
    load_profile,
    run_setup,
)
from emorl_lib.training.experiments import Run


@pytest.fixture()
def params(tmp_path, monkeypatch):
    """A kit home with params/ of our own: write(name, sections) -> profile name."""
    monkeypatch.setenv("EMORL_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()

    def write(name: str, sections: dict) -> str:
        (tmp_path / "params" / f"{name}.yaml").write_text(yaml.safe_dump(sections))
        return name

    return write


@pytest.mark.parametrize("section, key, value, message", [
    ("grpo", "num_generations", "six", r"grpo\.num_generations: expected an integer or null, got 'six'"),
    ("grpo", "learning_rate", -1e-5, r"grpo: learning_rate: expected a positive number, got -1e-05"),
    ("grpo", "num_generations", 1, r"num_generations must be >= 2"),
    ("grpo", "per_device_train_batch_size", 7, r"must be a multiple of num_generations \(6\)"),
    ("grpo", "loss_type", "gpro", r"loss_type 'gpro': expected one of"),
    ("grpo", "lr_scheduler_type", "cosin", r"lr_scheduler_type 'cosin': expected one of"),
    ("grpo", "bf16", True, r"grpo\.bf16: not a setting of this section: follows backbone\.dtype"),
    ("grpo", "lerning_rate", 1e-5, r"unknown key\(s\) \['lerning_rate'\].*did you mean 'learning_rate'"),
    ("sft", "max_steps", 0, r"sft: max_steps: expected a positive number of steps, or -1"),
    ("sft", "gradient_checkpointing", True, r"set backbone\.gradient_checkpointing"),
    ("eval", "max_new_tokens", {"IR": 0, "EUR": 8, "ESR": 8}, r"eval\.max_new_tokens"),
    ("reward", "gamma", "high", r"reward\.gamma: expected a number, got 'high'"),
    ("reward", "accuracy", "binary", r"unknown key\(s\) \['accuracy'\]"),   # the experiment matrix sets it
    ("prompt", "condition", "ESR", r"unknown key\(s\) \['condition'\]"),    # likewise
    ("backbone", "lora", {"r": 0}, r"lora\.r must be >= 1"),
    ("data", "workers", 0, r"workers >= 1"),
])
def test_a_bad_value_names_file_section_key_and_what_was_expected(params, section, key, value, message):
    name = params("bad", {section: {key: value}})
    with pytest.raises(ConfigError, match=message) as e:
        load_profile(name)
    assert str(e.value).startswith(str(Path(e.value.args[0].split(":")[0]))) and "bad.yaml" in str(e.value)


def test_an_unknown_section_is_an_error_with_a_suggestion(params):
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['gpro'\] \('gpro': did you mean 'grpo'\?\)"):
        load_profile(params("typo", {"gpro": {"learning_rate": 1e-5}}))


def test_overrides_are_checked_too():
    with pytest.raises(ConfigError, match="grpo.num_generations: expected an integer"):
        load_profile("default", {"grpo": {"num_generations": "six"}})
    with pytest.raises(ConfigError, match=r"overrides must be \{section: \{key: value\}\}"):
        load_profile("default", {"grpo": 3})


@pytest.mark.parametrize("section, old, new", [
    ("data", "validation_fraction", "heldout_fraction"), ("sft", "max_train_samples", "max_utterances"),
    ("grpo", "max_train_prompts", "max_utterances")])
def test_a_renamed_key_under_its_old_name_names_the_new_one(params, section, old, new):
    with pytest.raises(ConfigError, match=rf"{section}\.{old}: renamed; write '{new}' instead"):
        load_profile(params("old", {section: {old: 1}}))


def test_every_section_has_one_class_and_the_shipped_profiles_load():
    for key in SECTIONS:
        assert isinstance(SECTIONS[key], type)
    for f in sorted((REPO_ROOT / "params").glob("*.yaml")):
        load_profile(f.stem)


def test_a_grpo_setting_has_one_default_and_reaches_the_trainer_config_directly(params):
    """YAML -> the profile -> the run's setup -> its trainer config (a subclass of TRL's GRPOConfig), built once and
    handed to the trainer: no copy in between."""
    from trl import GRPOConfig

    from emorl_lib.training.grpo import EmoGRPOConfig

    assert issubclass(EmoGRPOConfig, GRPOConfig)
    run = Run("meld", "grpo", "IR", "eswr")
    default = run_setup(load_profile(params("empty", {})), run)
    assert default.args is default.args  # built once
    assert default.args.learning_rate == EmoGRPOConfig.__dataclass_fields__["learning_rate"].default
    assert default.args.beta == 0.04 != GRPOConfig.__dataclass_fields__["beta"].default  # TRL's moved default pinned
    set_ = run_setup(load_profile(params("set", {"grpo": {"learning_rate": 7e-6, "vllm_server_port": 9}})), run)
    assert set_.args.learning_rate == 7e-6 and set_.args.vllm_server_port == 9  # any TRL field, untouched by the kit
    assert set_.args.output_dir.endswith("meld_grpo_eswr_IR") and set_.args.reward_weights  # what the run adds


def test_the_profiles_list_only_what_differs_from_the_defaults():
    """A value written out equal to its class default is noise (and a second home for the setting); in a profile that
    extends another, a value that undoes the parent's (e.g. gpu-smoke's data.synthetic over paper's) is not."""
    for f in sorted((REPO_ROOT / "params").glob("*.yaml")):
        raw = yaml.safe_load(f.read_text())
        parent = raw.pop("extends", None)
        inherited = load_profile(parent).sections if parent else {}
        for section, values in raw.items():
            cls = SECTIONS[section]
            if hasattr(cls, "from_mapping"):  # a free mapping (the declared comparisons): no defaults to repeat
                continue
            default = resolve(cls, {}) if section in TRAINER_SECTIONS else cls()
            undone = inherited.get(section) or {}
            for key, value in (values or {}).items():
                if isinstance(value, dict) and hasattr(getattr(default, key), "__dataclass_fields__"):
                    inner = getattr(default, key)
                    same = [k for k, v in value.items() if getattr(inner, k) == v and k not in (undone.get(key) or {})]
                else:
                    same = [key] if getattr(default, key) == value and key != "path" and key not in undone else []
                assert not same, f"{f.name}: {section}.{key} {same} repeats the class default"


def test_checking_a_profile_leaves_a_running_accelerator_alone():
    """Building transformers' TrainingArguments resets accelerate's global state; checking must not do that."""
    from accelerate.state import PartialState

    PartialState()
    before = dict(PartialState._shared_state)
    load_profile("paper")
    assert PartialState._shared_state and PartialState._shared_state.keys() == before.keys()


def test_a_runs_digest_follows_values_not_spelling(params):
    run = Run("meld", "grpo", "IR", "eswr")

    def digest(name, sections):
        return run_setup(load_profile(params(name, sections)), run).digest()

    base = digest("a", {})
    assert digest("b", {"grpo": {"beta": 0.04}}) == base  # = the default
    assert digest("c", {"grpo": {"logging_steps": 5, "heldout_every": 3}}) == base  # what is logged only
    assert digest("d", {"data": {"workers": 1}, "experiments": {"workers": 2}}) == base  # how fast only
    assert digest("e", {"eval": {"batch_size": 3}}) == base  # evaluation
    assert digest("f", {"grpo": {"beta": 0.1}}) != base
    assert digest("g", {"reward": {"alpha": 0.3}}) != base
    assert digest("h", {"prompt": {"system_prompt": "Another."}}) != base


def test_config_command_tags_every_setting(capsys):
    from emorl_lib.cli import main

    assert main(["config", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^grpo\.num_generations\s+6\s+default\s+quoted", out, re.M)
    assert re.search(r"^backbone\.name\s+qwen2-audio-7b-instruct\s+profile", out, re.M)
    rows = describe(load_profile("paper"))
    assert all(r["tag"] in PROVENANCE + ("library", "see profile") for r in rows)
    assert {"sft", "grpo", "eval"} <= {r["setting"].split(".")[0] for r in rows if r["tag"] in PROVENANCE}


def test_every_value_in_the_paper_profile_carries_a_tag():
    """The paper profile is read by people checking what is known: each value says where it comes from."""
    lines = (REPO_ROOT / "params" / "paper.yaml").read_text().splitlines()
    leaves = [l for l in lines if re.match(r"^\s+\w+:\s*\S", l.split("#")[0]) or re.match(r"^\s+\w+:\s*$", l)]
    untagged = [l for l in leaves if not re.search(r"\[(quoted|inferred|kit)[\],]", l)
                and not l.strip().startswith(("iemocap:", "meld:", "ravdess:", "savee:", "path:"))]
    assert not untagged, untagged


def test_cli_reports_a_bad_profile_before_any_work(params, capsys):
    from emorl_lib.cli import main

    name = params("bad", {"grpo": {"num_generations": "six"}})
    assert main(["grpo", "--profile", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emorl grpo: ") and "grpo.num_generations" in err
    assert not (Path(REPO_ROOT) / "runs" / "bad").exists()
