"""Where things live. One place for every path the kit writes or reads.

Layout (all relative to the repository root unless a profile gives absolute paths):
  cache/    heavy, shareable between profiles: synthetic corpora, the 16 kHz wav cache, the tiny model
  runs/<profile>/     per-profile working data: manifests, descriptors, checkpoints, predictions, logs
  results/<profile>/  what a paper uses: tables/, figures/, reports
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # emorl_lib/
REPO_ROOT = PACKAGE_ROOT.parent
PACKAGE_DATA = PACKAGE_ROOT / "data"  # shipped data files (track-2 lists, chat template)


def repo_root() -> Path:
    """The kit's root (params/, cache/, runs/, results/): EMORL_HOME, else the source checkout, else the cwd."""
    if os.environ.get("EMORL_HOME"):
        return Path(os.environ["EMORL_HOME"]).resolve()
    if (REPO_ROOT / "params").is_dir():
        return REPO_ROOT
    return Path.cwd().resolve()


def _resolve(p: str | Path, base: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(str(p))))
    return p if p.is_absolute() else (base / p)


@dataclass
class PathsConfig:
    """The `paths` section of a profile."""

    cache: str = "cache"
    runs: str = "runs"
    results: str = "results"


@dataclass
class Paths:
    profile: str
    cache: Path
    run: Path
    results: Path

    @classmethod
    def for_profile(cls, profile: str, cfg: PathsConfig | None = None) -> "Paths":
        cfg = cfg or PathsConfig()
        root = repo_root()
        return cls(
            profile=profile,
            cache=_resolve(cfg.cache, root),
            run=_resolve(cfg.runs, root) / profile,
            results=_resolve(cfg.results, root) / profile,
        )

    # --- cache (shared between profiles) ---
    @property
    def models(self) -> Path:
        return self.cache / "models"

    @property
    def synthetic(self) -> Path:
        return self.cache / "synthetic"

    @property
    def audio16k(self) -> Path:
        return self.cache / "audio16k"

    # --- per-profile working data ---
    @property
    def manifests(self) -> Path:
        return self.run / "manifests"

    @property
    def checkpoints(self) -> Path:
        return self.run / "checkpoints"

    @property
    def predictions(self) -> Path:
        return self.run / "predictions"

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    # --- results ---
    @property
    def tables(self) -> Path:
        return self.results / "tables"

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    def ensure(self) -> "Paths":
        for d in (self.cache, self.run, self.results, self.tables, self.figures, self.manifests):
            d.mkdir(parents=True, exist_ok=True)
        return self
