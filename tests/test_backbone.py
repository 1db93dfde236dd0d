"""The backbone registry: tiny Qwen2-Audio built offline, the kit chat template, 4-bit + LoRA on the CPU."""

from __future__ import annotations

import pytest
import torch

from emorl_lib.model.backbones import (
    REASONING_TAGS,
    BackboneConfig,
    build_tiny_qwen2_audio,
    load_backbone,
    load_processor,
    resolve_model_dir,
)


def _messages(wav, text_none_keys: bool = False):
    audio = {"type": "audio", "path": str(wav)}
    text = {"type": "text", "text": "Which emotion does the speaker express?"}
    if text_none_keys:  # what `datasets` does to every content block: every key on every block
        audio = {**audio, "text": None}
        text = {**text, "path": None}
    return [{"role": "user", "content": [audio, text]}]


def _inputs(processor, wav, **kw):
    return processor.apply_chat_template(
        _messages(wav, **kw), tokenize=True, return_dict=True, add_generation_prompt=True, return_tensors="pt"
    )


def test_processor_output_carries_audio_features(tiny_backbone_dir, tone_wav):
    processor = load_processor(str(tiny_backbone_dir))
    inp = _inputs(processor, tone_wav)
    assert "input_features" in inp and "feature_attention_mask" in inp
    n_audio = int((inp["input_ids"] == processor.audio_token_id).sum())
    # 2.5 s at 25 audio tokens per second: the prompt follows the real length, not the padded chunk
    assert 60 <= n_audio <= 64
    assert int(inp["feature_attention_mask"].sum()) == 250


def test_kit_template_keeps_audio_when_blocks_carry_every_key(tiny_backbone_dir, tone_wav):
    processor = load_processor(str(tiny_backbone_dir))
    text = processor.apply_chat_template(_messages(tone_wav, text_none_keys=True), tokenize=False,
                                         add_generation_prompt=True)
    assert "<|AUDIO|>" in text and "None" not in text
    assert text.endswith("<|im_start|>assistant\n")


