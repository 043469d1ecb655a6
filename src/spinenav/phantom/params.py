"""Parameters of the synthetic spine phantom (validated; every bad value gets a one-line reason).

Angles here are degrees because this model is the user-facing surface (CLI options and the
``params`` block of ``truth.json``); the generator converts them to radians once.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spinenav.phantom.anatomy import DISC_NAMES, VERTEBRA_NAMES

_ORDER = {name: i for i, name in enumerate(VERTEBRA_NAMES)}
_LEVEL_LIST = ", ".join(VERTEBRA_NAMES)

Vec3 = tuple[float, float, float]


def _check_level(name: str, what: str) -> str:
    if name not in _ORDER:
        raise ValueError(f"{what}: unknown level {name!r}; expected one of {_LEVEL_LIST}")
    return name


def _check_range(levels: tuple[str, str], what: str) -> tuple[str, str]:
    top, bottom = (_check_level(n, what) for n in levels)
    if _ORDER[top] > _ORDER[bottom]:
        raise ValueError(f"{what}: top level {top} is below bottom level {bottom}; give (top, "
                         f"bottom), cranial first, e.g. ('T10', 'S1')")
    return top, bottom


def levels_between(top: str, bottom: str) -> tuple[str, ...]:
    """Vertebra names from `top` to `bottom` inclusive, cranial first."""
    return VERTEBRA_NAMES[_ORDER[top]: _ORDER[bottom] + 1]


class FieldOfView(BaseModel):
    """A partial field of view: crop the scan to a range of levels and/or a box in world mm.

    With `levels`, the scan's z range covers those vertebrae (plus `margin_mm`); with a box,
    the scan covers the box (intersected with the z range of `levels` when both are given).
    Without either the whole phantom is scanned.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: tuple[str, str] | None = None
    margin_mm: Annotated[float, Field(ge=0.0, le=200.0)] = 10.0
    box_min_world_mm: Vec3 | None = None
    box_max_world_mm: Vec3 | None = None

    @field_validator("levels")
    @classmethod
    def _levels_ok(cls, v):
        return None if v is None else _check_range(v, "fov.levels")

    @model_validator(mode="after")
    def _box_ok(self):
        lo, hi = self.box_min_world_mm, self.box_max_world_mm
        if (lo is None) != (hi is None):
            raise ValueError("fov: give both box_min_world_mm and box_max_world_mm, or neither")
        if lo is not None:
            if not all(math.isfinite(a) for a in (*lo, *hi)):
                raise ValueError(f"fov: box corners must be finite, got {lo} and {hi}")
            if any(a >= b for a, b in zip(lo, hi)):
                raise ValueError(f"fov: box_min_world_mm {lo} must be below box_max_world_mm {hi} "
                                 "on every axis")
        if self.levels is None and lo is None:
            raise ValueError("fov: give levels=(top, bottom) and/or a box; for the whole phantom "
                             "leave fov out")
        return self


