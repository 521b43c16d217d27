"""Where the project lives: paths given to tasks are relative to the repo root, not the shell's directory."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve(path: str | None, default: str | None = None) -> Path:
    """``path`` (absolute, or relative to the repo root), or ``default`` relative to the repo root."""
    chosen = Path(path if path else default)
    return chosen if chosen.is_absolute() else REPO_ROOT / chosen
