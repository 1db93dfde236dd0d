#!/usr/bin/env bash
# The GPU measurements of benchmarks/results/ (issue 15), item by item, as they were run on a lent GPU machine.
# Needs a CUDA GPU and the kit's pinned stack; downloads nothing (random full-size weights, synthetic data).
#
#   benchmarks/gpu_session.sh OUTDIR ITEM...      e.g.  benchmarks/gpu_session.sh /tmp/gpu env build grpo-bf16
#
# Items (in the order given):
#   env            versions, GPU, free memory and disk; fails if an import the kit needs is missing
#   build          the qwen2-audio-7b-random checkpoint (16 GB; on /dev/shm when it has room), timed
#   grpo-bf16      bench_grpo --size full, plain vs cached, bf16 (the paper profile on an A100/H100/L4); both modes
#                  in one process: the second one's memory includes ~2.5 GB the first left allocated, so memory
#                  figures come from a mode run first in its process
#   grpo-fp16      the same with fp16 compute (what a T4 uses), cached only
#   grpo-bf16-16   bf16 with backbone.fp32_frozen_weights false (frozen weights kept 16-bit), cached
#   grpo-fp16-16   fp16 with backbone.fp32_frozen_weights false, cached
#   grpo-short     bf16, 128-token completions, cached (what shorter completions save)
#   grpo-fp16-grad fp16, fp32_frozen_weights false, random rewards (real gradients: fp16 backward numerics), cached
#   smoke          emorl prepare + grpo (gpu-smoke profile, 20 steps) + evaluate --stage grpo, memory traced
#   eval-ir        evaluation throughput, IR (eval.max_new_tokens), batch 1/8/16/32, 2 batches each
#   eval-esr       evaluation throughput, ESR (256 tokens), batch 1/8/32, one batch each
#   rollout        bench_grpo --size full, the generation paths side by side (model/rollout.py: plain TRL
#                  generate, shared prefix, + rollout copy, + compiled, both), 64-token completions forced to full
#                  length, cached; then --count-ops (tensor operations per decoding step of the eager paths)
#   rollout-t4     the same in fp16 with 16-bit frozen weights and one group per generate call: what a T4 runs
#   eval-paths     evaluation: the shared prefix vs a plain generate call, and compiled decoding vs eager, ESR,
#                  batch 8, 64 tokens (outputs compared)
# STEPS (default 3): measured GRPO steps after one warm-up step.
# BUDGET_S (default 540): an item starts only if its estimate fits in what is left, and is cut at the budget, so
# that a command limit of 10 minutes still ends with every finished item's files in OUTDIR.
set -uo pipefail
out=$(realpath -m "${1:?usage: gpu_session.sh OUTDIR ITEM...}"); shift
mkdir -p "$out"
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
start=$SECONDS
budget=${BUDGET_S:-540}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

item() {  # item NAME ESTIMATE_S COMMAND...
    local name=$1 need=$2 left t0 rc
    shift 2
    left=$((budget - (SECONDS - start)))
    if ((left < need)); then
        echo "### SKIP $name: ${left} s left, estimate ${need} s"
        return
    fi
    echo "### START $name at $((SECONDS - start)) s (${left} s left)"
    t0=$SECONDS
    timeout --kill-after=15 "$((left - 5))" "$@"
    rc=$?
    echo "### END $name rc=$rc after $((SECONDS - t0)) s"
}

# `timeout` runs programs, not shell functions: the two benchmarks' common arguments as arrays
bench_grpo=("$py" benchmarks/bench_grpo.py --size full --steps "${STEPS:-3}" --warmup 1 --trace-dir "$out"
    --out "$out/grpo.csv")
bench_eval=("$py" benchmarks/bench_eval.py --profile gpu-smoke --comparisons throughput --batch-sizes 1,8,16,32
    --batches 2 --out "$out/eval.csv")

for it in "$@"; do
    case $it in
    env)
        item env 60 bash -c "nvidia-smi; df -h /dev/shm . ; free -g; $py -c '