class PhantomParams(BaseModel):
    """Everything that shapes a phantom; the same parameters and seed give the same phantom.

    Parameters
    ----------
    levels : (str, str)
        Top and bottom vertebra drawn, cranial first, from T10 to S1 ("S1" draws the sacrum:
        S1 and the rest). Any contiguous sub-range.
    spacing_mm : float or (float, float, float)
        Voxel size along i (patient left), j (posterior), k (head), mm; 0.2 to 5.
    lordosis_deg : float
        L1-S1 lordosis (L1 superior to S1 superior endplate), degrees. The L5 body wedge
        [COOK21] is part of it; the rest is shared by the lumbar discs, most at L4-L5 and L5-S1
        (a disc thinned by `disc_height_loss` takes only the wedge its height allows and the
        others take the rest; ``truth.curve.segmental_lordosis_deg`` has the result).
    kyphosis_deg : float
        Thoracolumbar kyphosis over the discs T10-T11, T11-T12 and T12-L1 (equal shares), degrees.
    sacral_slope_deg : float or None
        Angle of the S1 endplate to the horizontal (table), degrees; None: 0.6 * lordosis + 10.
    scoliosis_deg : float
        Coronal Cobb angle of a single curve, degrees; positive = convex to the patient's right.
        The curve spans `scoliosis_half_span` levels either side of `scoliosis_apex`;
        compensating bends outside the curve keep the ends of the spine upright.
    disc_height_loss : dict
        Disc name -> fraction of its normal height lost (0 to 0.85), e.g. {"L4-L5": 0.5}.
    stenosis : dict
        Vertebra name -> fraction of the bony canal's AP diameter lost (0 to 0.45); the canal
        narrows from behind (lamina and ligament side) and the dural sac shrinks to fit.
    slip_mm : dict
        Vertebra name -> anterior slip over the vertebra below (mm), e.g. {"L4": 8.0}: L4 and
        everything above it move along L5's anterior direction. At most Meyerding grade II.
    scale : float
        Body size; multiplies every anatomical length (0.75 to 1.3).
    noise_hu : float
        Standard deviation of the Gaussian image noise, HU (0 for a noise-free CT).
    blur_mm : float
        Sigma of the Gaussian point-spread function, mm (0 for none).
    organs : bool
        Draw abdominal organs and bowel (True) or leave the abdomen as fat (False).
    fov : FieldOfView or None
        Partial field of view; None scans the whole phantom.
    seed : int
        Seeds the noise and the bowel layout; recorded in truth.json.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: tuple[str, str] = ("T10", "S1")
    spacing_mm: float | Vec3 = 1.0
    lordosis_deg: Annotated[float, Field(ge=-10.0, le=80.0)] = 45.0
    kyphosis_deg: Annotated[float, Field(ge=-20.0, le=45.0)] = 10.0
    sacral_slope_deg: Annotated[float, Field(ge=0.0, le=70.0)] | None = None
    scoliosis_deg: Annotated[float, Field(ge=-45.0, le=45.0)] = 0.0
    scoliosis_apex: str = "L1"
    scoliosis_half_span: Annotated[int, Field(ge=1, le=4)] = 2
    disc_height_loss: dict[str, float] = Field(default_factory=dict)
    stenosis: dict[str, float] = Field(default_factory=dict)
    slip_mm: dict[str, float] = Field(default_factory=dict)
    scale: Annotated[float, Field(ge=0.75, le=1.3)] = 1.0
    noise_hu: Annotated[float, Field(ge=0.0, le=300.0)] = 20.0
    blur_mm: Annotated[float, Field(ge=0.0, le=3.0)] = 0.5
    organs: bool = True
    fov: FieldOfView | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0

    # ------------------------------------------------------------------ field checks
    @field_validator("levels")
    @classmethod
    def _levels_ok(cls, v):
        return _check_range(v, "levels")

    @field_validator("spacing_mm")
    @classmethod
    def _spacing_ok(cls, v):
        vals = (v, v, v) if isinstance(v, (int, float)) else tuple(v)
        for s in vals:
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"spacing_mm must be positive and finite on every axis, got {v!r}")
            if not 0.2 <= s <= 5.0:
                raise ValueError(f"spacing_mm {s} is outside 0.2 to 5 mm (got {v!r}); CT voxels "
                                 "are 0.3 to 5 mm")
        return v

    @field_validator("scoliosis_apex")
    @classmethod
    def _apex_ok(cls, v):
        return _check_level(v, "scoliosis_apex")

    @field_validator("disc_height_loss")
    @classmethod
    def _loss_ok(cls, v):
        for disc, f in v.items():
            if disc not in DISC_NAMES:
                raise ValueError(f"disc_height_loss: unknown disc {disc!r}; expected one of "
                                 f"{', '.join(DISC_NAMES)}")
            if not (math.isfinite(f) and 0.0 <= f <= 0.85):
                raise ValueError(f"disc_height_loss[{disc!r}] = {f}: give the fraction of height "
                                 "lost, 0 <= loss <= 0.85 (0.5 = half the normal height; 1 would "
                                 "fuse the vertebrae)")
        return v

    @field_validator("stenosis")
    @classmethod
    def _stenosis_ok(cls, v):
        for level, f in v.items():
            if level in DISC_NAMES:
                raise ValueError(f"stenosis: {level!r} is a disc; give the vertebra whose bony "
                                 f"canal narrows, e.g. {level.split('-')[0]!r}")
            _check_level(level, "stenosis")
            if not (math.isfinite(f) and 0.0 <= f <= 0.45):
                raise ValueError(f"stenosis[{level!r}] = {f}: give the fraction of the canal's AP "
                                 "diameter lost, 0 <= f <= 0.45")
        return v

    @field_validator("slip_mm")
    @classmethod
    def _slip_ok(cls, v):
        for level, mm in v.items():
            _check_level(level, "slip_mm")
            if level == "S1":
                raise ValueError("slip_mm: S1 cannot slip (it is the sacrum); give the vertebra "
                                 "that slips over the one below, e.g. 'L5'")
            if not (math.isfinite(mm) and 0.0 <= mm <= 20.0):
                raise ValueError(f"slip_mm[{level!r}] = {mm}: give an anterior slip of 0 to 20 mm "
                                 "(retrolisthesis is not modelled)")
        return v

    # ------------------------------------------------------------------ cross checks
    @model_validator(mode="after")
    def _within_levels(self):
        drawn = set(levels_between(*self.levels))
        rng = f"{self.levels[0]}-{self.levels[1]}"
        for disc in self.disc_height_loss:
            up, low = disc.split("-")
            if up not in drawn or low not in drawn:
                raise ValueError(f"disc_height_loss: disc {disc} is not between the drawn levels "
                                 f"{rng}")
        for level in self.stenosis:
            if level not in drawn:
                raise ValueError(f"stenosis: {level} is not among the drawn levels {rng}")
        for level in self.slip_mm:
            below = VERTEBRA_NAMES[_ORDER[level] + 1]
            if level not in drawn or below not in drawn:
                raise ValueError(f"slip_mm: {level} over {below} needs both drawn; levels are {rng}")
        if self.fov is not None and self.fov.levels is not None:
            for lv in self.fov.levels:
                if lv not in drawn:
                    raise ValueError(f"fov.levels: {lv} is not among the drawn levels {rng}")
        return self

    # ------------------------------------------------------------------ derived
    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        s = self.spacing_mm
        return (float(s), float(s), float(s)) if isinstance(s, (int, float)) else tuple(float(a) for a in s)

    @property
    def drawn_levels(self) -> tuple[str, ...]:
        return levels_between(*self.levels)

    @property
    def sacral_slope_rad(self) -> float:
        ss = self.sacral_slope_deg if self.sacral_slope_deg is not None else 0.6 * self.lordosis_deg + 10.0
        return math.radians(ss)
