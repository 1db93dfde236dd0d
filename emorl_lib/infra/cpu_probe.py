"""What a small forward/backward hashes to in this process: the check that the pinned CPU paths are honoured.

`python -m emorl_lib.infra.cpu_probe [--threads N] [--onednn]` prints the pinned environment, torch's CPU capability
and the probe's hashes as JSON; tests run it in fresh processes under different settings and compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

from .determinism import CPU_ENV, THREAD_VARS, check, describe


def probe(threads: int | None = None, onednn: bool = False) -> dict[str, Any]:
    """A forward and backward through the kinds of layers the kit's model has (linear, GELU, layer norm, softmax
    attention, 1-d convolution, log-softmax, NLL loss), plus torch's random normal fill, in fp32 on the CPU.
    Returns the sha256 of every output and gradient, and the first values (for tolerance comparisons).

    Inputs come from numpy's generator, not torch's, so they are the same whatever torch's kernels are."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = onednn
    rng = np.random.default_rng(1234)

    def t(*shape, scale=1.0, grad=True):
        x = torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32))
        return x.requires_grad_(grad)

    x = t(4, 37, 64, grad=False)
    inputs = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
    w1, b1, w2 = t(64, 192, scale=0.1), t(192, scale=0.1), t(192, 64, scale=0.1)
    wq, wk, wv = t(64, 64, scale=0.1), t(64, 64, scale=0.1), t(64, 64, scale=0.1)
    conv = t(64, 64, 3, scale=0.05)
    head = t(64, 101, scale=0.1)
    target = torch.from_numpy(rng.integers(0, 101, size=(4 * 37,)))
    h = torch.nn.functional.layer_norm(x, (64,))
    h = h + torch.nn.functional.conv1d(h.transpose(1, 2), conv, padding=1).transpose(1, 2)
    q, k, v = h @ wq, h @ wk, h @ wv
    att = torch.softmax(q @ k.transpose(1, 2) / 8.0, dim=-1) @ v
    h = h + att
    h = h + torch.nn.functional.gelu(h @ w1 + b1) @ w2
    logp = torch.log_softmax(h @ head, dim=-1)
    loss = torch.nn.functional.nll_loss(logp.reshape(-1, 101), target)
    loss.backward()
    torch.manual_seed(0)
    noise = torch.randn(4096)  # torch's vectorised normal fill (a model's random init)
    tensors = {"logp": logp.detach(), "loss": loss.detach(), "noise": noise,
               **{n: p.grad for n, p in (("w1", w1), ("b1", b1), ("w2", w2), ("wq", wq), ("conv", conv),
                                         ("head", head))}}
    hashes = {n: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()[:16] for n, v in tensors.items()}
    total = hashlib.sha256("".join(hashes[n] for n in sorted(hashes)).encode()).hexdigest()[:16]
    return {"hash": total, "hashes": hashes, "inputs": inputs, "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "onednn": onednn, "torch": torch.__version__,
            "env": {k: os.environ.get(k) for k in (*CPU_ENV, *THREAD_VARS)},
            "values": {n: v.flatten()[:2048].tolist() for n, v in tensors.items()}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m emorl_lib.infra.cpu_probe", description=__doc__)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--onednn", action="store_true", help="let torch use oneDNN (the kit turns it off)")
    ap.add_argument("--values", action="store_true", help="include the first values of every tensor")
    ap.add_argument("--kernel-env", action="store_true",
                    help="print only the environment a Jupyter kernel spec should carry (kernel.json 'env')")
    a = ap.parse_args(argv)
    if a.kernel_env:
        from .determinism import kernel_env

        print(json.dumps(kernel_env(a.threads or 1), indent=1))
        return 0
    p = probe(a.threads, a.onednn)
    if not a.values:
        p.pop("values")
    print(json.dumps({**describe(), "probe": p, "problems": check()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
