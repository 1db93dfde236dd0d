"""The paper's method: the emotion-similarity prior and rewards (ESWR), prompts and answer parsing (IR/EUR/ESR),
and the acoustic descriptors and rationales that make the structured-reasoning SFT targets."""
