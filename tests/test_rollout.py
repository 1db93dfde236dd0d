"""The kit's generation paths (emorl_lib/model/rollout.py) against a plain `model.generate` call, on the CPU in
fp32, with the tiny Qwen2-Audio and the mid-size random one (conftest.MID_RANDOM: the real vocabulary and window).

Tolerances (fp32): greedy completions token for token equal; per-step logits within TOL_LOGITS (the only difference
is the prefill's matmul shapes: distinct prompts instead of every row, P - 1 tokens then 1); sampled completions'
per-token log-probs as the trainer recomputes them (AudioGRPOTrainer's full forward with the audio, TRL's fused LM
head at the temperature) within TOL_LOGP of the sampler's. The rollout copy (4-bit base + LoRA): logits within
TOL_COPY_FP32 in fp32, and in bf16 no further from the plain bf16 path than that path is from its own fp32 run.
Negative controls show each check fails when the path is wrong (a shifted position, a wrong row, a stale copy).
"""

from __future__ import annotations

import copy as _copy

import numpy as np
import pytest
import torch

from conftest import MID_RANDOM
from emorl_lib.model import rollout
from emorl_lib.model.rollout import GenerationPaths

TOL_LOGITS = 1e-4
TOL_LOGP = 1e-5
TOL_COPY_FP32 = 1e-4
CANDS = ["neutral", "happy", "sad", "angry"]


# ---- models, batches and trainers as TRL 1.16 lays them out -------------------------------------------------------
def load(paths, size: str = "tiny", four_bit: bool = False, seed: int = 0, dtype: str = "float32",
         perturb_lora: float = 0.5):
    """(PEFT model in train mode with dropout off, as the GRPO trainer holds it, processor). LoRA B is random
    (PEFT initialises it to 0, which would make every LoRA path trivially equal to the base)."""
    from transformers import set_seed
    from trl.trainer.utils import disable_dropout_in_model

    from emorl_lib.model.backbones import BackboneConfig, LoraConfig, RandomModelConfig, load_backbone

    set_seed(seed)
    kw = dict(dtype=dtype, load_in_4bit=four_bit, lora=LoraConfig(r=16, alpha=32, dropout=0.05))
    if size == "mid":
        kw.update(name="qwen2-audio-7b-random", random=RandomModelConfig(**MID_RANDOM))
    bb = load_backbone(BackboneConfig(**kw), paths, trainable=True)
    model = bb.model
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * perturb_lora * p.shape[1] ** -0.5)
    disable_dropout_in_model(model)  # grpo.disable_dropout: true (the kit's default)
    model.train()  # TRL rolls out in train mode
    return model, bb.processor


def prompts_for(wavs, condition: str = "ESR") -> list[list[dict]]:
    from emorl_lib.method.prompts import PromptConfig, build_messages

    return [build_messages(PromptConfig(), str(w), CANDS, condition) for w in wavs]


def generation_batch(processor, prompts: list, G: int) -> dict:
    """What TRL's `_generate_single_turn` passes to `generate`: each prompt repeated G times in a row (its
    RepeatSampler), left-padded ids and mask, and the audio fields."""
    from trl.trainer.utils import pad

    tok = processor.apply_chat_template(conversation=prompts, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)
    ids = [list(x) for x in tok["input_ids"]]
    fields = {k: v for k, v in tok.items() if k not in ("input_ids", "attention_mask")}
    rows = [i for i in range(len(ids)) for _ in range(G)]
    tensors = [torch.tensor(ids[i]) for i in rows]
    out = {"input_ids": pad(tensors, padding_value=processor.tokenizer.pad_token_id, padding_side="left"),
           "attention_mask": pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left")}
    for k, v in fields.items():
        v = v if isinstance(v, torch.Tensor) else torch.tensor(np.array(v))
        out[k] = v[rows]
    return out


def trl_generation_config(model, processor, max_new_tokens: int, temperature: float = 1.0,
                          do_sample: bool = True, **extra):
    """The GenerationConfig TRL 1.16 builds for rollouts (grpo_trainer.py:1155-1173), with the kit's
    image_token_id = audio_token_id (training/grpo.py) as the suppressed token."""
    from transformers import GenerationConfig

    tok = processor.tokenizer
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    cfg = rollout.base_model(model).config
    kw = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": tok.pad_token_id,
          "bos_token_id": tok.bos_token_id, "eos_token_id": eos, "temperature": temperature, "top_p": 1.0,
          "top_k": 0, "min_p": None, "repetition_penalty": 1.0, "cache_implementation": None,
          "suppress_tokens": [cfg.audio_token_id], **extra}
    return GenerationConfig(**kw, disable_compile=True)


