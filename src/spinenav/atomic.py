"""Write files so that a reader never sees half of one: write beside the target, then rename.

Every writer in spinenav goes through :func:`atomic_output`; an exception while writing leaves
the previous file (or no file) in place, never a truncated one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
import uuid


def _suffixes(path: Path) -> str:
    """Full extension of `path` in lower case (".nii.gz", ".nrrd"): writers pick the format
    from it, and some (SimpleITK, nibabel) only know the lower-case spelling."""
    name = path.name.lower()
    for ext in (".nii.gz", ".tar.gz", ".mrk.json"):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` with the same extension; rename it onto `path`
    when the block ends without an exception, delete it otherwise."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ext = _suffixes(target)
    stem = target.name[: len(target.name) - len(ext)]
    tmp = target.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.partial{ext}")
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


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; when the block ends without an exception
    it replaces `path` (an existing folder is set aside, and put back if the swap fails);
    otherwise it is deleted and `path` is untouched. A reader never sees a half-written folder.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.with_name(f".{target.name}.{tag}.partial")
    old = target.with_name(f".{target.name}.{tag}.old")
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old.exists() and not target.exists():
                os.replace(old, target)  # put the previous folder back
            raise
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
