"""Radiation accounting for simulated C-arm shots: dose-area product (DAP) per shot, per procedure,
and a fluoroscopy-guided versus navigated comparison.

Model
-----
DAP does not depend on the distance from the focal spot (the kerma falls as 1/d^2, the field
grows as d^2), so it is computed at 1 m::

    DAP [Gy cm^2] = Y(kVp) [uGy/mAs at 1 m] x mAs x A_1m [cm^2] x 1e-6
    Y(kVp)        = Y_80 x (kVp / 80)^2
    A_1m          = (irradiated detector area) x (1000 mm / SID)^2

``Y_80`` (tube output at 80 kVp, 1 m, ~2.5 mm Al total filtration) defaults to 50 uGy/mAs and
the kVp^2 scaling is the usual rule of thumb: NEITHER figure is in clinical-reference.md
(unverified; calibrate ``tube_output_ugy_per_mas_80kvp`` against the unit's DAP meter before
any use). The default shot (80 kVp, 2.5 mAs, full 23 cm field of a 968 mm SID C-arm,
clinical-reference 5.1) gives about 0.07 Gy cm^2, the same order as the per-shot figure
implied by clinical-reference 5.2 (2.93 Gy cm^2 per fluoroscopy-guided MIS TLIF [DUSAD18]
over ~4 screws x 8.9 shots per screw [OARM-CARM] = 0.082 Gy cm^2 per shot): the test checks
that consistency, within a factor of 2.

Literature figures used (clinical-reference.md section 5.2)
-----------------------------------------------------------
* 8.9 X-ray shots per screw with C-arm guidance [OARM-CARM].
* MIS TLIF DAP, navigation vs fluoroscopy: 0.47 vs 2.93 Gy cm^2 [DUSAD18]; the navigated
  estimate scales the fluoroscopy-guided DAP by that ratio (0.16). It is a derived figure:
  the reference gives no shots-per-screw count for navigated cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from spinenav.errors import SpinenavError
from spinenav.fluoro.carm import CarmGeometry

#: Shots per screw under C-arm guidance [OARM-CARM] (clinical-reference 5.2).
SHOTS_PER_SCREW_FLUORO = 8.9
#: MIS TLIF DAP with navigation and with fluoroscopy, Gy cm^2 [DUSAD18] (clinical-reference 5.2).
DAP_MIS_TLIF_NAVIGATED_GY_CM2 = 0.47
DAP_MIS_TLIF_FLUORO_GY_CM2 = 2.93
#: Tube output at 80 kVp and 1 m, uGy/mAs: a typical value, NOT from clinical-reference (unverified).
DEFAULT_TUBE_OUTPUT_UGY_PER_MAS_80KVP = 50.0
DEFAULT_KVP = 80.0
DEFAULT_MAS = 2.5


class DoseError(SpinenavError):
    """Exposure parameters that cannot describe a shot."""


def field_area_at_1m_cm2(geometry: CarmGeometry, *, collimated_fraction: float = 1.0) -> float:
    """Irradiated field area projected to 1 m from the focal spot, cm^2."""
    if not 0.0 < collimated_fraction <= 1.0:
        raise DoseError(f"collimated_fraction must be in (0, 1], got {collimated_fraction}")
    h, w = geometry.detector_size_mm
    return h * w / 100.0 * (1000.0 / geometry.sdd_mm) ** 2 * collimated_fraction


def shot_dap_gy_cm2(*, kvp: float = DEFAULT_KVP, mas: float = DEFAULT_MAS, field_area_1m_cm2: float,
                    tube_output_ugy_per_mas_80kvp: float = DEFAULT_TUBE_OUTPUT_UGY_PER_MAS_80KVP) -> float:
    """Dose-area product of one exposure, Gy cm^2 (model in the module docstring).

    >>> round(shot_dap_gy_cm2(kvp=80.0, mas=1.0, field_area_1m_cm2=100.0), 6)
    0.005
    """
    if not 40.0 <= kvp <= 150.0:
        raise DoseError(f"kvp must be within 40-150 kV, got {kvp}")
    if not mas > 0 or not math.isfinite(mas):
        raise DoseError(f"mas must be > 0, got {mas}")
    if not field_area_1m_cm2 > 0:
        raise DoseError(f"field area must be > 0 cm^2, got {field_area_1m_cm2}")
    y = tube_output_ugy_per_mas_80kvp * (kvp / 80.0) ** 2
    return y * mas * field_area_1m_cm2 * 1e-6


@dataclass
class DoseLog:
    """Shots of one (simulated) procedure and their DAP."""

    shots: list[dict[str, Any]] = field(default_factory=list)

    def add_shot(self, geometry: CarmGeometry, *, kvp: float = DEFAULT_KVP, mas: float = DEFAULT_MAS,
                 collimated_fraction: float = 1.0, label: str = "") -> float:
        """Record one exposure; returns its DAP, Gy cm^2."""
        dap = shot_dap_gy_cm2(kvp=kvp, mas=mas,
                              field_area_1m_cm2=field_area_at_1m_cm2(geometry, collimated_fraction=collimated_fraction))
        self.shots.append({"label": label, "kvp": kvp, "mas": mas, "collimated_fraction": collimated_fraction,
                           "dap_gy_cm2": dap})
        return dap

    @property
    def n_shots(self) -> int:
        return len(self.shots)

    @property
    def total_dap_gy_cm2(self) -> float:
        return float(sum(s["dap_gy_cm2"] for s in self.shots))

    def to_dict(self) -> dict[str, Any]:
        return {"n_shots": self.n_shots, "total_dap_gy_cm2": self.total_dap_gy_cm2, "shots": list(self.shots)}


@dataclass(frozen=True)
class GuidanceComparison:
    """Estimated shots and DAP of a plan's screws, fluoroscopy-guided vs navigated."""

    n_screws: int
    fluoro_shots: float
    fluoro_dap_gy_cm2: float
    navigated_dap_gy_cm2: float
    navigated_shot_equivalent: float
    per_shot_dap_gy_cm2: float
    sources: tuple[str, ...]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def compare_guidance(n_screws: int, geometry: CarmGeometry | None = None, *, kvp: float = DEFAULT_KVP,
                     mas: float = DEFAULT_MAS) -> GuidanceComparison:
    """Fluoroscopy-guided versus navigated placement of ``n_screws`` pedicle screws.

    Fluoroscopy-guided: 8.9 shots per screw [OARM-CARM] at the given per-shot DAP.
    Navigated: that DAP scaled by the MIS TLIF navigated/fluoroscopy DAP ratio 0.47/2.93
    [DUSAD18] (a derived estimate; the shot equivalent is that DAP over the per-shot DAP).
    """
    if int(n_screws) != n_screws or n_screws < 0:
        raise DoseError(f"n_screws must be a non-negative integer, got {n_screws}")
    geometry = geometry or CarmGeometry()
    per_shot = shot_dap_gy_cm2(kvp=kvp, mas=mas, field_area_1m_cm2=field_area_at_1m_cm2(geometry))
    shots = SHOTS_PER_SCREW_FLUORO * n_screws
    fluoro = shots * per_shot
    nav = fluoro * DAP_MIS_TLIF_NAVIGATED_GY_CM2 / DAP_MIS_TLIF_FLUORO_GY_CM2
    return GuidanceComparison(
        n_screws=int(n_screws), fluoro_shots=shots, fluoro_dap_gy_cm2=fluoro, navigated_dap_gy_cm2=nav,
        navigated_shot_equivalent=nav / per_shot, per_shot_dap_gy_cm2=per_shot,
        sources=("OARM-CARM: 8.9 shots per screw (clinical-reference 5.2)",
                 "DUSAD18: MIS TLIF DAP 0.47 (navigation) vs 2.93 (fluoroscopy) Gy cm^2 (clinical-reference 5.2)"),
        notes=("per-shot DAP from an unverified tube-output model (dose.py docstring)",
               "navigated figure derived from a per-procedure DAP ratio, not a shot count"))