def greedy_config(model, proc, n: int, **kw):
    return trl_generation_config(model, proc, n, do_sample=False, output_logits=True, return_dict_in_generate=True,
                                 **kw)


def _zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def make_trainer(model, processor, wavs, G: int, max_completion_length: int, outdir, temperature: float = 1.0,
                 reward_funcs=None, **grpo):
    """The kit's AudioGRPOTrainer on these clips, one generation batch per step; `grpo`: EmoGRPOConfig fields
    (the rollout_* settings among them)."""
    from datasets import Dataset

    from emorl_lib.training.grpo import AudioGRPOTrainer, EmoGRPOConfig

    args = EmoGRPOConfig(output_dir=str(outdir), num_generations=G, per_device_train_batch_size=G * len(wavs),
                         gradient_accumulation_steps=1, max_completion_length=max_completion_length,
                         temperature=temperature, max_steps=grpo.pop("max_steps", 1), report_to=[],
                         save_steps=10**6, beta=grpo.pop("beta", 0.0), log_completions_every=0, **grpo)
    rows = [{"prompt": p, "label": CANDS[i % 4], "candidates": CANDS, "utt_id": f"u{i}"}
            for i, p in enumerate(prompts_for(wavs, "IR"))]
    trainer = AudioGRPOTrainer(model=model, reward_funcs=reward_funcs or [_zero_reward], args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=processor)
    return trainer, rows


def _max_logit_diff(a, b) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a.logits, b.logits))


def _same(ref, out, tol=TOL_LOGITS) -> tuple[bool, float]:
    """(token-for-token equal and logits within tol, max logit difference)."""
    if ref.sequences.shape != out.sequences.shape:
        return False, float("inf")
    d = _max_logit_diff(ref, out)
    return bool(torch.equal(ref.sequences, out.sequences) and d <= tol), d


@pytest.fixture(scope="module")
def clips(eval_wavs):
    return eval_wavs[:4]  # 1.0, 2.2, 1.6, 3.0 s: rows left padded differently


@pytest.fixture(scope="module")
def tiny(kit_paths):
    return load(kit_paths)


@pytest.fixture(scope="module")
def tiny4(kit_paths):
    return load(kit_paths, four_bit=True)


# ---- (a) shared prefix ---------------------------------------------------------------------------------------------
def test_distinct_rows_groups_consecutive_and_scattered_rows():
    a = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2], [3, 4], [5, 6]])
    f = torch.arange(6.0)[:, None].repeat(1, 3)
    first, inv = rollout.distinct_rows([a])
    assert first.tolist() == [0, 2, 5] and inv.tolist() == [0, 0, 1, 0, 1, 2]
    assert torch.equal(a[first][inv], a)
    first, inv = rollout.distinct_rows([a, f])  # a second tensor that differs everywhere: every row distinct
    assert first.tolist() == list(range(6))


@pytest.mark.parametrize("condition,tokens", [("IR", 24), ("ESR", 64)])
def test_shared_prefix_greedy_equals_the_plain_call(tiny, clips, condition, tokens):
    model, proc = tiny
    batch = generation_batch(proc, prompts_for(clips, condition), G=4)
    cfg = greedy_config(model, proc, tokens)
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        out = rollout.shared_prefix_generate(model, batch, cfg)
    ok, d = _same(ref, out)
    assert ok, d
    assert ref.sequences.shape[1] > batch["input_ids"].shape[1] + 1


