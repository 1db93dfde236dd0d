"""Infrastructure: profiles and settings, paths, atomic file writes, logging, the notebook runner, measurements."""
