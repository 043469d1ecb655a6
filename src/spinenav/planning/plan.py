"""`SurgicalPlan`: the planning document (``plan.json``, schema ``spinenav.plan/1``).

One document per CT and request: which CT it was made on (a fingerprint of the voxels and the
grid, never a patient identifier), the :class:`~spinenav.anatomy.model.SpineModel` it used,
the requested procedures, and what the planner made of them: percutaneous pedicle screws,
rods, tubular access corridors, TLIF cages, skin incisions, the open-versus-MIS tissue
comparison, every flag in plain words, and the parameters that produced it. Everything
downstream (report, fluoroscopy, navigation, viewer) reads this one document.

File conventions (docs/DESIGN.md): positions are LPS world millimetres (``*_world_mm``),
directions unit vectors in world (``*_world``), angles degrees (``*_deg``: a file schema; the
code works in radians), volumes ``*_mm3`` or ``*_cm3``. Each automatic result carries
``confidence`` (0 to 1) and ``flags``; a missing value is ``null`` with the reason.
Field names are stable: new fields may be added, none renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from spinenav.documents import load_json_model
from spinenav.anatomy.model import SpineModel
from spinenav.errors import SpinenavError

SCHEMA = "spinenav.plan/1"

Vec3 = tuple[float, float, float]
Side = Literal["left", "right"]
Procedure = Literal["screws", "microdiscectomy", "decompression", "tlif"]
PROCEDURES: tuple[str, ...] = ("screws", "microdiscectomy", "decompression", "tlif")
Grade = Literal["A", "B", "C", "D", "E"]


class PlanSchemaError(SpinenavError):
    """A plan.json file is missing, unreadable or of another schema version."""


class PlanningError(SpinenavError):
    """A planning request that cannot be carried out (the message says why and what to do)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- provenance
class CTFingerprint(_Model):
    """Which CT the plan belongs to: a hash of the voxel values and the grid, no identifiers.

    ``sha256`` is over the array bytes (C order, little-endian, the dtype named in ``dtype``)
    followed by the shape; two CTs with the same voxels and grid have the same fingerprint.
    """

    sha256: str
    dtype: str
    shape: tuple[int, int, int]
    spacing_mm: Vec3
    T_world_from_index: list[list[float]]
    axcodes: str


def ct_fingerprint(ct: Any) -> CTFingerprint:
    """Fingerprint of a :class:`~spinenav.imaging.volume.Volume` (see :class:`CTFingerprint`)."""
    arr = np.ascontiguousarray(ct.array)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    h = hashlib.sha256()
    h.update(arr.tobytes())
    h.update(repr(tuple(int(s) for s in arr.shape)).encode())
    return CTFingerprint(sha256=h.hexdigest(), dtype=str(arr.dtype), shape=tuple(int(s) for s in arr.shape),
                         spacing_mm=tuple(float(s) for s in ct.spacing_mm),  # type: ignore[arg-type]
                         T_world_from_index=[[float(x) for x in row] for row in ct.affine],
                         axcodes="".join(ct.axcodes))


# ----------------------------------------------------------------------------- flags
class PlanFlag(_Model):
    """A doubt, a refusal or a warning, in plain words, with where the rule comes from.

    ``code``: short machine code (``no_safe_screw``, ``skin_outside_view``, ...);
    ``item``: the id of the screw, corridor, cage, rod or incision it concerns (empty for the
    whole plan); ``source``: the section/tag of docs/clinical-reference.md behind the threshold
    (empty for quality flags, "assumed" where the figure has no source).
    """

    code: str
    level: str = ""  # "L4", a disc "L4-L5", or "" for the whole plan
    side: Side | None = None
    item: str = ""
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    source: str = ""


class ProcedureRequest(_Model):
    """What was asked: a procedure at levels and sides."""

    procedure: Procedure
    levels: list[str]  # vertebrae for screws ("L4", "L5"); discs for access and TLIF ("L4-L5")
    sides: list[Side]
    bilateral_over_the_top: bool = False


