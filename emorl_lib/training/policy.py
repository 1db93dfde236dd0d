"""The policy, not the batch: the exact expected accuracy and reward of a model under its sampling temperature.

GRPO optimises the EXPECTED reward of the sampling distribution at temperature T. A batch's mean reward covers 4
prompts and is noise; what says whether a run learns or collapses is how much probability the policy puts on the
right answer over a FIXED set of utterances (the run's training prompts or a fixed class-balanced subset of them,
its held-out set).

IR (a direct answer). The canonical completion of label c is its SFT target token for token (`format_target("IR",
c)` + <|im_end|>, checked against `AudioSFTCollator` on the first utterance of every call). Teacher forcing gives
P_T(c | u) = prod_t softmax(logits_t / T)[token_t] with the sampler's own processing (TRL: top_k 0, top_p 1, the
<|AUDIO|> token suppressed), one prompt forward per utterance with its KV cache shared by the K candidates. From it:
expected accuracy P_T(gold | u), canonical mass M(u) = sum_c P_T(c | u), expected reward sum_c P_T(c | u) (w_acc
R[gold, c] + w_fmt), the mode answer, and each label's share of the mass (a collapse detector). Only canonical token
sequences are counted, so the expected accuracy is an exact LOWER bound of the sampler's (+ (1 - M) an upper one);
on a trained IR model M is above 0.99 at T 0.7.

ESR / EUR (reasoning first). The reasoning is free text: S reasoning prefixes are sampled at T up to the <answer>
token (a forked RNG: training's random stream is untouched), and every canonical answer tail is teacher-forced after
each: the answer is integrated exactly, only the reasoning is sampled (`exp_acc_se` is the prefix-sampling error).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.audio import load_16k
from ..data.testsets import TestSet, subsample
from ..infra.io import read_csv
from ..infra.log import get_logger
from ..method.parsing import structure_ok
from ..method.priors import build_prior
from ..method.prompts import build_messages, canonical_condition, format_target
from ..method.rewards import RewardConfig, alpha_at, reward_table
from ..model.generate import encode
from .heldout import StepCurve, read_curve
from .sft import AudioSFTCollator

log = get_logger(__name__)

COLUMNS = ["step", "set", "n", "exp_acc", "exp_acc_upper", "exp_ua", "exp_reward", "mass", "mass_min", "mode_acc",
           "mode_ua", "exp_acc_se", "seconds"]


@dataclass
class PolicyScores:
    """probs[i, k]: P_T(candidate k | utterance i) of the canonical completion (ESR: its mean over the sampled
    reasoning prefixes); gold[i]: the gold label's index in `candidates`; reward[i]: the expected reward."""

    candidates: tuple[str, ...]
    gold: np.ndarray
    probs: np.ndarray
    reward: np.ndarray
    se: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def p_gold(self) -> np.ndarray:
        return self.probs[np.arange(len(self.gold)), self.gold]

    @property
    def mass(self) -> np.ndarray:
        return self.probs.sum(1)

    def summary(self) -> dict[str, float]:
        g, pg, m = self.gold, self.p_gold, self.mass
        classes = sorted(set(g.tolist()))
        mode_ok = (self.probs.argmax(1) == g).astype(float)
        out = {"n": len(g), "exp_acc": float(pg.mean()), "exp_acc_upper": float((pg + 1 - m).mean()),
               "exp_ua": float(np.mean([pg[g == k].mean() for k in classes])),
               "exp_reward": float(self.reward.mean()), "mass": float(m.mean()), "mass_min": float(m.min()),
               "mode_acc": float(mode_ok.mean()), "mode_ua": float(np.mean([mode_ok[g == k].mean() for k in classes])),
               "exp_acc_se": float(np.sqrt(np.sum(self.se ** 2)) / len(g)) if self.se is not None else "",
               "seconds": round(self.seconds, 2)}
        share = self.probs.sum(0) / max(float(self.probs.sum()), 1e-30)
        out |= {f"share_{c}": float(s) for c, s in zip(self.candidates, share)}
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}


def suppressed_ids(model) -> list[int]:
    """Tokens TRL's sampler never draws (it suppresses the 'image' token, which the kit sets to <|AUDIO|>): their
    probability is 0 under the policy, so they leave every softmax."""
    cfg = getattr(model, "config", None)
    return sorted({i for i in (getattr(cfg, "audio_token_id", None), getattr(cfg, "image_token_id", None))
                   if i is not None})


def completion_ids(processor, text: str) -> list[int]:
    """An assistant completion's tokens, ended by <|im_end|> as the SFT collator ends a target."""
    tok = processor.tokenizer
    return tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]