def test_shared_prefix_scattered_groups_and_chunks(tiny, clips):
    """Groups not consecutive (the inverse map is used), and rows in chunks of whole groups (rows_per_generate)."""
    model, proc = tiny
    batch = generation_batch(proc, prompts_for(clips, "IR"), G=3)
    perm = torch.tensor([0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])
    batch = {k: v[perm] for k, v in batch.items()}
    cfg = greedy_config(model, proc, 20)
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        out = rollout.shared_prefix_generate(model, batch, cfg)
        plain_cfg = trl_generation_config(model, proc, 20, do_sample=False)
        chunked = rollout.fast_generate(model, batch, plain_cfg, GenerationPaths(rows_per_generate=4))
    assert _same(ref, out)[0]
    assert torch.equal(chunked, ref.sequences)


def test_negative_control_a_shifted_position_is_caught(tiny, clips, monkeypatch):
    """The check above fails when the prefix's positions are off by one (what a wrong left-padding offset or
    cache position would do)."""
    model, proc = tiny
    batch = generation_batch(proc, prompts_for(clips, "IR"), G=2)
    cfg = greedy_config(model, proc, 16)
    real = rollout.generate_position_ids
    monkeypatch.setattr(rollout, "generate_position_ids", lambda m: real(m) + 1)
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        out = rollout.shared_prefix_generate(model, batch, cfg)
    ok, d = _same(ref, out)
    assert not ok and d > 100 * TOL_LOGITS


def test_negative_control_a_wrong_row_gather_is_caught(tiny, clips, monkeypatch):
    model, proc = tiny
    batch = generation_batch(proc, prompts_for(clips, "IR"), G=2)
    cfg = greedy_config(model, proc, 16)
    real = rollout.distinct_rows

    def rolled(ts):
        first, inv = real(ts)
        return first, (inv + 1) % first.numel()

    monkeypatch.setattr(rollout, "distinct_rows", rolled)
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        out = rollout.shared_prefix_generate(model, batch, cfg)
    assert not _same(ref, out)[0]


def test_evaluation_generates_the_same_text_on_every_path(kit_paths, tiny_backbone_dir, eval_wavs):
    """model.generate.generate_batch (evaluation, held-out curves, `emorl infer`): the shared prefix and the plain
    call give the same completions and token counts."""
    from emorl_lib.data.audio import load_16k
    from emorl_lib.model.backbones import BackboneConfig, load_backbone
    from emorl_lib.model.generate import generate_batch

    bb = load_backbone(BackboneConfig(path=str(tiny_backbone_dir)), kit_paths, trainable=False)
    msgs = prompts_for(eval_wavs, "ESR")
    audios = [load_16k(w) for w in eval_wavs]
    plain = generate_batch(bb, msgs, audios, 24, GenerationPaths(shared_prefix=False))
    shared = generate_batch(bb, msgs, audios, 24)
    chunked = generate_batch(bb, msgs, audios, 24, GenerationPaths(rows_per_generate=2))
    assert [(g.text, g.n_tokens) for g in shared] == [(g.text, g.n_tokens) for g in plain]
    assert [(g.text, g.n_tokens) for g in chunked] == [(g.text, g.n_tokens) for g in plain]
    assert max(g.n_tokens for g in plain) > 1


# ---- sampled completions: the trainer's log-probs equal the sampler's ---------------------------------------------
def _trainer_logps(trainer, batch, sequences):
    """AudioGRPOTrainer's per-token log-probs of the completions (full forward with the audio, TRL's fused head at
    the temperature), with TRL's completion mask (up to and including the first EOS)."""
    P = batch["input_ids"].shape[1]
    comp = sequences[:, P:]
    is_eos = torch.isin(comp, torch.tensor(trainer.eos_token_ids))
    eos_idx = torch.full((comp.size(0),), comp.size(1), dtype=torch.long)
    eos_idx[is_eos.any(1)] = is_eos.int().argmax(1)[is_eos.any(1)]
    cmask = (torch.arange(comp.size(1))[None] <= eos_idx[:, None]).long()
    ids = torch.cat([batch["input_ids"], comp], 1)
    mask = torch.cat([batch["attention_mask"], cmask], 1)
    trainer._audio = {k: batch[k] for k in rollout.AUDIO_KEYS}
    try:
        with torch.no_grad():
            logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, comp.size(1))
    finally:
        trainer._audio = None
    return logps, cmask


