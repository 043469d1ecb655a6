"""The ``spinenav plan``  command (registered on the shared Typer app)."""

from __future__ import annotations

from spinenav.app.common import app  # noqa: F401  (commands register on it)