def prompt_encoding(processor, messages: list[dict], audio: np.ndarray) -> dict[str, torch.Tensor]:
    """One utterance's generation prompt as the sampler sees it (chat template, assistant header, audio tokens)."""
    enc = encode(processor, [messages], [audio])
    return {k: enc[k][0] for k in ("input_ids", "input_features", "feature_attention_mask")}


def check_against_sft(processor, messages: list[dict], prompt_ids: torch.Tensor, target: str) -> None:
    """The teacher-forced sequence must be token for token what SFT trained on, or the measure scores other
    strings than the ones the model learned to write."""
    enc = AudioSFTCollator(processor).encode(messages, target)
    stop = int((enc["labels"] != -100).nonzero().flatten()[-1]) + 1
    want, got = enc["input_ids"][:stop].tolist(), prompt_ids.tolist() + completion_ids(processor, target)
    if want != got:
        raise AssertionError(f"policy measure: the canonical completion's tokens differ from the SFT target's "
                             f"({want[-12:]} vs {got[-12:]})")


@torch.no_grad()
def tails_logprobs(model, contexts: list[tuple[list[int], torch.Tensor, torch.Tensor]], tails: list[list[int]],
                   temperature: float, suppress: Sequence[int] = (), batch: int = 8) -> np.ndarray:
    """log P_T(tail | context) for every (context, tail): each context (prompt ids + its audio features and mask)
    runs once, left padded, and all tails run together on copies of its KV cache. Returns (contexts, tails)."""
    from transformers import DynamicCache

    dev = next(model.parameters()).device
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    K, out = len(tails), []
    for s in range(0, len(contexts), batch):
        chunk = contexts[s:s + batch]
        L = max(len(c[0]) for c in chunk)
        ids = torch.zeros((len(chunk), L), dtype=torch.long)
        mask = torch.zeros((len(chunk), L), dtype=torch.long)
        for r, (x, *_) in enumerate(chunk):
            ids[r, L - len(x):] = torch.tensor(x)
            mask[r, L - len(x):] = 1
        feats = torch.stack([c[1] for c in chunk]).to(dev, dtype if dtype in (torch.float16, torch.bfloat16)
                                                      else torch.float32)
        fmask = torch.stack([c[2] for c in chunk]).to(dev)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
        cache = DynamicCache(config=cfg)
        first = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), input_features=feats,
                      feature_attention_mask=fmask, past_key_values=cache, use_cache=True,
                      logits_to_keep=1).logits[:, -1].float()
        sel = torch.arange(len(chunk), device=dev).repeat_interleave(K)
        cache.batch_select_indices(sel)
        T = max(len(t) for t in tails)
        tid = torch.zeros((len(chunk) * K, T), dtype=torch.long)
        tmask = torch.zeros_like(tid)
        for j in range(len(chunk) * K):
            t = tails[j % K]
            tid[j, :len(t)] = torch.tensor(t)
            tmask[j, :len(t)] = 1
        am = torch.cat([mask[sel.cpu()], tmask], 1).to(dev)
        logits = model(input_ids=tid.to(dev), attention_mask=am, past_key_values=cache, use_cache=True,
                       cache_position=torch.arange(L, L + T, device=dev)).logits.float()
        allg = torch.cat([first[sel][:, None, :], logits[:, :-1]], 1) / temperature
        if suppress:
            allg[..., list(suppress)] = -math.inf
        lp = torch.log_softmax(allg, -1).gather(-1, tid.to(dev)[..., None])[..., 0]
        out.append((lp * tmask.to(dev)).sum(1).double().cpu().numpy().reshape(len(chunk), K))
    return np.concatenate(out) if out else np.zeros((0, K))


def reward_matrix(candidates: Sequence[str], reward_cfg: RewardConfig, accuracy: str, progress: float = 0.0
                  ) -> np.ndarray:
    """R[gold, answer] of the accuracy term times its weight, as the run's reward computes it at `progress`."""
    prior = None if accuracy == "binary" else build_prior(reward_cfg.prior)
    alpha = alpha_at(reward_cfg.alpha, reward_cfg.alpha_schedule, progress, reward_cfg.alpha_decay_end)
    return reward_cfg.accuracy_weight * reward_table(candidates, prior, alpha, reward_cfg.gamma)


