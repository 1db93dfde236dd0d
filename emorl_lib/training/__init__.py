"""Training: the backbone (Qwen2-Audio, 4-bit, LoRA), the experiment matrix, the SFT warm-up and audio-true GRPO."""
