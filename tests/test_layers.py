"""The library's layers run one way: infra < data < method < model < training < evaluation < the top (the profile
schema, the CLI, the notebook runner, the golden gate, the planner). An import that runs back up, even inside a
function or as a module named in a string, is a design bug; so is a circle of imports. Both also widen the code
digests that decide what is stale (infra/fingerprint.py), which the closure tests below bound."""

from __future__ import annotations

import ast
import re

import pytest

from emorl_lib.infra.fingerprint import closure, imports_of, module_file
from emorl_lib.infra.paths import PACKAGE_ROOT

LAYERS = ("infra", "data", "method", "model", "training", "evaluation")
TOP = ("profile", "plan", "cli", "runner", "golden")  # emorl_lib/<name>.py
IMPORT_STRING = re.compile(r"(emorl_lib(?:\.\w+)+)(?::\w+)?")  # "emorl_lib.x.y" or "emorl_lib.x.y:Name"


def modules() -> list[str]:
    out = []
    for f in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = list(f.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def layer(module: str) -> int:
    """0 infra (and the package face, which pins the CPU environment) ... 5 evaluation, 6 the top."""
    parts = module.split(".")
    if module == "emorl_lib":
        return 0
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    if len(parts) == 2 and parts[1] in TOP:
        return len(LAYERS)
    raise AssertionError(f"{module}: not in a layer; put it in one of {LAYERS} or add it to TOP")


def edges(module: str) -> set[str]:
    """The kit's modules `module` imports anywhere in its file, and those it names in an import string (a string that
    is a module name, `importlib.import_module("emorl_lib.x")`, or "emorl_lib.x:Class"; prose that mentions a module,
    a docstring or a message, is not one)."""
    f = module_file(module)
    src = f.read_text(encoding="utf-8")
    out = set(imports_of(src, module, f.name == "__init__.py"))
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = IMPORT_STRING.fullmatch(node.value.strip())
            name = m.group(1) if m else ""
            while name and module_file(name) is None:
                name = name.rpartition(".")[0]
            if name and name != "emorl_lib":
                out.add(name)
    return {m for m in out if m != module}


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)


@pytest.mark.parametrize("module", modules())
def test_no_import_runs_back_up(module):
    up = sorted(f"{t} ({LAYERS[layer(t)] if layer(t) < len(LAYERS) else 'top'})" for t in edges(module)
                if layer(t) > layer(module))
    assert not up, f"{module} ({LAYERS[layer(module)] if layer(module) < len(LAYERS) else 'top'}) imports {up}"


def test_the_import_graph_has_no_circle():
    graph = {m: {t for t in edges(m) if t in set(modules())} for m in modules()}
    # a module imports its packages too (running emorl_lib.data.x runs emorl_lib.data), so those edges don't count
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_layering_test_would_catch_an_import_back_up(tmp_path, monkeypatch):
    """Negative control: a data module importing training inside a function, and one naming it in a string."""
    import emorl_lib.infra.fingerprint as fp

    src = 'def f():\n    from ..training import runs\n\nX = "emorl_lib.training.grpo:EmoGRPOConfig"\n'
    real = fp.module_file

    class Fake:
        name = "fake.py"

        def read_text(self, encoding="utf-8"):
            return src

    monkeypatch.setattr("test_layers.module_file", lambda m: Fake() if m == "emorl_lib.data.fake" else real(m))
    found = edges("emorl_lib.data.fake")
    assert {"emorl_lib.training.runs", "emorl_lib.training.grpo"} <= found
    assert all(layer(t) > layer("emorl_lib.data.fake") for t in found if t.startswith("emorl_lib.training"))


def test_code_closures_stay_inside_their_layers():
    """What a digest covers: the labels' closure is infra and data only (editing a reward never marks a manifest
    stale); a prediction's code never includes training (editing the trainer never marks a prediction stale)."""
    from emorl_lib.evaluation.predictions import PREDICTION_CODE

    labels = closure(["emorl_lib.data.labels"])
    assert all(m == "emorl_lib" or layer(m) <= LAYERS.index("data") for m in labels), labels
    pred = closure(PREDICTION_CODE)
    assert not [m for m in pred if m.startswith(("emorl_lib.training", "emorl_lib.evaluation.figures"))], pred
    assert "emorl_lib.model.generate" in pred
    descriptors = closure(["emorl_lib.method.descriptors"])
    assert not [m for m in descriptors if layer(m) > LAYERS.index("method")], descriptors


def test_the_runner_reads_what_each_stage_setup_reads():
    """One place says which sections a stage reads (profile.READS): the runner's staleness uses the same."""
    from emorl_lib.profile import READS
    from emorl_lib.runner import STAGE_SPECS

    assert STAGE_SPECS["03_sft_warmup"].sections == READS["sft"]
    assert STAGE_SPECS["04_grpo_eswr_esr"].sections == READS["grpo"]
    assert STAGE_SPECS["05_evaluation"].sections == READS["eval"]