def _sampler_logps(out, P, temperature):
    logits = torch.stack(out.logits, 1).float()  # raw logits of every step (before processors)
    tok = out.sequences[:, P:P + logits.size(1)]
    return torch.log_softmax(logits / temperature, -1).gather(-1, tok[..., None])[..., 0]


def _logp_gap(trainer, batch, out, T) -> tuple[float, int]:
    mine = _sampler_logps(out, batch["input_ids"].shape[1], T)
    theirs, cmask = _trainer_logps(trainer, batch, out.sequences)
    m = cmask[:, :mine.size(1)].bool()
    return (mine - theirs[:, :mine.size(1)])[m].abs().max().item(), int(m.sum())


@pytest.mark.parametrize("path", ["plain", "shared", "shared+copy"])
def test_sampled_logps_equal_the_trainers(tiny, clips, path, tmp_path):
    model, proc = tiny
    T = 0.7
    trainer, _ = make_trainer(model, proc, clips, G=4, max_completion_length=24, temperature=T, outdir=tmp_path)
    batch = generation_batch(proc, prompts_for(clips, "IR"), G=4)
    cfg = trl_generation_config(model, proc, 24, temperature=T, output_logits=True, return_dict_in_generate=True)
    torch.manual_seed(7)
    with torch.no_grad():
        if path == "plain":
            out = model.generate(**batch, generation_config=cfg)
        else:
            copy = rollout.RolloutCopy(model) if path.endswith("copy") else None
            out = rollout.shared_prefix_generate(model, batch, cfg, decode_model=copy.model if copy else None)
    d, n = _logp_gap(trainer, batch, out, T)
    assert d <= TOL_LOGP, d
    assert n > 20


def test_trainer_gives_trl_the_same_completions_on_both_paths(tiny, clips, tmp_path):
    """Through TRL's own `_generate` (prompt tokenisation, `_generate_single_turn`, EOS masking, decoding), the
    shared-prefix path returns the same prompt_ids and completion_ids as the plain call, sampled, same seed; the
    trainer's `generate` swap is undone after each call."""
    model, proc = tiny
    G = 4
    tr, rows = make_trainer(model, proc, clips, G, 20, tmp_path, rollout_shared_prefix=False)
    prompts = [r["prompt"] for r in rows for _ in range(G)]
    res = {}
    for shared in (False, True):
        tr.args.rollout_shared_prefix = shared
        assert tr._fast_rollouts() is shared
        torch.manual_seed(123)
        res[shared] = tr._generate(_copy.deepcopy(prompts))
    assert res[True][0] == res[False][0]  # prompt_ids
    assert res[True][1] == res[False][1]  # completion_ids (sampled)
    assert res[True][3] == res[False][3]  # decoded completions
    assert "generate" not in model.__dict__


def test_rows_per_generate_must_hold_whole_groups(tmp_path):
    from emorl_lib.training.grpo import EmoGRPOConfig

    with pytest.raises(ValueError, match="multiple of num_generations"):
        EmoGRPOConfig(output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=8,
                      rollout_rows_per_generate=6, report_to=[])


class _RandomReward:
    __name__ = "random_reward"

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def __call__(self, completions, **kw):
        return self.rng.uniform(0, 1, len(completions)).tolist()