# ----------------------------------------------------------------------------- screws
class ScrewAlternative(_Model):
    """What could be done where the planned screw does not fit (or as a second choice).

    ``kind``: "smaller_screw" (the same trajectory, a smaller catalogue size),
    "cortical_bone_trajectory" (CBT: medial-to-lateral, caudal-to-cranial from the pars,
    clinical-reference 2.4), or "skip_level" (no screw at this level; the construct spans it).
    """

    kind: Literal["smaller_screw", "cortical_bone_trajectory", "skip_level"]
    message: str
    entry_bone_world_mm: Vec3 | None = None
    tip_world_mm: Vec3 | None = None
    axis_world: Vec3 | None = None
    diameter_mm: float | None = None
    length_mm: float | None = None
    catalogue_item: str | None = None
    min_cortical_margin_mm: float | None = None
    predicted_grade: Grade | None = None
    fits: bool = False  # True when it keeps the required cortical margin


class Screw(_Model):
    """One percutaneous pedicle screw.

    The screw runs from ``entry_bone_world_mm`` (where its axis enters the posterior bone
    surface; the head sits there) along ``axis_world`` (posterior -> anterior) to
    ``tip_world_mm``; ``length_mm`` = |tip - entry_bone|. ``entry_skin_world_mm``: where the
    axis, extended backwards, leaves the skin (null when outside the field of view).
    ``convergence_deg``: angle in the vertebra's axial plane between the axis and the
    sagittal midline, positive = medial going anterior; ``sagittal_deg``: angle between the
    axis and the vertebra's axial plane, positive = the tip is caudal of the entry.
    ``min_cortical_margin_mm``: smallest distance from the screw surface to the outside of the
    vertebra (label-map boundary), over the screw from ``seat_mm`` (mm along the axis from the
    bone entry, where the screw is wholly inside the bone) to the tip; negative = breach;
    ``min_margin_world_mm`` the axis point where it occurs, ``min_margin_direction`` which
    wall ("medial", "lateral", "superior", "inferior", "anterior", "posterior").
    ``predicted_grade``: Gertzbein-Robbins from the breach (clinical-reference 3.1).
    ``accepted``: the screw keeps ``required_margin_mm`` everywhere; otherwise the flags
    say why and ``alternatives`` what else could be done.
    """

    id: str  # "L4-left"
    level: str
    side: Side
    trajectory: Literal["pedicle", "cortical"] = "pedicle"
    entry_bone_world_mm: Vec3
    entry_skin_world_mm: Vec3 | None = None
    skin_to_bone_mm: float | None = None
    tip_world_mm: Vec3
    axis_world: Vec3
    diameter_mm: float
    length_mm: float
    catalogue_item: str
    convergence_deg: float
    sagittal_deg: float
    isthmus_width_mm: float | None = None
    isthmus_height_mm: float | None = None
    fill_ratio: float | None = None  # diameter / outer isthmus width
    largest_safe_diameter_mm: float | None = None  # on this trajectory, for the required margin
    longest_safe_length_mm: float | None = None
    seat_mm: float = 0.0
    min_cortical_margin_mm: float
    min_margin_world_mm: Vec3
    min_margin_along_mm: float  # from the bone entry along the axis
    min_margin_direction: str
    required_margin_mm: float
    predicted_grade: Grade
    max_breach_mm: float = 0.0
    accepted: bool
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    flags: list[str] = Field(default_factory=list)
    reason: str | None = None
    alternatives: list[ScrewAlternative] = Field(default_factory=list)


class Rod(_Model):
    """A percutaneous rod joining the accepted screws of one side.

    ``length_mm``: catalogue length that spans the heads (``span_mm`` between the outermost
    heads plus ``overhang_mm`` at each end); ``max_head_offset_mm``: largest distance of a
    middle head from the straight line through the end heads (0 for two screws);
    ``ml_step_mm`` / ``depth_step_mm``: largest medio-lateral / dorso-ventral step between
    neighbouring heads (what a percutaneous rod must follow under the fascia).
    """

    id: str  # "rod-left"
    side: Side
    screw_ids: list[str]
    levels: list[str]
    head_world_mm: list[Vec3]
    span_mm: float
    overhang_mm: float
    length_mm: float
    catalogue_item: str | None = None
    max_head_offset_mm: float
    ml_step_mm: float
    depth_step_mm: float
    bend_deg: float
    ok: bool
    flags: list[str] = Field(default_factory=list)
    reason: str | None = None


