"""Reading the project's own schema-versioned JSON documents (spine.json, plan.json, truth.json,
C-arm sidecars): one place that says what is wrong with a file, naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from spinenav.errors import SpinenavError

M = TypeVar("M", bound=BaseModel)


def read_json_document(path: str | os.PathLike[str], *, schema: str, error: type[SpinenavError],
                       remedy: str = "", missing: str = "no such file") -> dict[str, Any]:
    """The JSON object in `path`, whose ``"schema"`` field must be `schema`.

    Raises `error` (a SpinenavError subclass) naming the file: missing, unreadable, not JSON,
    or another schema (then `remedy`, e.g. "re-run 'spinenav plan'", is appended).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{p}: {missing}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{p}: cannot read as JSON ({exc})") from exc
    found = data.get("schema") if isinstance(data, dict) else None
    if found != schema:
        raise error(f"{p}: schema is {found!r}, expected {schema!r}" + (f"; {remedy}" if remedy else ""))
    return data


def load_json_model(path: str | os.PathLike[str], model: type[M], *, schema: str, error: type[SpinenavError],
                    remedy: str = "") -> M:
    """:func:`read_json_document`, then validated as the pydantic `model` (``error`` names the
    file and the first problems when a field does not match)."""
    data = read_json_document(path, schema=schema, error=error, remedy=remedy)
    try:
        return model.model_validate(data)
    except ValueError as exc:
        lines = str(exc).splitlines()
        raise error(f"{Path(path)}: does not match {schema} ({' '.join(lines[:3])})") from exc
