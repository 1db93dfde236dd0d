"""The speed-ups are exact: each cached path returns what the plain path computes (issue 7)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from emorl_lib.infra.perf import append_benchmark_row, peak_memory
from emorl_lib.model.generate import encode, generate_batch
from emorl_lib.training.grpo import EncoderCache, find_audio_tower

LABELS = ["neutral", "happy", "sad", "angry"]


def _benchmark_module(name: str):
    """A module of benchmarks/ (what the benchmarks compare the kit's paths against: not the kit's own code)."""
    import importlib.util

    from emorl_lib.infra.paths import repo_root

    spec = importlib.util.spec_from_file_location(name, repo_root() / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def eval_paths():
    return _benchmark_module("eval_paths")


@pytest.fixture(scope="module")
def backbone(kit_paths):
    from emorl_lib.model.backbones import BackboneConfig, load_backbone

    return load_backbone(BackboneConfig(), kit_paths, trainable=False)


@pytest.fixture(scope="module")
def clips(eval_wavs):
    from emorl_lib.data.audio import load_16k

    return [(str(p), load_16k(str(p))) for p in eval_wavs[:3]]


def _messages(clips, order, condition="IR"):
    from emorl_lib.method.prompts import PromptConfig, build_messages

    cfg = PromptConfig()
    return [build_messages(cfg, clips[i][0], LABELS, condition) for i in order]


# ---- mel features ------------------------------------------------------------------------------------------------


def test_benchmarks_feature_cache_returns_the_processors_features(backbone, clips, eval_paths):
    order = [0, 1, 0, 2, 1, 0]
    msgs, audios = _messages(clips, order), [clips[i][1] for i in order]
    plain = encode(backbone.processor, msgs, audios)
    cache = eval_paths.FeatureCache()
    first = eval_paths.encode_cached(backbone.processor, msgs, audios, cache)
    assert (cache.misses, cache.hits) == (3, 3)  # three distinct clips extracted once each
    again = eval_paths.encode_cached(backbone.processor, msgs[:3], audios[:3], cache)  # a rerun: all hits
    assert (cache.misses, cache.hits) == (3, 6)
    assert set(plain) >= {"input_features", "feature_attention_mask", "input_ids"}
    for k in plain:
        assert torch.equal(plain[k], first[k]), k
        assert torch.equal(plain[k][:3], again[k]), k
    assert backbone.processor.feature_extractor.__class__.__name__ == "WhisperFeatureExtractor"  # uninstalled


def test_benchmarks_feature_cache_stops_adding_when_full(backbone, clips, eval_paths):
    cache = eval_paths.FeatureCache(max_bytes=1)
    out = eval_paths.encode_cached(backbone.processor, _messages(clips, [0, 1]), [clips[0][1], clips[1][1]], cache)
    assert cache.skipped == 2 and not cache.store and out["input_features"].shape[0] == 2


# ---- audio encoder -----------------------------------------------------------------------------------------------


def test_encoder_cache_encodes_each_clip_once_with_the_same_output(backbone, clips):
    order = [0, 0, 1, 0, 2, 1]
    inputs = encode(backbone.processor, _messages(clips, order), [clips[i][1] for i in order])
    with torch.no_grad():
        plain = backbone.model(**inputs).logits
        cache = EncoderCache().install(find_audio_tower(backbone.model))
        try:
            first = backbone.model(**inputs).logits
            second = backbone.model(**inputs).logits
        finally:
            cache.uninstall()
        assert (cache.encoded, cache.served) == (3, 9)
    torch.testing.assert_close(first, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(second, plain, rtol=0, atol=1e-5)
    assert "forward" not in vars(find_audio_tower(backbone.model))  # uninstalled


def test_encoder_cache_refuses_a_trainable_encoder(backbone):
    tower = find_audio_tower(backbone.model)
    p = next(tower.parameters())
    p.requires_grad_(True)
    try:
        with pytest.raises(ValueError, match="trainable"):
            EncoderCache().install(tower)
    finally:
        p.requires_grad_(False)


# ---- GRPO: the cached paths give the plain path's tokens and per-token log-probs ---------------------------------


def test_grpo_caches_give_the_plain_log_probs(kit_paths, clips):
    from datasets import Dataset

    from emorl_lib.method.rewards import RewardConfig
    from emorl_lib.model.backbones import BackboneConfig, load_backbone
    from emorl_lib.training.grpo import (
        AudioGRPOTrainer,
        EmoGRPOConfig,
        reward_functions,
    )

    g = 3
    bcfg = BackboneConfig()
    bb = load_backbone(bcfg, kit_paths, trainable=True)
    funcs, weights = reward_functions(RewardConfig(), "IR", "eswr")
    args = EmoGRPOConfig(output_dir=str(kit_paths.run / "perf_grpo"), num_generations=g, per_device_train_batch_size=g,
                         max_completion_length=4, max_steps=1, report_to=[], save_steps=100, reward_weights=weights,
                         gradient_accumulation_steps=1)
    prompts = _messages(clips, [0, 1])
    ds = Dataset.from_list([{"prompt": p, "label": "happy", "candidates": LABELS, "utt_id": str(i)}
                            for i, p in enumerate(prompts)])
    trainer = AudioGRPOTrainer(model=bb.model, reward_funcs=funcs, processing_class=bb.processor, train_dataset=ds,
                               args=args)
    repeated = [p for p in prompts for _ in range(g)]  # as TRL's sampler repeats them

    trainer._cache_features = False
    ids_plain, _, f_plain = trainer._tokenize_prompts(repeated)
    audio_plain = dict(trainer._audio)
    trainer._cache_features = True
    ids_cached, _, f_cached = trainer._tokenize_prompts(repeated)
    assert [list(x) for x in ids_plain] == [list(x) for x in ids_cached]
    for k in ("input_features", "feature_attention_mask"):
        assert torch.equal(audio_plain[k], trainer._audio[k]), k
        assert np.array_equal(np.asarray(f_plain[k]), np.asarray(f_cached[k])), k

    # prompt + a random completion per row, left padded as TRL does
    gen = torch.Generator().manual_seed(0)
    rows = [torch.tensor(list(p) + torch.randint(5, 200, (5,), generator=gen).tolist()) for p in ids_plain]
    width = max(len(r) for r in rows)
    pad = bb.processor.tokenizer.pad_token_id
    input_ids = torch.stack([torch.cat([torch.full((width - len(r),), pad), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), torch.ones(len(r), dtype=torch.long)])
                        for r in rows])
    with torch.no_grad():
        plain, _, _ = trainer._get_per_token_logps_and_entropies(bb.model, input_ids, mask, 5, batch_size=2)
        cache = EncoderCache().install(find_audio_tower(bb.model))
        try:
            cached, _, _ = trainer._get_per_token_logps_and_entropies(bb.model, input_ids, mask, 5, batch_size=2)
            again, _, _ = trainer._get_per_token_logps_and_entropies(bb.model, input_ids, mask, 5, batch_size=4)
        finally:
            cache.uninstall()
    assert cache.encoded == 2 and cache.served == 2 * 2 * g - 2  # two clips, six rows, two passes
    torch.testing.assert_close(cached, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-5)

    # in training, every full forward still gets the features, and the encoder runs once per clip per batch
    seen = []

    def spy(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:  # prefill and log-prob forwards (not cached decode steps)
            seen.append(kwargs.get("input_features") is not None)

    hook = bb.model.get_base_model().model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        trainer.train()
    finally:
        hook.remove()
    assert seen and all(seen)
    c = trainer.encoder_cache
    assert c is not None and c.encoded == 1 and c.served >= 2 * g - 1  # one prompt per step: one clip encoded
    assert "forward" not in vars(find_audio_tower(bb.model))  # uninstalled after train()


# ---- generation: KV cache on/off give the same greedy text -------------------------------------------------------


def test_generation_without_kv_cache_gives_the_same_text(backbone, clips, eval_paths):
    msgs, audios = _messages(clips, [0, 1, 2]), [c[1] for c in clips]
    with_cache = generate_batch(backbone, msgs, audios, 6)
    without = eval_paths.generate_uncached(backbone, msgs, audios, 6)
    assert [g.text for g in with_cache] == without


# ---- bookkeeping -------------------------------------------------------------------------------------------------


def test_append_benchmark_row_grows_columns_and_keeps_rows(tmp_path):
    p = tmp_path / "b.csv"
    append_benchmark_row(p, {"a": 1})
    append_benchmark_row(p, {"a": 2, "b": "x"})
    rows = list(csv.DictReader(p.open()))
    assert [r["a"] for r in rows] == ["1", "2"] and rows[0]["b"] == "" and rows[1]["b"] == "x"
    assert all(r["when"] for r in rows)
    assert peak_memory()["rss_peak_mib"] > 10


def test_full_size_refuses_on_the_cpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --size full would run")
    mod = _benchmark_module("bench_grpo")
    with pytest.raises(SystemExit) as e:
        mod.main(["--size", "full"])
    assert "CUDA GPU" in str(e.value)


def test_count_ops_runs_as_a_script_and_the_copy_halves_a_layers_ops(tmp_path):
    """`benchmarks/bench_grpo.py --count-ops` (the planner's host-time input) as users run it: the shared prefix
    leaves a decoding step's operations as they are, the rollout copy runs fewer per decoder layer, and rows land
    in grpo_ops.csv beside --out."""
    import subprocess
    import sys

    from emorl_lib.infra.paths import repo_root

    out = tmp_path / "grpo.csv"
    r = subprocess.run([sys.executable, "benchmarks/bench_grpo.py", "--threads", "1", "--count-ops", "--rollout",
                        "plain,shared,shared+copy", "--out", str(out)], cwd=repo_root(), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {x["rollout"]: x for x in csv.DictReader((tmp_path / "grpo_ops.csv").open())}
    per = {k: float(v["ops_per_decoder_layer"]) for k, v in rows.items()}
    assert per["shared"] == per["plain"] > 0
    assert per["shared+copy"] < 0.7 * per["plain"]
    assert all(float(v["ops_outside_the_forward"]) <= float(v["ops_outside_layers"]) for v in rows.values())
    assert "per decoder layer" in r.stdout
