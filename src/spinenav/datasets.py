"""Where the real CT data for tests and benchmarks lives.

One setting: the environment variable ``SPINENAV_TEST_DATA``; without it, ``../shared/data``
beside the repository root. Tests that need the data skip, saying why, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SPINENAV_TEST_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def test_data_dir() -> Path:
    """The folder of real CT data (it may not exist; see :func:`test_data_missing_reason`)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser().resolve()
    return (_REPO_ROOT / ".." / "shared" / "data").resolve()


def test_data_missing_reason(*relative: str) -> str | None:
    """None when the data folder and each `relative` path in it exist, else why not."""
    root = test_data_dir()
    if not root.is_dir():
        return f"real CT data not found at {root} (set {ENV_VAR} to its folder)"
    for rel in relative:
        if not (root / rel).exists():
            return f"{rel} not found in {root} (set {ENV_VAR} to the real CT data folder)"
    return None
