"""Data: label maps, the manifest schema, audio decoding, corpus loaders, the synthetic corpora, preparation.

Shipped data files (the EmoBox track-2 lists, the chat template) live beside this file."""
