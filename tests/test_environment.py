"""The environment: the lock against pyproject.toml, the installed set and environment.yml; the notebooks' shared
parts (setup cell, kernel); the setup cell's behaviour, and (slow) on a simulated hosted runtime."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement

from emorl_lib.infra import envlock, kernel
from emorl_lib.infra.paths import REPO_ROOT

LOCKS = sorted(REPO_ROOT.glob("requirements-py*.lock"))
SETUP_CELL = (REPO_ROOT / "notebooks" / "SETUP_CELL.txt").read_text().rstrip("\n")
PRIVATE_API = {"transformers", "trl", "peft", "bitsandbytes"}  # pinned exactly in pyproject.toml; ranges elsewhere


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _torch_pin() -> str:
    lines = [l for l in (REPO_ROOT / "requirements-torch.txt").read_text().splitlines() if l and l[0] != "#"]
    assert len(lines) == 1 and re.fullmatch(r"torch==[\w.+]+", lines[0]), lines
    return lines[0].split("==")[1]


# ---- the lock ----------------------------------------------------------------------------------------------------


def test_locks_exist_for_the_hosted_runtimes_python_and_this_one():
    assert {p.name for p in LOCKS} >= {"requirements-py311.lock", "requirements-py312.lock"}
    assert envlock.lock_path() in LOCKS


@pytest.mark.parametrize("lock_file", LOCKS, ids=lambda p: p.name)
def test_lock_satisfies_every_requirement_of_pyproject(lock_file):
    lock = envlock.read_lock(lock_file)
    py = re.fullmatch(r"requirements-py(\d)(\d+)\.lock", lock_file.name).groups()
    env = {"python_version": ".".join(py), "python_full_version": ".".join(py) + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    checked = 0
    for r in reqs:
        name = envlock.normalize(r.name)
        if name == envlock.KIT or (r.marker and not r.marker.evaluate(env | {"extra": ""})):
            continue
        assert name in lock.pins, f"{lock_file.name} has no {r}: run scripts/lock.sh"
        assert r.specifier.contains(lock.pins[name], prereleases=True), \
            f"{lock_file.name} pins {name}=={lock.pins[name]}, pyproject.toml asks {r}: run scripts/lock.sh"
        checked += 1
    assert checked >= 20
    # torch took part in the resolution but is not in the lock, nor is its CUDA stack
    assert "torch" in lock.excluded and "torch" not in lock.pins
    assert not any(n.startswith("nvidia-") for n in lock.pins)
    assert "scripts/lock.sh" in lock_file.read_text().split("\n", 3)[1]  # uv's header: how to refresh


def test_lock_pins_every_package_exactly_with_hashes(tmp_path):
    text = envlock.lock_path().read_text()
    lock = envlock.read_lock(envlock.lock_path())
    assert len(lock.pins) > 150  # transitive packages included (numba, llvmlite, scipy, ...)
    assert {"numba", "llvmlite", "scipy", "nbclient", "pyarrow"} <= set(lock.pins)
    assert text.count("--hash=sha256:") >= len(lock.pins)
    # the parser refuses what would silently let a version float
    bad = tmp_path / "requirements-py311.lock"
    bad.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="exact pin"):
        envlock.read_lock(bad)


def test_pyproject_pins_exactly_only_the_private_api_packages():
    deps = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    exact = {r.name for r in deps if any(s.operator == "==" for s in r.specifier)}
    assert exact == PRIVATE_API
    assert "torch" not in {r.name for r in deps}  # the runtime's own build is kept
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"notebooks", "dev"} <= set(extras)
    assert not any(Requirement(r).name in {"jupyterlab", "ipykernel", "papermill"} for r in
                   _pyproject()["project"]["dependencies"])


def test_installed_environment_is_exactly_the_lock():
    lock = envlock.read_lock(envlock.lock_path())
    have = envlock.installed()
    drift = envlock.compare(lock, have)
    assert not drift, (f"{sys.prefix} differs from {lock.path.name} (rm {sys.prefix}/.emorl-installed and rerun "
                       f"./run_tests.sh: it reinstalls the lock):\n{drift.report()}")
    assert "torch" in have


def test_compare_names_every_kind_of_drift(tmp_path):
    lock_file = tmp_path / "requirements-py311.lock"
    lock_file.write_text("# header\nnumpy==2.4.6 \\\n    --hash=sha256:00\n    # via x\nPyYAML==6.0.3\nsix==1.17.0\n\n"
                         "# The following packages were excluded from the output:\n# torch\n# triton\n")
    lock = envlock.read_lock(lock_file)
    assert lock.pins == {"numpy": "2.4.6", "pyyaml": "6.0.3", "six": "1.17.0"}
    assert lock.excluded == ["torch", "triton"]
    drift = envlock.compare(lock, {"numpy": ["2.4.6"], "pyyaml": ["6.0.2"], "torch": ["2.13.0+cpu"], "pip": ["24"],
                                   "emorl-kit": ["0.1.0"], "requests": ["2.0"], "attrs": ["1", "2"]})
    assert drift.missing == {"six": "1.17.0"}
    assert drift.wrong == {"pyyaml": ("6.0.3", "6.0.2")}
    assert drift.extra == {"requests": "2.0", "attrs": "1"}
    assert drift.duplicated == {"attrs": ["1", "2"]}
    assert not envlock.compare(lock, {"numpy": ["2.4.6"], "pyyaml": ["6.0.3"], "six": ["1.17"]})


def test_environment_yml_has_the_lock_and_torch():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = dict(envlock._PIN.match(line).groups() for line in pip_block)
    pins = {envlock.normalize(k): v for k, v in pins.items()}
    assert pins.pop("torch") == _torch_pin()
    assert pins == envlock.read_lock(REPO_ROOT / "requirements-py311.lock").pins


# ---- notebooks: one setup cell, the kit's kernel -----------------------------------------------------------------

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_the_setup_cell_and_the_kit_kernel(path):
    nb = nbformat.read(path, as_version=4)
    setup = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Setup:")]
    assert len(setup) == 1 and setup[0].source == SETUP_CELL, \
        f"{path.name}: setup cell differs from notebooks/SETUP_CELL.txt: run scripts/sync_notebooks.py"
    assert nb.metadata["kernelspec"] == {"name": kernel.KERNEL_NAME, "display_name": kernel.DISPLAY_NAME,
                                         "language": "python"}


def _fake_venv(folder: Path, mark: str) -> Path:
    """A venv stand-in whose python is this interpreter with EMORL_TEST_ENV=<mark>."""
    (folder / "bin").mkdir(parents=True)
    py = folder / "bin" / "python"
    py.write_text(f"#!/bin/sh\nEMORL_TEST_ENV={mark} exec {sys.executable} \"$@\"\n")
    py.chmod(0o755)
    return folder


def _fake_checkout(folder: Path, with_venv: bool = False) -> Path:
    (folder / "emorl_lib").mkdir(parents=True)
    (folder / "notebooks").mkdir()
    (folder / "scripts").mkdir()
    shutil.copy2(REPO_ROOT / "scripts" / "notebook_setup.py", folder / "scripts" / "notebook_setup.py")
    (folder / "pyproject.toml").write_text("[project]\nname = 'emorl-kit'\n")
    if with_venv:
        _fake_venv(folder / ".venv", folder.name)
    return folder.resolve()  # the cell sees os.getcwd(), symlinks resolved


def test_kit_kernel_runs_a_notebook_in_its_checkouts_venv(tmp_path, monkeypatch):
    import papermill as pm

    data = tmp_path / "jupyter"
    kdir = kernel.install(_fake_venv(tmp_path / "registered", "registered"), data)
    monkeypatch.setenv("JUPYTER_PATH", str(data))  # searched before the user's and the venv's kernels
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, sys; print(os.environ.get('EMORL_TEST_ENV'), sys.version_info[:2])")])
    nb.metadata["kernelspec"] = {"name": kernel.KERNEL_NAME, "display_name": kernel.DISPLAY_NAME,
                                 "language": "python"}
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)

    def run_in(cwd: Path) -> str:  # no kernel_name: papermill takes the notebook's, as JupyterLab does
        out = pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), cwd=str(cwd), progress_bar=False)
        return out.cells[0].outputs[0]["text"].split()[0]

    clone = _fake_checkout(tmp_path / "clone-a", with_venv=True)
    assert run_in(clone / "notebooks") == "clone-a"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_in(elsewhere) == "registered"
    # the registered venv gone: a clear message instead of another Python
    shutil.rmtree(tmp_path / "registered")
    r = subprocess.run(["sh", str(kdir / "launch.sh"), "conn.json"], cwd=elsewhere, capture_output=True, text=True)
    assert r.returncode == 1 and "no emorl-kit checkout with a .venv above" in r.stderr


def test_kit_kernel_carries_the_pinned_cpu_environment(tmp_path):
    """A notebook opened by hand computes as the runner's kernels do: the pins reach the kernel before torch loads."""
    from emorl_lib.infra.determinism import kernel_env

    kdir = kernel.install(_fake_venv(tmp_path / "v", "v"), tmp_path / "jupyter")
    env = json.loads((kdir / "kernel.json").read_text())["env"]
    assert env == kernel_env() and env["OMP_NUM_THREADS"] == "1"


