"""The model: the backbone registry and loader (Qwen2-Audio-7B-Instruct, the tiny and the random model of the same
architecture; 4-bit, LoRA) and batched generation with it. Below training and evaluation, which both use it."""
