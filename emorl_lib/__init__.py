"""emorl-kit: reproducibility kit for EMO-RL (Li et al., Findings of EMNLP 2025, arXiv 2509.15654).

Heavy dependencies (torch, transformers, trl) are imported by the submodules that need them, so that
`import emorl_lib` and the light modules (labels, rewards, metrics) stay fast.
"""

__version__ = "0.1.0"
