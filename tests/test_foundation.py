"""Foundation: profiles, the notebook runner behind run_all.sh (the environment: test_environment.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from conftest import write_notebook

from emorl_lib.infra.config import ConfigError, from_dict
from emorl_lib.infra.paths import REPO_ROOT
from emorl_lib.profile import load_profile

# ---- profiles --------------------------------------------------------------------------------------------------


@dataclass
class _Inner:
    r: int = 8


@dataclass
class _Section:
    lr: float = 1e-5
    name: str = "x"
    inner: _Inner = field(default_factory=_Inner)
    tags: list[str] = field(default_factory=list)


def test_from_dict_types_and_unknown_keys():
    s = from_dict(_Section, {"lr": 1, "inner": {"r": 4}, "tags": ["a"]}, where="p.yaml: grpo")
    assert s.lr == 1.0 and isinstance(s.lr, float) and s.inner.r == 4 and s.tags == ["a"]
    with pytest.raises(ConfigError, match=r"p\.yaml: grpo.*unknown key\(s\) \['lrr'\]"):
        from_dict(_Section, {"lrr": 1}, where="p.yaml: grpo")


def test_profiles_extend_and_override(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORL_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "base.yaml").write_text("grpo: {learning_rate: 1.0e-5, seed: 1}\npaths: {runs: r}\n")
    (tmp_path / "params" / "child.yaml").write_text("extends: base\ngrpo: {seed: 2}\n")
    p = load_profile("child", overrides={"grpo": {"learning_rate": 2e-5}})
    g = p.values("grpo")
    assert (g.learning_rate, g.seed) == (2e-5, 2)
    assert p.paths.run == tmp_path / "r" / "child"
    with pytest.raises(ConfigError, match="known profiles: base, child"):
        load_profile("nope")


def test_shipped_profiles_load():
    for f in sorted((REPO_ROOT / "params").glob("*.yaml")):
        prof = load_profile(f.stem)
        assert prof.paths.results.name == f.stem


# ---- runner ----------------------------------------------------------------------------------------------------


@pytest.fixture
def toy_kit(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORL_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "default.yaml").write_text("paths: {results: results, runs: runs}\n")
    log = tmp_path / "log.txt"
    for key in ("01_first", "02_second"):
        write_notebook(tmp_path / "notebooks" / f"{key}.ipynb",
                  f"open({str(log)!r}, 'a').write('{key} ' + profile + '\\n')")
    return tmp_path, log


def test_runner_runs_in_order_then_skips_current_stages(toy_kit, capsys):
    from emorl_lib import runner

    root, log = toy_kit
    assert runner.main([]) == 0
    assert log.read_text().split("\n")[:2] == ["01_first default", "02_second default"]
    assert (root / "results" / "default" / "notebooks" / "02_second.ipynb").exists()
    assert runner.main([]) == 0  # second run: nothing executes
    assert log.read_text().count("01_first") == 1
    assert "current, skipped" in capsys.readouterr().out
    # an edit to stage 01 reruns 01 and everything after it
    nb = root / "notebooks" / "01_first.ipynb"
    nb.write_text(nb.read_text().replace("'a'", "'a' ") )
    assert runner.main([]) == 0
    assert log.read_text().count("01_first") == 2 and log.read_text().count("02_second") == 2
    assert runner.main(["--force", "02"]) == 0
    assert log.read_text().count("02_second") == 3 and log.read_text().count("01_first") == 2


def test_runner_failure_names_notebook_cell_and_executed_copy(toy_kit, capsys):
    from emorl_lib import runner

    root, _ = toy_kit
    write_notebook(root / "notebooks" / "03_broken.ipynb", "raise ValueError('manifest missing')")
    assert runner.main([]) == 1
    err = capsys.readouterr().err
    assert "03_broken.ipynb FAILED in cell" in err and "ValueError: manifest missing" in err
    assert str(root / "results" / "default" / "notebooks" / "03_broken.ipynb") in err
    assert not (root / "runs" / "default" / "stamps" / "03_broken.json").exists()
    assert "manifest missing" in (root / "results" / "default" / "notebooks" / "03_broken.html").read_text()


def test_runner_leaves_an_html_copy_of_each_executed_notebook(toy_kit):
    """A reader sees a run's printed output and figures in a browser, no Jupyter needed; a current stage's copy is
    not written again."""
    from emorl_lib import runner

    root, _ = toy_kit
    write_notebook(root / "notebooks" / "03_figure.ipynb",
              "import matplotlib.pyplot as plt\nprint('three ' + 'plotted', " + repr(str(root / "runs" / "x.csv")) +
              ")\nplt.plot([1, 3, 2])\nplt.show()")
    assert runner.main([]) == 0
    out = root / "results" / "default" / "notebooks"
    assert sorted(p.name for p in out.glob("*.html")) == ["01_first.html", "02_second.html", "03_figure.html"]
    html = (out / "03_figure.html").read_text()
    assert "three plotted runs/x.csv" in html and "data:image/png;base64," in html
    assert str(root) not in html  # paths in the checkout are shown relative to it
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.html")}
    assert runner.main([]) == 0  # every stage current
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.html")} == before


def test_runner_ctrl_c_prints_one_line_and_the_same_command_resumes(toy_kit, capsys, monkeypatch):
    """Ctrl-C reaches the kernel (the cell raises KeyboardInterrupt) or the runner itself: either way one line
    saying where it stopped and how to resume, exit status 130, no traceback; rerunning skips finished notebooks."""
    from emorl_lib import runner

    root, log = toy_kit
    write_notebook(root / "notebooks" / "03_long.ipynb", "raise KeyboardInterrupt")
    assert runner.main([]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "[runner] run_all: interrupted during 03_long.ipynb (profile 'default'); run the same command again to "
        "resume: finished notebooks are skipped, training resumes from its last checkpoint and evaluation keeps its "
        "predictions")
    monkeypatch.setattr(runner, "_execute", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert runner.main([]) == 130  # 01 and 02 are current: skipped; the runner itself interrupted in 03
    assert "interrupted during 03_long.ipynb" in capsys.readouterr().err
    assert log.read_text().count("01_first") == 1


def test_runner_rejects_unknown_notebook(toy_kit):
    from emorl_lib import runner

    with pytest.raises(SystemExit, match="no notebook '07'"):
        runner.main(["default", "07"])


def test_runner_checks_the_whole_profile_before_running_any_notebook(toy_kit, capsys):
    """A typo in the last stage's section fails now, not after the earlier stages have run."""
    from emorl_lib import runner

    root, log = toy_kit
    (root / "params" / "default.yaml").write_text("paths: {results: results, runs: runs}\ngrpo: {num_generations: six}\n")
    assert runner.main([]) == 2
    assert "grpo.num_generations: expected an integer" in capsys.readouterr().err
    assert not log.exists() and not (root / "results" / "default" / "notebooks").exists()


# ---- warnings: the known harmless ones silenced by message, every other one still shown -----------------------------
def test_each_silenced_warning_is_documented_and_others_still_show():
    import warnings

    from emorl_lib.infra.log import KNOWN_HARMLESS, quiet_known_warnings

    pitfalls = (REPO_ROOT / "docs/pitfalls.md").read_text()
    section = pitfalls[pitfalls.index("## Warnings the kit silences"):]
    for message, category, module in KNOWN_HARMLESS:
        assert message.replace("\\", "").replace("`", "") in section.replace("`", ""), message
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_known_warnings()
        ns = {"__name__": "transformers.modeling_utils"}  # warnings issued as if from that module
        exec("import warnings\n"
             "warnings.warn('`is_gradient_checkpointing` is deprecated and will be removed in v6', FutureWarning)\n"
             "warnings.warn('something else changed', FutureWarning)\n", ns)
    assert [str(w.message) for w in seen] == ["something else changed"]