# ----------------------------------------------------------------------------- access
class Corridor(_Model):
    """A tubular access corridor (microdiscectomy, decompression, or the TLIF facetectomy).

    The tube runs along ``axis_world`` (skin -> target) from ``skin_entry_world_mm`` to
    ``docking_world_mm`` (on the lamina-facet junction) and the working channel continues to
    ``target_world_mm``. ``depth_mm``: skin to docking point (tube length needed);
    ``target_depth_mm``: skin to target. ``paramedian_offset_mm``: distance of the skin entry
    from the midsagittal plane (through the spinous tips). ``medial_angle_deg``: angle in the
    vertebra's axial plane between the axis and the sagittal plane, positive = the tube points
    medially going anterior; ``craniocaudal_angle_deg``: angle between the axis and the axial
    plane, positive = pointing caudally going anterior. ``laminotomy_volume_mm3``: bone inside
    the tube's cylinder between the docking point and the target (what must be removed to
    reach the target through this tube; an upper bound). ``min_canal_distance_mm``: smallest
    distance from the tube (surface, skin to docking) to the dural sac / canal;
    ``crosses_canal`` True when the tube or the axis to the target enters it.
    """

    id: str  # "L4-L5-left-microdiscectomy"
    procedure: Literal["microdiscectomy", "decompression", "tlif"]
    level: str  # disc "L4-L5"
    side: Side
    target_kind: Literal["disc_space", "lateral_recess", "interlaminar_window", "kambin_triangle"]
    target_world_mm: Vec3
    docking_world_mm: Vec3
    skin_entry_world_mm: Vec3 | None = None
    axis_world: Vec3
    paramedian_offset_mm: float | None = None
    medial_angle_deg: float
    craniocaudal_angle_deg: float
    tube_diameter_mm: float
    tube_catalogue_item: str
    tube_length_mm: float | None = None
    depth_mm: float | None = None
    target_depth_mm: float | None = None
    laminotomy_volume_mm3: float
    bilateral_over_the_top: bool = False
    contralateral_target_world_mm: Vec3 | None = None
    over_the_top_angle_deg: float | None = None
    min_canal_distance_mm: float | None = None
    crosses_canal: bool
    canal_source: str = ""  # "spinal_cord label" or "SpineModel canal"
    kambin_inscribed_diameter_mm: float | None = None
    kambin_centre_world_mm: Vec3 | None = None
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    flags: list[str] = Field(default_factory=list)
    reason: str | None = None


class Cage(_Model):
    """A TLIF interbody cage, inserted obliquely through the Kambin corridor.

    ``length_mm``, ``width_mm``, ``height_mm``, ``lordosis_deg`` from the catalogue; chosen
    from ``disc_height_mm`` (middle height), ``endplate_depth_mm`` (AP length of the lower
    vertebra's superior endplate) and the available oblique chord ``available_length_mm``.
    ``centre_world_mm`` is where the cage sits (disc centre), ``axis_world`` its long axis
    (insertion direction), ``height_axis_world`` the disc normal.
    """

    id: str  # "L4-L5-cage"
    level: str
    side: Side  # approach side
    catalogue_item: str
    length_mm: float
    width_mm: float
    height_mm: float
    lordosis_deg: float
    disc_height_mm: float | None = None
    disc_posterior_height_mm: float | None = None
    disc_anterior_height_mm: float | None = None
    segmental_lordosis_deg: float | None = None
    endplate_depth_mm: float | None = None
    available_length_mm: float | None = None
    centre_world_mm: Vec3
    axis_world: Vec3
    height_axis_world: Vec3
    insertion_angle_deg: float  # between the cage axis and the sagittal plane
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    flags: list[str] = Field(default_factory=list)
    reason: str | None = None


# ----------------------------------------------------------------------------- skin, tissue
class Incision(_Model):
    """A skin incision serving one or more entries (screws and tubes whose skin entries lie
    within ``merge_distance_mm`` of each other share one). ``direction_world``: the
    incision's long axis (cranio-caudal along the skin); ``length_mm`` its length."""

    id: str  # "incision-1"
    side: Literal["left", "right", "midline"]
    centre_world_mm: Vec3
    direction_world: Vec3
    start_world_mm: Vec3
    end_world_mm: Vec3
    length_mm: float
    entries: list[str]  # ids of screws / corridors
    paramedian_offset_mm: float | None = None