# ---- the setup cell ----------------------------------------------------------------------------------------------


@pytest.fixture
def cell(monkeypatch, capsys):
    """Run the setup cell as on a Python without the kit; pip and git are recorded, not run."""
    calls: list[list[str]] = []
    real_version = importlib.metadata.version

    def version(name):
        if name == "emorl-kit":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    def check_call(cmd, **kw):
        calls.append([str(c) for c in cmd])
        if "-c" in cmd:  # the constraints file is removed once pip is done
            constraints.append(Path(cmd[cmd.index("-c") + 1]).read_text())
        if cmd[0] == "git":  # `git clone URL`: into the working folder, named after the URL
            _fake_checkout(Path.cwd() / cmd[-1].rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(subprocess, "check_call", check_call)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("EMORL_KIT_URL", "COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(var, raising=False)

    def run(cwd: Path, url: str | None = None, **env) -> list[list[str]]:
        monkeypatch.chdir(cwd)
        if url:
            monkeypatch.setenv("EMORL_KIT_URL", url)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        calls.clear()
        exec(compile(SETUP_CELL, "SETUP_CELL.txt", "exec"), {"__name__": "__main__"})
        return list(calls)

    return run


constraints: list[str] = []  # what the cell's pip was held to


def _pip_root(calls: list[list[str]]) -> Path:
    pip = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    assert len(pip) == 1, calls
    cmd = pip[0]
    assert cmd[0] == sys.executable
    root = cmd[cmd.index("-e") + 1]
    assert "[" not in root  # runtime dependencies only: no extra pulls in Jupyter
    assert constraints[-1] == f"torch=={importlib.metadata.version('torch')}\n"
    assert not Path(cmd[cmd.index("-c") + 1]).exists()
    assert not any(a.startswith("torch") for a in cmd)  # torch is never asked for
    return Path(root)


def test_setup_cell_is_a_few_lines_and_the_logic_lives_in_the_repository():
    code = [line for line in SETUP_CELL.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 10 and "scripts/notebook_setup.py" in SETUP_CELL


def test_setup_cell_installs_the_checkout_the_notebook_is_in(cell, tmp_path):
    kit = _fake_checkout(tmp_path / "emorl-kit")
    assert _pip_root(cell(kit / "notebooks")) == kit
    assert _pip_root(cell(kit)) == kit
    assert str(kit) == sys.path[0]


def test_setup_cell_finds_a_clone_below_the_working_folder(cell, tmp_path):
    content = tmp_path / "content"
    kit = _fake_checkout(content / "my-clone")
    (content / "sample_data").mkdir()
    assert _pip_root(cell(content)) == kit
    # with the URL set as well: the existing clone is used, never cloned again
    calls = cell(content, url="https://example.invalid/someone/my-clone.git")
    assert not any(c[0] == "git" for c in calls) and _pip_root(calls) == kit


def test_setup_cell_clones_the_url_when_no_checkout_is_there(cell, tmp_path):
    content = tmp_path.resolve() / "content"
    content.mkdir()
    calls = cell(content, url="https://example.invalid/someone/emorl-kit.git")
    assert calls[0] == ["git", "clone", "--depth", "1", "https://example.invalid/someone/emorl-kit.git"]
    assert _pip_root(calls) == content / "emorl-kit"


def test_setup_cell_clear_errors(cell, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    with pytest.raises(RuntimeError, match=r"%env EMORL_KIT_URL=<git URL>"):
        cell(content)
    odd = _fake_checkout(tmp_path / "odd")
    (odd / "emorl_lib").rmdir()  # scripts/ but no emorl_lib/: named, not installed
    with pytest.raises(RuntimeError, match=r"odd is not an emorl-kit checkout"):
        cell(odd)
    two = tmp_path / "two"
    _fake_checkout(two / "a")
    _fake_checkout(two / "b")
    with pytest.raises(RuntimeError, match="several checkouts"):
        cell(two)


def test_setup_cell_sends_a_local_jupyter_to_the_kit_kernel(cell, tmp_path):
    kit = _fake_checkout(tmp_path / "emorl-kit", with_venv=True)  # a checkout with its .venv, another kernel
    with pytest.raises(RuntimeError, match="choose the kernel 'emorl-kit'"):
        cell(kit / "notebooks")
    # on Colab or Kaggle the runtime's Python is the one to install into
    assert _pip_root(cell(kit / "notebooks", COLAB_RELEASE_TAG="x")) == kit


def test_setup_cell_never_installs_torch(cell, tmp_path, monkeypatch):
    kit = _fake_checkout(tmp_path / "emorl-kit")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a))
    with pytest.raises(RuntimeError, match="torch is not installed"):
        cell(kit)


def test_setup_cell_does_nothing_where_the_kit_is_installed(tmp_path, capsys):
    r = subprocess.run([sys.executable, "-c", SETUP_CELL], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"emorl-kit: {importlib.metadata.version('emorl-kit')}"


# ---- a simulated hosted runtime (slow: pip installs the kit's dependencies into a fresh Python) -------------------

RUNTIME_OWN = {"pandas": "2.2.3", "numpy": "2.0.2", "ipykernel": "6.29.5"}  # not the lock's: a runtime's own


def _runtime_versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, torch; "
            f"print(json.dumps({{n: m.version(n) for n in {sorted(RUNTIME_OWN) + ['torch']!r}}} | "
            "{'torch_file': torch.__file__}))")
    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout)


def _link_torch(dest: Path) -> None:
    """The kit's torch (and what it imports) as a runtime's preinstalled dist-packages: linked, not copied."""
    from packaging.requirements import Requirement

    seen, todo = set(), ["torch"]
    while todo:
        name = envlock.normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for r in importlib.metadata.distribution(name).requires or []:
            req = Requirement(r)
            if not req.marker or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    seen.discard("setuptools")  # the venv has its own
    dest.mkdir()
    for name in seen:
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files}:
            if top not in ("..", "__pycache__") and not top.endswith(".pth") and not (dest / top).exists():
                (dest / top).symlink_to(dist.locate_file(top))