def policy_scores(model, processor, test_set: TestSet, prompt, condition: str, temperature: float,
                  reward_cfg: RewardConfig | None = None, accuracy: str = "eswr", progress: float = 0.0,
                  prefixes: int = 4, max_reasoning_tokens: int = 128, seed: int = 0, batch: int = 8
                  ) -> PolicyScores:
    """Expected accuracy and reward of `model` sampling at `temperature` on `test_set` (the module docstring says
    how). The model is put in eval mode for the call and restored."""
    cond = canonical_condition(condition)
    reward_cfg = reward_cfg or RewardConfig()
    cands = tuple(test_set.candidates)
    gold = np.array([cands.index(test_set.gold(r)) for r in test_set.rows])
    R = reward_matrix(cands, reward_cfg, accuracy, progress)
    fmt_w = reward_cfg.format_weight if reward_cfg.use_format else 0.0
    was_training, t0 = model.training, time.perf_counter()
    model.eval()
    try:
        encs = []
        for i, r in enumerate(test_set.rows):
            msgs = build_messages(prompt, r.wav, cands, cond, r.transcript)
            encs.append(prompt_encoding(processor, msgs, load_16k(r.wav)))
            if i == 0 and cond == "IR":
                check_against_sft(processor, msgs, encs[0]["input_ids"], format_target(cond, cands[0]))
        if cond == "IR":
            ctx = [(e["input_ids"].tolist(), e["input_features"], e["feature_attention_mask"]) for e in encs]
            tails = [completion_ids(processor, format_target("IR", c)) for c in cands]
            probs = np.exp(tails_logprobs(model, ctx, tails, temperature, suppressed_ids(model), batch))
            return PolicyScores(cands, gold, probs, (probs * (R[gold] + fmt_w)).sum(1), None,
                                time.perf_counter() - t0)
        per, fmt = _reasoned_answers(model, processor, encs, cands, cond, temperature, reward_cfg, prefixes,
                                     max_reasoning_tokens, seed, batch)
        probs = per.mean(1)
        pg = per[np.arange(len(gold)), :, gold]
        se = pg.std(1, ddof=1) / math.sqrt(prefixes) if prefixes > 1 else None
        reward = (per * (R[gold][:, None, :] + fmt_w * fmt)).sum(2).mean(1)
        return PolicyScores(cands, gold, probs, reward, se, time.perf_counter() - t0)
    finally:
        model.train(was_training)


def _reasoned_answers(model, processor, encs, cands, cond, temperature, reward_cfg, prefixes, max_tokens, seed,
                      batch) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, K) answer probabilities after each of S sampled reasoning prefixes, and whether prefix + answer is
    well formed. A prefix that never reaches <answer> holds no canonical answer (probability 0)."""
    tok = processor.tokenizer
    ans, im_end = tok.convert_tokens_to_ids("<answer>"), tok.convert_tokens_to_ids("<|im_end|>")
    stop = sorted({ans, im_end, tok.eos_token_id, tok.pad_token_id} - {None})
    tails = [tok(f"{c}</answer>", add_special_tokens=False)["input_ids"] + [im_end] for c in cands]
    N, S, K = len(encs), prefixes, len(cands)
    per, fmt = np.zeros((N, S, K)), np.zeros((N, S, K))
    dev = next(model.parameters()).device
    suppress = suppressed_ids(model)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for s0 in range(0, N, batch):
            chunk = [i for i in range(s0, min(N, s0 + batch)) for _ in range(S)]
            L = max(len(encs[i]["input_ids"]) for i in chunk)
            ids = torch.full((len(chunk), L), tok.pad_token_id, dtype=torch.long)
            am = torch.zeros_like(ids)
            for r, i in enumerate(chunk):
                n = len(encs[i]["input_ids"])
                ids[r, L - n:], am[r, L - n:] = encs[i]["input_ids"], 1
            out = model.generate(
                input_ids=ids.to(dev), attention_mask=am.to(dev),
                input_features=torch.stack([encs[i]["input_features"] for i in chunk]).to(dev),
                feature_attention_mask=torch.stack([encs[i]["feature_attention_mask"] for i in chunk]).to(dev),
                max_new_tokens=max_tokens, eos_token_id=stop, pad_token_id=tok.pad_token_id, do_sample=True,
                temperature=temperature, top_k=0, top_p=1.0, suppress_tokens=suppress or None)
            ctx, where = [], []
            for r, seq in enumerate(out[:, L:].cpu().tolist()):
                cut = next((j + 1 for j, t in enumerate(seq) if t in stop), len(seq))
                seq = seq[:cut]
                if not seq or seq[-1] != ans:
                    continue
                i, s = chunk[r], r % S
                text = tok.decode(seq, skip_special_tokens=True)
                ctx.append((encs[i]["input_ids"].tolist() + seq, encs[i]["input_features"],
                            encs[i]["feature_attention_mask"]))
                where.append((i, s))
                fmt[i, s] = [float(structure_ok(f"{text}{c}</answer>", cond, reward_cfg.format_allow_whitespace,
                                                reward_cfg.format_require_nonempty)) for c in cands]
            if ctx:
                lp = tails_logprobs(model, ctx, tails, temperature, suppress, batch)
                for (i, s), v in zip(where, lp):
                    per[i, s] = np.exp(v)
    return per, fmt


def training_subset(test_set_name: str, corpus: str, rows: list, n: int | None, seed: int) -> TestSet:
    """A fixed class-balanced subset of a run's training prompts, scored like a test set."""
    return TestSet(test_set_name, corpus, subsample(rows, n, seed), False, len(rows))