import importlib.metadata as m, torch
for n in (\"torch\", \"transformers\", \"trl\", \"peft\", \"bitsandbytes\", \"accelerate\", \"datasets\", \"tokenizers\",
          \"safetensors\", \"huggingface_hub\", \"numpy\", \"pandas\", \"pyarrow\", \"soundfile\", \"soxr\", \"regex\", \"fsspec\"):
    print(n, m.version(n))
print(\"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))
import trl, bitsandbytes, datasets, soundfile, soxr, peft, emorl_lib.training.grpo, emorl_lib.evaluation.matrix
from emorl_lib.infra.perf import machine_description, package_versions
print(machine_description()); print(package_versions())'" ;;
    build)
        # 16 GB of random bf16 weights: on tmpfs when it has room (written and re-read at memory speed)
        if [ ! -e cache/models ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 25000000 ]; then
            mkdir -p cache /dev/shm/emorl-models && ln -s /dev/shm/emorl-models cache/models
        fi
        item build 150 $py -c "
import time
from emorl_lib.infra.config import load_profile
from emorl_lib.model.backbones import BackboneConfig, resolve_model_dir
prof = load_profile('gpu-smoke')
t0 = time.perf_counter()
d = resolve_model_dir(prof.section('backbone', BackboneConfig), prof.paths.ensure())
print(f'random full-size checkpoint {d}: {time.perf_counter() - t0:.1f} s')" ;;
    grpo-bf16) item grpo-bf16 280 "${bench_grpo[@]}" --tag bf16 --modes plain,cached ;;
    grpo-fp16) item grpo-fp16 140 "${bench_grpo[@]}" --tag fp16 --dtype float16 --modes cached ;;
    grpo-bf16-16) item grpo-bf16-16 140 "${bench_grpo[@]}" --tag bf16-frozen16 --fp32-frozen-weights false \
        --modes cached ;;
    grpo-fp16-16) item grpo-fp16-16 140 "${bench_grpo[@]}" --tag fp16-frozen16 --dtype float16 \
        --fp32-frozen-weights false --modes cached ;;
    grpo-fp16-grad) item grpo-fp16-grad 140 "${bench_grpo[@]}" --tag fp16-frozen16-grad --dtype float16 \
        --fp32-frozen-weights false --rewards random --modes cached ;;
    grpo-short) item grpo-short 90 "${bench_grpo[@]}" --tag bf16-len128 --completion-length 128 --modes cached ;;
    smoke)
        item prepare 30 $py -m emorl_lib.cli prepare --profile gpu-smoke --quiet
        item grpo 330 $py benchmarks/trace_memory.py --csv "$out/mem_smoke_grpo.csv" --out "$out/commands.csv" \
            --tag gpu-smoke -- grpo --profile gpu-smoke
        item evaluate 80 $py benchmarks/trace_memory.py --csv "$out/mem_smoke_evaluate.csv" --out "$out/commands.csv" \
            --tag gpu-smoke -- evaluate --profile gpu-smoke --stage grpo --quiet
        cp runs/gpu-smoke/logs/*.csv runs/gpu-smoke/logs/*.jsonl "$out/" 2>/dev/null
        cp results/gpu-smoke/tables/main_results.md results/gpu-smoke/tables/eval_scores.csv "$out/" 2>/dev/null
        ls -la runs/gpu-smoke/checkpoints/*/ runs/gpu-smoke/predictions/*/ 2>/dev/null ;;
    eval-ir) item eval-ir 80 "${bench_eval[@]}" --condition IR --tag gpu-smoke-IR ;;
    eval-esr) item eval-esr 130 "${bench_eval[@]}" --condition ESR --tag gpu-smoke-ESR --max-new-tokens 256 \
        --batch-sizes 1,8,32 --batches 1 ;;
    rollout) item rollout 300 "${bench_grpo[@]}" --tag rollout-paths --completion-length 64 --modes cached \
        --rollout plain,shared,shared+copy,shared+compiled,shared+copy+compiled
        item rollout-ops 120 "${bench_grpo[@]}" --tag rollout-ops --count-ops --rollout plain,shared+copy ;;
    rollout-t4) item rollout-t4 200 "${bench_grpo[@]}" --tag rollout-paths-fp16 --completion-length 64 \
        --dtype float16 --fp32-frozen-weights false --modes cached --rollout plain,shared,shared+compiled ;;
    eval-paths) item eval-paths 150 "$py" benchmarks/bench_eval.py --profile gpu-smoke --comparisons \
        shared_prefix,compiled --condition ESR --max-new-tokens 64 --batch-size 8 --utterances 16 \
        --tag gpu-paths --out "$out/eval.csv" ;;
    *) echo "unknown item $it" >&2 ;;
    esac
done
echo "### DONE after $((SECONDS - start)) s; files in $out:"
ls -la "$out"