@pytest.mark.slow
def test_setup_cell_on_a_simulated_hosted_runtime(tmp_path, monkeypatch):
    """A Colab-like Python: torch preinstalled outside its venv, other pandas, numpy and ipykernel than the lock's,
    the kit `!git clone`d into the working folder and EMORL_KIT_URL set too. The setup cell must install the kit from
    the clone without cloning again, leave the runtime's packages alone, and notebook 02 must run on that kernel."""
    import papermill as pm

    content = tmp_path / "content"
    clone = content / "emorl-kit"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (REPO_ROOT / f).is_file():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / f, clone / f)
    runtime = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(runtime)], check=True)
    py = runtime / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    _link_torch(tmp_path / "dist-packages")
    (site / "zz_runtime_dist_packages.pth").write_text(f"{tmp_path / 'dist-packages'}\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-compile",
                        *(f"{k}=={v}" for k, v in RUNTIME_OWN.items())], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    before = _runtime_versions(py)
    assert {k: before[k] for k in RUNTIME_OWN} == RUNTIME_OWN

    env = os.environ | {"COLAB_RELEASE_TAG": "simulated", "OMP_NUM_THREADS": "1", "PIP_NO_COMPILE": "1",
                        "EMORL_KIT_URL": "https://example.invalid/someone/emorl-kit.git"}  # cloning it would fail
    r = subprocess.run([str(py), "-c", SETUP_CELL], cwd=content, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"installed from {clone}" in r.stdout
    assert _runtime_versions(py) == before  # torch, pandas, numpy, ipykernel: the runtime's own, untouched
    r = subprocess.run([str(py), "-c", "import emorl_lib, transformers, trl, emorl_lib.training.grpo; "
                        "print(emorl_lib.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith(str(clone)), r.stderr[-3000:]

    kdir = tmp_path / "jupyter" / "kernels" / "hosted-python3"  # the runtime's own kernel
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({"argv": [str(py), "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"],
                                                  "display_name": "hosted", "language": "python"}))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = pm.execute_notebook(str(clone / "notebooks" / "02_emotion_prior.ipynb"), str(tmp_path / "02.ipynb"),
                             kernel_name="hosted-python3", cwd=str(clone / "notebooks"),
                             parameters={"profile": "default", "group_sizes": [2, 6], "accuracies": [0.3, 0.6]},
                             progress_bar=False)
    setup = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Setup:"))
    assert setup.outputs[0]["text"].strip() == "emorl-kit: 0.1.0"  # the setup cell: already installed
    assert list((clone / "results" / "default" / "tables").glob("eswr_*.csv"))
    assert _runtime_versions(py) == before