class PolicyCurve(StepCurve):
    """`policy_scores` on each named set, one row per (step, set). IR draws no random numbers and ESR only from a
    forked RNG, so training is the same with or without it. ESR's prefixes take the same seed at every step (common
    random numbers): where the policy has not moved they are the same prefixes, so a change between two steps is
    the policy's and not the draw's."""

    columns = COLUMNS

    def __init__(self, sets: dict[str, TestSet], processor, prompt, condition: str, temperature: float,
                 reward_cfg: RewardConfig | None, accuracy: str, every: int, path: Path, prefixes: int = 4,
                 max_reasoning_tokens: int = 128):
        super().__init__(every, path)
        self.sets, self.processor, self.prompt, self.condition = sets, processor, prompt, condition
        self.temperature, self.reward_cfg, self.accuracy = temperature, reward_cfg, accuracy
        self.prefixes, self.max_reasoning_tokens = prefixes, max_reasoning_tokens

    def score(self, model, step: int, max_steps: int) -> list[dict[str, Any]]:
        new = []
        for name, ts in self.sets.items():
            sc = policy_scores(model, self.processor, ts, self.prompt, self.condition, self.temperature,
                               self.reward_cfg, self.accuracy, step / max(max_steps, 1), self.prefixes,
                               self.max_reasoning_tokens, seed=0)
            new.append({"step": step, "set": name, **sc.summary()})
            log.info("%s at step %d: expected accuracy %.3f, expected UA %.3f, expected reward %.3f, "
                     "canonical mass %.3f", name, step, new[-1]["exp_acc"], new[-1]["exp_ua"],
                     new[-1]["exp_reward"], new[-1]["mass"])
        return new


def read_policy(path: Path):
    """A run's policy curve as a DataFrame (None when absent or empty)."""
    return read_curve(path, ("set", "step"))


def policy_columns(path: Path) -> dict[str, float]:
    """A run's policy curve at its two ends, per set (percent; rewards as they are), and the collapse check
    `train_exp_acc_min_delta`: the lowest logged expected accuracy on the training prompts minus the start (>= 0:
    GRPO never lowered it at a logged step), and `train_exp_acc_min_delta_se`, its standard error where the points
    are estimates (reasoning runs sample their prefixes; IR points are exact): the two points' errors combined as if
    independent, which overstates it a little, the prefixes being drawn with the same seed at every step."""
    path = Path(path)
    if not path.exists():
        return {}
    rows = read_csv(path)
    out: dict[str, float] = {}
    for name in sorted({r["set"] for r in rows}):
        rs = sorted((r for r in rows if r["set"] == name), key=lambda r: int(float(r["step"])))
        for key, scale in (("exp_acc", 100), ("exp_ua", 100), ("exp_reward", 1), ("mass", 100)):
            out[f"{name}_{key}_start"] = round(scale * float(rs[0][key]), 4)
            out[f"{name}_{key}_end"] = round(scale * float(rs[-1][key]), 4)
        if name == "train":
            low = min(rs, key=lambda r: float(r["exp_acc"]))
            out["train_exp_acc_min_delta"] = round(100 * (float(low["exp_acc"]) - float(rs[0]["exp_acc"])), 4)
            if low is not rs[0] and low.get("exp_acc_se") and rs[0].get("exp_acc_se"):
                se = (float(low["exp_acc_se"]) ** 2 + float(rs[0]["exp_acc_se"]) ** 2) ** 0.5
                out["train_exp_acc_min_delta_se"] = round(100 * se, 4)
    return out


def policy_table(paths: dict):
    """One row per run (Run -> its policy CSV path): `policy_columns`."""
    import pandas as pd

    return pd.DataFrame([{"run": run.name, **policy_columns(p)} for run, p in paths.items()])