def test_reasoning_tags_are_ordinary_tokens(tiny_backbone_dir):
    tok = load_processor(str(tiny_backbone_dir)).tokenizer
    s = "<think><content>x</content><acoustics>y</acoustics><summary>z</summary></think><answer>angry</answer>"
    ids = tok(s, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == s
    for tag in REASONING_TAGS:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    assert "<|AUDIO|>" not in tok.decode(tok("<|AUDIO|>a")["input_ids"], skip_special_tokens=True)


def test_tiny_build_is_deterministic_and_round_trips(kit_paths, tiny_backbone_dir, tone_wav, tmp_path):
    from emorl_lib.infra.paths import Paths, PathsConfig

    other = Paths.for_profile("other", PathsConfig(cache=str(tmp_path / "c2")))
    second = build_tiny_qwen2_audio(BackboneConfig(), other)
    assert second.name == tiny_backbone_dir.name  # same spec, same hash
    a = load_backbone(BackboneConfig(), kit_paths, trainable=False)
    b = load_backbone(BackboneConfig(path=str(second)), other, trainable=False)
    inp = _inputs(a.processor, tone_wav)
    with torch.no_grad():
        la, lb = a.model(**inp).logits, b.model(**inp).logits
    assert torch.equal(la, lb)
    # and a save/reload of a loaded model gives the same logits
    a.model.save_pretrained(tmp_path / "resaved")
    a.processor.save_pretrained(tmp_path / "resaved")
    c = load_backbone(BackboneConfig(path=str(tmp_path / "resaved")), kit_paths, trainable=False)
    with torch.no_grad():
        assert torch.allclose(c.model(**inp).logits, la)
    assert list((tmp_path / "resaved").glob("*.safetensors"))


def test_generate_from_wav(kit_paths, tone_wav):
    bb = load_backbone(BackboneConfig(), kit_paths, trainable=False)
    inp = _inputs(bb.processor, tone_wav)
    with torch.no_grad():
        out = bb.model.generate(**inp, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inp["input_ids"].shape[1]
    assert isinstance(bb.tokenizer.decode(out[0, inp["input_ids"].shape[1]:]), str)


def test_lora_adapts_the_language_model_only(kit_paths):
    bb = load_backbone(BackboneConfig(), kit_paths, trainable=True)
    names = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)
    assert not any("audio_tower" in n for n in names)
    trainable = sum(p.numel() for p in bb.model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in bb.model.parameters())


def test_4bit_lora_backward_generate_backward_on_cpu(kit_paths, tone_wav):
    """The CPU guard of docs/pitfalls.md (bitsandbytes 0.50 on the CPU): without it, on AVX512-BF16 CPUs, training after an eval generate fails."""
    import bitsandbytes as bnb

    bb = load_backbone(BackboneConfig(load_in_4bit=True), kit_paths, trainable=True)
    layers = [m for m in bb.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)
    # the audio encoder stays unquantised (quant_skip_modules)
    assert not any("audio_tower" in n for n, m in bb.model.named_modules() if isinstance(m, bnb.nn.Linear4bit))
    inp = _inputs(bb.processor, tone_wav)
    params = [p for p in bb.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)

    def step():
        bb.model.train()
        loss = bb.model(**inp, labels=inp["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    step()
    bb.model.eval()
    with torch.no_grad():
        bb.model.generate(**inp, max_new_tokens=4, do_sample=False)
    assert torch.isfinite(torch.tensor(step()))
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, params))


def test_unknown_backbone_is_a_clear_error(kit_paths):
    with pytest.raises(ValueError, match="expected one of .*tiny-qwen2-audio"):
        BackboneConfig(name="qwen3-omni")


# ---- qwen2-audio-7b-random: the real shapes with random weights (GPU measurements without a download) -----------
SHRUNK = {"audio": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64},
          "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "num_key_value_heads": 2, "vocab_size": 4096}}


def test_random_backbone_keeps_the_real_sizes_it_is_not_told_to_shrink(kit_paths):
    import json

    from emorl_lib.model.backbones import QWEN2_AUDIO_7B_TEXT, RandomModelConfig

    cfg = BackboneConfig(name="qwen2-audio-7b-random", random=RandomModelConfig(**SHRUNK))
    d = resolve_model_dir(cfg, kit_paths)
    assert resolve_model_dir(cfg, kit_paths) == d  # built once, then reused
    conf = json.loads((kit_paths.models / d / "config.json").read_text())
    text, audio = conf["text_config"], conf["audio_config"]
    assert text["hidden_size"] == 32 and text["vocab_size"] == 4096
    assert text["max_position_embeddings"] == QWEN2_AUDIO_7B_TEXT["max_position_embeddings"]
    assert audio["max_source_positions"] == 1500 and audio["num_mel_bins"] == 128
    # the real 30 s window: 1500 encoder positions = 3000 mel frames / 2
    assert load_processor(d).feature_extractor.chunk_length == 30
    other = resolve_model_dir(BackboneConfig(name="qwen2-audio-7b-random",
                                             random=RandomModelConfig(seed=1, **SHRUNK)), kit_paths)
    assert other != d  # the seed is part of the build


@pytest.mark.parametrize("fp32_frozen", [True, False])
def test_4bit_frozen_weights_fp32_or_kept_16bit(kit_paths, tone_wav, fp32_frozen):
    from emorl_lib.model.backbones import RandomModelConfig

    cfg = BackboneConfig(name="qwen2-audio-7b-random", random=RandomModelConfig(**SHRUNK), dtype="bfloat16",
                         load_in_4bit=True, gradient_checkpointing=True, fp32_frozen_weights=fp32_frozen)
    bb = load_backbone(cfg, kit_paths, trainable=True)
    frozen = {p.dtype for n, p in bb.model.named_parameters()
              if not p.requires_grad and p.__class__.__name__ != "Params4bit"}
    assert frozen == ({torch.float32} if fp32_frozen else {torch.bfloat16})
    trainable = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    inp = _inputs(bb.processor, tone_wav)
    bb.model.train()
    loss = bb.model(**inp, labels=inp["input_ids"]).loss
    loss.backward()  # gradient checkpointing with input gradients reaches the LoRA weights either way
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in bb.model.named_parameters()
               if p.requires_grad)