def test_rollout_copy_follows_the_optimizer(kit_paths, clips, tmp_path, monkeypatch):
    """Training with the rollout copy on: it is built at the first rollout and refreshed before each rollout after
    an optimizer step, so its weights are dequant(W4) + s B A of the current LoRA weights."""
    import bitsandbytes as bnb

    model, proc = load(kit_paths, four_bit=True, seed=5)
    tr, _ = make_trainer(model, proc, clips[:2], 2, 8, tmp_path, learning_rate=5e-2, max_steps=3,
                         rollout_copy=True, reward_funcs=[_RandomReward()])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    refreshed = []
    real = rollout.RolloutCopy.refresh

    def spy(self):
        refreshed.append(tr.state.global_step)
        return real(self)

    monkeypatch.setattr(rollout.RolloutCopy, "refresh", spy)
    tr.train()
    moved = max((p - before[n]).abs().max().item() for n, p in model.named_parameters() if n in before)
    assert moved > 0
    assert refreshed == [0, 1, 2], refreshed  # built (its first refresh) at step 0, refreshed at steps 1 and 2
    tr._copy.refresh()  # the copy of the weights now (after 3 steps), recomputed by hand below
    for base, parts, buf in tr._copy.layers:
        w = bnb.functional.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
        for A, B, s in parts:
            w = w + s * (B.float() @ A.float())
        assert torch.allclose(buf.float(), w, atol=1e-5)


# ---- (d) the rollout copy on a 4-bit base + LoRA -------------------------------------------------------------------
def test_rollout_copy_logits_fp32(tiny4, clips):
    model, proc = tiny4
    batch = generation_batch(proc, prompts_for(clips, "ESR"), G=2)
    cfg = greedy_config(model, proc, 32)
    rc = rollout.RolloutCopy(model)
    assert not any("Linear4bit" in type(m).__name__ or "lora" in type(m).__module__
                   for m in rc.model.model.language_model.modules())
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        out = rc.model.generate(**batch, generation_config=cfg)
        both = rollout.shared_prefix_generate(model, batch, cfg, decode_model=rc.model)
    ok, d = _same(ref, out, TOL_COPY_FP32)
    assert ok, d
    assert _same(ref, both, TOL_COPY_FP32)[0]


