"""Write files so that a reader never sees half of one: write beside the target, then rename.

Every writer in spinenav goes through :func:`atomic_output`; an exception while writing leaves
the previous file (or no file) in place, never a truncated one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
import uuid


def _suffixes(path: Path) -> str:
    """Full extension of `path` (".nii.gz", ".nrrd"): writers pick the format from it."""
    name = path.name
    for ext in (".nii.gz", ".tar.gz", ".mrk.json"):
        if name.endswith(ext):
            return ext
    return path.suffix


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` with the same extension; rename it onto `path`
    when the block ends without an exception, delete it otherwise."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ext = _suffixes(target)
    tmp = target.with_name(f".{target.name[: len(target.name) - len(ext)]}.{uuid.uuid4().hex[:8]}.partial{ext}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """JSON with a trailing newline, written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