class TissueComparison(_Model):
    """Open midline equivalent versus the MIS plan, for the same levels; only computed
    quantities (definitions in ``definitions``).

    Muscle is the paraspinal (erector spinae + multifidus) mask: the autochthon labels when
    the label map has them (``muscle_source`` "autochthon labels"), else a HU mask of muscle
    dorsal to the spine ("HU mask").
    """

    levels: list[str]
    open_incision_length_mm: float
    mis_incision_length_mm: float
    open_muscle_disrupted_cm3: float
    mis_muscle_disrupted_cm3: float
    muscle_spared_cm3: float
    muscle_spared_percent: float | None = None
    open_bone_removed_mm3: float
    mis_bone_removed_mm3: float
    paraspinal_muscle_total_cm3: float
    muscle_source: Literal["autochthon labels", "HU mask"]
    open_lateral_extent_mm: float
    definitions: list[str] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)


class PlanningParameters(_Model):
    """The knobs the planner used (defaults cite their source in planning/screws.py etc.)."""

    required_margin_mm: float = 1.0
    fill_ratio_max: float = 0.8
    body_depth_fraction: dict[str, float] = Field(default_factory=dict)
    skin_hu_threshold: float = -500.0
    incision_merge_distance_mm: float = 20.0
    screw_incision_mm: float = 15.0
    dilator_diameter_mm: float = 12.0
    tube_diameter_mm: dict[str, float] = Field(default_factory=dict)
    bilateral_over_the_top: bool = False
    catalogue: str = ""  # catalogue name and version


class SurgicalPlan(_Model):
    """The plan of one CT (``plan.json``)."""

    schema_: Literal["spinenav.plan/1"] = Field(SCHEMA, alias="schema")
    spinenav_version: str
    source_ct: CTFingerprint
    spine: SpineModel
    levels: list[str]  # vertebrae the plan touches, cranial first
    procedures: list[ProcedureRequest]
    screws: list[Screw] = Field(default_factory=list)
    rods: list[Rod] = Field(default_factory=list)
    corridors: list[Corridor] = Field(default_factory=list)
    cages: list[Cage] = Field(default_factory=list)
    incisions: list[Incision] = Field(default_factory=list)
    total_incision_length_mm: float = 0.0
    tissue: TissueComparison | None = None
    flags: list[PlanFlag] = Field(default_factory=list)
    parameters: PlanningParameters = Field(default_factory=PlanningParameters)
    warnings: list[str] = Field(default_factory=list)
    definitions: list[str] = Field(default_factory=list)
    timings_s: dict[str, float] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    def screw(self, screw_id: str) -> Screw:
        for s in self.screws:
            if s.id == screw_id:
                return s
        raise KeyError(f"no screw {screw_id!r} (have {[s.id for s in self.screws]})")

    def corridor(self, corridor_id: str) -> Corridor:
        for c in self.corridors:
            if c.id == corridor_id:
                return c
        raise KeyError(f"no corridor {corridor_id!r} (have {[c.id for c in self.corridors]})")

    @property
    def accepted_screws(self) -> list[Screw]:
        return [s for s in self.screws if s.accepted]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def plan_json_schema() -> dict[str, Any]:
    """The JSON schema of ``plan.json`` (published as ``schemas/plan.schema.json``)."""
    schema = SurgicalPlan.model_json_schema(by_alias=True, mode="serialization")
    schema["$id"] = "https://spinenav.org/schemas/plan.schema.json"
    schema["title"] = f"spinenav surgical plan ({SCHEMA})"
    return schema


def load_plan(path: str | os.PathLike[str]) -> SurgicalPlan:
    """Read a ``plan.json`` written by :func:`spinenav.planning.export.write_plan`.

    Raises
    ------
    PlanSchemaError
        Missing or unreadable file, another schema version, or fields that do not match.
    """
    return load_json_model(path, SurgicalPlan, schema=SCHEMA, error=PlanSchemaError,
                           remedy="re-run 'spinenav plan' with this version of spinenav")


def schema_text() -> str:
    """``schemas/plan.schema.json`` as it must read (sorted keys, 2-space indent, final newline)."""
    return json.dumps(plan_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m spinenav.planning.plan schemas/plan.schema.json
    import sys

    from spinenav.atomic import write_text_atomic

    write_text_atomic(sys.argv[1] if len(sys.argv) > 1 else "schemas/plan.schema.json", schema_text())