def test_rollout_copy_negative_control_stale_weights(kit_paths, clips):
    """A copy not refreshed after the LoRA weights change is caught by the same check; refreshed, it passes."""
    model, proc = load(kit_paths, four_bit=True, seed=3)
    batch = generation_batch(proc, prompts_for(clips, "IR"), G=2)
    cfg = greedy_config(model, proc, 16)
    rc = rollout.RolloutCopy(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.mul_(-1.0)  # an "optimizer step"
        ref = model.generate(**batch, generation_config=cfg)
        stale = rc.model.generate(**batch, generation_config=cfg)
        rc.refresh()
        fresh = rc.model.generate(**batch, generation_config=cfg)
    assert not _same(ref, stale, TOL_COPY_FP32)[0]
    assert _same(ref, fresh, TOL_COPY_FP32)[0]


def test_rollout_copy_bf16_within_bf16_noise(kit_paths, clips):
    """In bf16 (what a GPU rolls out in) the copy's rounding of W + s B A moves the logits no more than bf16 itself
    moves the plain path from fp32 (same weights, same inputs; first decoding step)."""
    out = {}
    for dtype in ("float32", "bfloat16"):
        model, proc = load(kit_paths, four_bit=True, dtype=dtype)
        batch = generation_batch(proc, prompts_for(clips, "IR"), G=1)
        if dtype == "bfloat16":
            batch["input_features"] = batch["input_features"].to(torch.bfloat16)
        cfg = greedy_config(model, proc, 1)
        with torch.no_grad():
            out[dtype] = model.generate(**batch, generation_config=cfg).logits[0].float()
            if dtype == "bfloat16":
                rc = rollout.RolloutCopy(model)
                assert rc.layers[0][2].dtype == torch.bfloat16
                out["copy"] = rc.model.generate(**batch, generation_config=cfg).logits[0].float()
    noise = (out["bfloat16"] - out["float32"]).abs().max().item()
    d = (out["copy"] - out["bfloat16"]).abs().max().item()
    assert 0 < d <= noise, (d, noise)


# ---- (b) static cache + compiled decoding step (inductor on the CPU) -----------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("which", ["lora", "4bit+lora", "copy"])
def test_compiled_decoding_greedy_equals_the_plain_call(tiny, tiny4, clips, which):
    model, proc = tiny if which == "lora" else tiny4
    batch = generation_batch(proc, prompts_for(clips, "IR"), G=2)
    cfg = greedy_config(model, proc, 20)
    gen = rollout.RolloutCopy(model).model if which == "copy" else model
    quantizer = getattr(rollout.base_model(model), "hf_quantizer", None)
    static = rollout.static_cache_length(batch["input_ids"].shape[1], 20, 64)
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        with rollout.compiled_decoding(gen, cfg) as ccfg:
            assert not ccfg.disable_compile and ccfg.cache_implementation == "static"
            if quantizer is not None and which != "copy":
                assert quantizer.is_compileable  # the refusal is lifted inside the block
            ccfg.max_cache_len = static
            comp = gen.generate(**batch, generation_config=ccfg)
            assert getattr(rollout.base_model(gen), "_compiled_call", None) is not None  # it did compile
            both = rollout.shared_prefix_generate(model, batch, ccfg, static_len=static, decode_model=gen)
    if quantizer is not None:
        assert not quantizer.is_compileable  # restored
    tol = TOL_COPY_FP32 if which == "copy" else TOL_LOGITS
    for out in (comp, both):
        ok, d = _same(ref, out, tol)
        assert ok, d


@pytest.mark.slow
def test_compiled_decoding_sees_weights_updated_in_place(kit_paths, clips):
    """A compiled (on a GPU, CUDA-graph) decoding step must read the LoRA weights the optimizer updates in place,
    not constants baked in at compile time: after an in-place change it equals the eager path on the new weights
    (and differs from its own earlier output)."""
    model, proc = load(kit_paths, seed=11)
    batch = generation_batch(proc, prompts_for(clips[:2], "IR"), G=2)
    cfg = greedy_config(model, proc, 16)
    with torch.no_grad(), rollout.compiled_decoding(model, cfg) as ccfg:
        ccfg.max_cache_len = rollout.static_cache_length(batch["input_ids"].shape[1], 16, 64)
        before = model.generate(**batch, generation_config=ccfg)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.mul_(-1.0)
        after = model.generate(**batch, generation_config=ccfg)
    with torch.no_grad():
        eager = model.generate(**batch, generation_config=cfg)
    ok, d = _same(eager, after)
    assert ok, d
    assert not _same(before, after)[0]


# ---- the mid-size random model (real vocabulary, 30 s audio window) ------------------------------------------------
@pytest.mark.slow
def test_mid_shared_prefix_greedy_and_sampled(kit_paths, clips, tmp_path):
    model, proc = load(kit_paths, "mid")
    batch = generation_batch(proc, prompts_for(clips[:2], "IR"), G=3)
    cfg = greedy_config(model, proc, 12)
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        out = rollout.shared_prefix_generate(model, batch, cfg)
    ok, d = _same(ref, out)
    assert ok, d
    T = 1.0
    trainer, _ = make_trainer(model, proc, clips[:2], G=3, max_completion_length=12, temperature=T, outdir=tmp_path)
    scfg = trl_generation_config(model, proc, 12, temperature=T, output_logits=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    with torch.no_grad():
        s = rollout.shared_prefix_generate(model, batch, scfg)
    d, _ = _logp_gap(trainer, batch, s, T)
    assert d <= TOL_LOGP, d


@pytest.mark.slow
def test_mid_rollout_copy_4bit(kit_paths, clips):
    model, proc = load(kit_paths, "mid", four_bit=True)
    batch = generation_batch(proc, prompts_for(clips[:2], "IR"), G=2)
    cfg = greedy_config(model, proc, 12)
    rc = rollout.RolloutCopy(model)
    with torch.no_grad():
        ref = model.generate(**batch, generation_config=cfg)
        out = rollout.shared_prefix_generate(model, batch, cfg, decode_model=rc.model)
    ok, d = _same(ref, out, TOL_COPY_FP32)
    assert ok, d
