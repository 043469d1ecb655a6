"""The implant catalogue (``planning/data/implants.json``): screws, rods, tubes, TLIF cages.

Every size range cites its source in the file's ``notes`` (tags of docs/clinical-reference.md);
sizes without a source say "assumed". Items are named ``screw-6.5x45``, ``rod-80``,
``tube-16x60``, ``cage-tlif-26x10x5``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from spinenav.errors import SpinenavError

CATALOGUE_SCHEMA = "spinenav.implants/1"


@dataclass(frozen=True)
class Catalogue:
    name: str
    version: str
    screw_diameters_mm: tuple[float, ...]
    screw_lengths_mm: tuple[float, ...]
    rod_lengths_mm: tuple[float, ...]
    rod_diameter_mm: float
    tube_diameters_mm: tuple[float, ...]
    tube_lengths_mm: tuple[float, ...]
    tube_default_mm: dict[str, float]
    cage_lengths_mm: tuple[float, ...]
    cage_heights_mm: tuple[float, ...]
    cage_lordosis_deg: tuple[float, ...]
    cage_width_mm: float
    notes: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def screw_step_mm(self) -> float:
        d = self.screw_diameters_mm
        return min(b - a for a, b in zip(d, d[1:]))


def largest_at_most(sizes: tuple[float, ...], limit: float) -> float | None:
    """The largest catalogue size <= `limit` (None when even the smallest is larger)."""
    fit = [s for s in sizes if s <= limit + 1e-9]
    return max(fit) if fit else None


def smallest_at_least(sizes: tuple[float, ...], need: float) -> float | None:
    fit = [s for s in sizes if s >= need - 1e-9]
    return min(fit) if fit else None


def screw_item(d_mm: float, l_mm: float) -> str:
    return f"screw-{d_mm:.1f}x{l_mm:.0f}"


def parse_catalogue(data: dict[str, Any], *, where: str = "catalogue") -> Catalogue:
    if not isinstance(data, dict) or data.get("schema") != CATALOGUE_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise SpinenavError(f"{where}: schema is {got!r}, expected {CATALOGUE_SCHEMA!r}")
    try:
        s, r, t, c = data["screws"], data["rods"], data["tubes"], data["cages"]
        cat = Catalogue(
            name=str(data["name"]), version=str(data["version"]),
            screw_diameters_mm=tuple(sorted(float(x) for x in s["diameters_mm"])),
            screw_lengths_mm=tuple(sorted(float(x) for x in s["lengths_mm"])),
            rod_lengths_mm=tuple(sorted(float(x) for x in r["lengths_mm"])), rod_diameter_mm=float(r["diameter_mm"]),
            tube_diameters_mm=tuple(sorted(float(x) for x in t["diameters_mm"])),
            tube_lengths_mm=tuple(sorted(float(x) for x in t["lengths_mm"])),
            tube_default_mm={k: float(v) for k, v in t["default_diameter_mm"].items()},
            cage_lengths_mm=tuple(sorted(float(x) for x in c["lengths_mm"])),
            cage_heights_mm=tuple(sorted(float(x) for x in c["heights_mm"])),
            cage_lordosis_deg=tuple(sorted(float(x) for x in c["lordosis_deg"])),
            cage_width_mm=float(c["width_mm"]), notes=tuple(data.get("notes", ())))
    except (KeyError, TypeError, ValueError) as exc:
        raise SpinenavError(f"{where}: malformed implant catalogue ({exc!r})") from exc
    for name in ("screw_diameters_mm", "screw_lengths_mm", "tube_diameters_mm", "cage_heights_mm"):
        if not getattr(cat, name) or min(getattr(cat, name)) <= 0:
            raise SpinenavError(f"{where}: {name} must list positive sizes")
    return cat


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """The catalogue shipped with spinenav."""
    text = resources.files("spinenav.planning").joinpath("data/implants.json").read_text(encoding="utf-8")
    return parse_catalogue(json.loads(text), where="planning/data/implants.json")
