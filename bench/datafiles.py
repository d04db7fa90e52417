"""Where the catalog and the profiles live: explicit option, environment, working tree, then the repo."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def find_data_path(name: str, explicit: str | os.PathLike[str] | None, env_var: str) -> Path:
    """Resolve ``models.yaml`` or ``hardware_profiles``: the option wins, then ``$ENV``, then
    ``./name`` in the working directory, then the copy beside the package (editable install)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    local = Path.cwd() / name
    if local.exists():
        return local
    return REPO_ROOT / name


def cache_dir() -> Path:
    """``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/llm-effbench``, else ``~/.cache/llm-effbench``."""
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm-effbench"
