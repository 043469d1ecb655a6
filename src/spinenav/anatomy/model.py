"""`SpineModel`: the anatomy document (``spine.json``, schema ``spinenav.spine/1``).

Everything the anatomy layer found about one CT: per vertebra its name and how sure the level
labelling is (filled by :mod:`spinenav.anatomy.levels`), its landmarks and local frame
(:mod:`~spinenav.anatomy.landmarks`), its measurements and flags
(:mod:`~spinenav.anatomy.measure`); per disc its heights, slip and angles; spine-wide angles;
which backend made the label map and with which parameters; and every warning.

File conventions (docs/DESIGN.md): positions are LPS world millimetres (``*_world_mm``),
directions unit vectors in world (``*_world``), angles degrees (``*_deg``: this is a file
schema; inside the code angles are radians), every other unit in the field name. Each
automatic result carries ``confidence`` (0 to 1), ``flags`` (short codes) and a ``reason``
when it is doubtful; a missing value is ``null`` with the reason, never a NaN.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from spinenav.documents import load_json_model
from spinenav.errors import SpinenavError

SCHEMA = "spinenav.spine/1"

Vec3 = tuple[float, float, float]


class SpineModelSchemaError(SpinenavError):
    """A spine.json file is missing, unreadable or of another schema version."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def vec3(a: Any) -> Vec3:
    """A plain (x, y, z) tuple of floats from an array-like of 3 numbers."""
    v = np.asarray(a, dtype=np.float64).reshape(3)
    return (float(v[0]), float(v[1]), float(v[2]))


class Quality(_Model):
    """How far a result can be trusted."""

    confidence: float = Field(1.0, ge=0.0, le=1.0)
    flags: list[str] = Field(default_factory=list)  # short codes, e.g. "cut_by_field_of_view"
    reason: str | None = None  # plain language, set whenever confidence < 1 or flags is non-empty


# ----------------------------------------------------------------------------- landmarks
class VertebraFrame(_Model):
    """The vertebra's own anatomical frame: right-handed, lr x ap = cc.

    ``origin_world_mm`` is the body centre: midway between the two endplate centres (the body
    centroid when an endplate is missing). ``axis_lr_world`` points to the patient's left,
    ``axis_ap_world`` posterior (from the body towards the canal), ``axis_cc_world`` cranial
    (the mean of the superior endplate normal and the reversed inferior one).
    """

    origin_world_mm: Vec3
    axis_lr_world: Vec3
    axis_ap_world: Vec3
    axis_cc_world: Vec3

    def T_world_from_vertebra(self) -> np.ndarray:
        """4x4 rigid transform from the vertebra frame (mm) to world LPS mm."""
        T = np.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2] = self.axis_lr_world, self.axis_ap_world, self.axis_cc_world
        T[:3, 3] = self.origin_world_mm
        return T


class Endplate(Quality):
    """A plane fitted to the body's superior or inferior surface (its central part).

    ``normal_world`` is outward (cranial for the superior endplate, caudal for the inferior).
    ``centre_world_mm`` is the centroid of the endplate's footprint, on the plane.
    ``ap_length_mm`` is the footprint's extent along the vertebra's ap axis (used for the
    Meyerding percentage), ``lr_width_mm`` along lr. ``edges`` says how the surface was
    located: "ct" (steepest point of the CT profile across the surface, sub-voxel) or "mask"
    (the label map's boundary, +-half a voxel).
    """

    centre_world_mm: Vec3
    normal_world: Vec3
    ap_length_mm: float
    lr_width_mm: float
    fit_rms_mm: float
    n_points: int
    edges: Literal["ct", "mask"] = "mask"


class Canal(Quality):
    """The vertebral foramen in the vertebra's axial plane through the pedicle isthmus centres
    (through the canal's middle slice when the pedicles were not found).

    ``centre_world_mm``: midpoint of the canal's widest left-right chord (the interpedicular
    line), where the AP diameter is measured. ``centroid_world_mm``: area centroid of the
    foramen (differs from the centre when the canal is asymmetric, e.g. narrowed from behind).
    ``enclosed``: bone surrounds the foramen in that plane; False when it had to be closed
    (a gap of up to ``closing_mm`` bridged), which makes the area less certain.
    ``area_mm2``: the foramen's area in that plane; ``interpedicular_mm``: its widest
    left-right chord; ``ap_diameter_mm``: its chord along ap through the centre (None when
    the chord does not close).
    """

    centre_world_mm: Vec3
    centroid_world_mm: Vec3
    plane_normal_world: Vec3
    enclosed: bool = True
    closing_mm: float = 0.0
    area_mm2: float
    interpedicular_mm: float
    ap_diameter_mm: float | None = None


class Pedicle(Quality):
    """Pedicle isthmus (narrowest cross-section of the bony bridge between body and arch).

    ``axis_world`` runs posterior -> anterior through ``isthmus_centre_world_mm``;
    ``width_direction_world`` is perpendicular to it in the vertebra's axial plane, pointing
    laterally; ``height_direction_world`` = axis x width, pointing cranially. ``width_mm`` and
    ``height_mm`` are outer-cortex diameters along those directions through the centre.
    ``transverse_angle_deg`` (TPA): angle in the vertebra's axial plane between the axis and
    the sagittal midline, positive = convergent (medial going anterior).
    ``sagittal_angle_deg``: angle between the axis and the vertebra's axial plane, positive =
    the anterior end is caudal. ``chord_length_mm``: along the axis from where it enters the
    posterior cortex (``entry_world_mm``) to where it leaves the anterior cortex of the body
    (``exit_world_mm``). ``isthmus_area_mm2``: area of the cross-section perpendicular to the
    axis at the isthmus.
    """

    side: Literal["left", "right"]
    isthmus_centre_world_mm: Vec3
    axis_world: Vec3
    width_direction_world: Vec3
    height_direction_world: Vec3
    width_mm: float
    height_mm: float
    isthmus_area_mm2: float
    transverse_angle_deg: float
    sagittal_angle_deg: float
    chord_length_mm: float
    entry_world_mm: Vec3
    exit_world_mm: Vec3
    edges: Literal["ct", "mask"] = "mask"


class Point(Quality):
    """One landmark point (spinous process tip, transverse process tip)."""

    position_world_mm: Vec3


class Facet(Quality):
    """A facet (zygapophyseal) joint with a neighbouring vertebra: ``centre_world_mm`` is the
    centroid of the joint space between the two articular processes; ``normal_world`` the
    joint plane's normal, from this vertebra's process towards the neighbour's;
    ``gap_mm`` the mean joint-space width."""

    kind: Literal["superior", "inferior"]
    side: Literal["left", "right"]
    neighbour_label_id: int
    centre_world_mm: Vec3
    normal_world: Vec3
    gap_mm: float
    contact_area_mm2: float


class VertebraLandmarks(Quality):
    """Landmarks of one vertebra; any part that could not be found is None (or missing from
    its dict) and the reason is in ``flags``/``reason``."""

    label_id: int
    name: str | None = None
    voxel_count: int
    volume_mm3: float
    fully_in_view: bool
    cut_sides: list[str] = Field(default_factory=list)  # "inferior", "left", ... (world sides)
    frame: VertebraFrame
    body_centroid_world_mm: Vec3
    superior_endplate: Endplate | None = None
    inferior_endplate: Endplate | None = None
    canal: Canal | None = None
    pedicles: dict[str, Pedicle] = Field(default_factory=dict)
    spinous_tip: Point | None = None
    transverse_process_tips: dict[str, Point] = Field(default_factory=dict)
    facets: dict[str, Facet] = Field(default_factory=dict)  # "superior_left", "inferior_right"...


# ----------------------------------------------------------------------------- findings
class Flag(_Model):
    """A radiological finding or a doubt, with the rule that raised it.

    ``value`` and ``threshold`` are in ``unit``; ``source`` is the tag of
    docs/clinical-reference.md the threshold comes from (empty for quality flags).
    """

    code: str  # e.g. "canal_stenosis_absolute"
    level: str  # "L4", or a disc "L4-L5", or "spine"
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    source: str = ""
    severity: Literal["info", "mild", "moderate", "severe"] = "moderate"
    message: str


class LevelAlternative(_Model):
    name: str
    confidence: float = Field(ge=0.0, le=1.0)


class LevelLabel(_Model):
    """How sure the level name is (filled by the level labelling; 1.0 and no evidence when the
    name came from an imported label map and was not checked)."""

    confidence: float = Field(1.0, ge=0.0, le=1.0)
    evidence: list[str] = Field(default_factory=list)
    ambiguous: bool = False
    alternatives: list[LevelAlternative] = Field(default_factory=list)


class VertebraMeasurements(_Model):
    """Measurements of one vertebra (None = not measurable; the reason is in ``notes``)."""

    canal_ap_diameter_mm: float | None = None
    canal_area_mm2: float | None = None
    interpedicular_distance_mm: float | None = None
    dural_sac_area_mm2: float | None = None
    lateral_recess_depth_mm: dict[str, float | None] = Field(default_factory=dict)
    pedicle_width_mm: dict[str, float] = Field(default_factory=dict)
    pedicle_height_mm: dict[str, float] = Field(default_factory=dict)
    body_height_anterior_mm: float | None = None
    body_height_middle_mm: float | None = None
    body_height_posterior_mm: float | None = None
    notes: list[str] = Field(default_factory=list)


class Vertebra(_Model):
    name: str
    label_id: int
    label: LevelLabel = Field(default_factory=LevelLabel)
    landmarks: VertebraLandmarks | None = None
    measurements: VertebraMeasurements = Field(default_factory=VertebraMeasurements)
    flags: list[Flag] = Field(default_factory=list)


class Disc(Quality):
    """One intervertebral disc (motion segment) between two vertebrae in view.

    Heights run along the lower vertebra's superior endplate normal, from that endplate to
    the upper vertebra's inferior endplate plane, on the lower endplate's mid-sagittal line:
    anterior and posterior points ``edge_inset_mm`` inside the endplate's AP extent, middle at
    its centre. ``disc_height_index``: mean of the three / mean height of the two adjacent
    bodies. ``slip_mm``: translation of the upper vertebra over the lower along the lower's
    anterior direction (anterolisthesis > 0), taken from the endplate centres after removing
    the part along the disc's bisecting normal; ``slip_percent`` of the lower superior
    endplate's AP length. ``segmental_lordosis_deg``: angle between the two endplates in the
    lower endplate's sagittal plane, lordotic (open anteriorly) > 0;
    ``coronal_angle_deg`` likewise in its coronal plane, positive = open to the right (the
    upper vertebra tilted towards the patient's left).
    """

    name: str
    upper: str
    lower: str
    label_id: int
    anterior_height_mm: float | None = None
    middle_height_mm: float | None = None
    posterior_height_mm: float | None = None
    edge_inset_mm: float = 3.0
    disc_height_index: float | None = None
    slip_mm: float | None = None
    slip_percent: float | None = None
    meyerding_grade: int | None = None
    segmental_lordosis_deg: float | None = None
    coronal_angle_deg: float | None = None
    foraminal_height_mm: dict[str, float | None] = Field(default_factory=dict)
    foraminal_width_mm: dict[str, float | None] = Field(default_factory=dict)
    findings: list[Flag] = Field(default_factory=list)


class SpineMeasures(_Model):
    """Spine-wide angles, where the levels they need are in view (None otherwise)."""

    lumbar_lordosis_deg: float | None = None  # L1 superior to S1 superior endplate
    lumbar_lordosis_levels: tuple[str, str] | None = None
    cobb_angle_deg: float | None = None  # coronal: between the most laterally inclined superior endplates
    cobb_upper: str | None = None
    cobb_lower: str | None = None
    notes: list[str] = Field(default_factory=list)


class Backend(_Model):
    """Which segmentation backend made the label map, and how."""

    name: str  # "builtin", "labelmap", "totalsegmentator"
    parameters: dict[str, Any] = Field(default_factory=dict)
    version: str | None = None


class Geometry(_Model):
    """The CT grid the label map and every position refer to."""

    shape: tuple[int, int, int]
    spacing_mm: Vec3
    T_world_from_index: list[list[float]]
    axcodes: str


class SpineModel(_Model):
    """The anatomy of one CT (``spine.json``)."""

    schema_: Literal["spinenav.spine/1"] = Field(SCHEMA, alias="schema")
    spinenav_version: str
    label_scheme: Literal["totalsegmentator-v2"] = "totalsegmentator-v2"
    geometry: Geometry
    backend: Backend
    vertebrae: list[Vertebra] = Field(default_factory=list)
    discs: list[Disc] = Field(default_factory=list)
    spine: SpineMeasures = Field(default_factory=SpineMeasures)
    flags: list[Flag] = Field(default_factory=list)  # every finding, all levels
    warnings: list[str] = Field(default_factory=list)
    definitions: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    @field_validator("vertebrae")
    @classmethod
    def _unique_names(cls, v: list[Vertebra]) -> list[Vertebra]:
        ids = [x.label_id for x in v]
        if len(set(ids)) != len(ids):
            raise ValueError(f"vertebra label ids repeat: {sorted(ids)}")
        return v

    def vertebra(self, name: str) -> Vertebra:
        for v in self.vertebrae:
            if v.name == name:
                return v
        raise KeyError(f"no vertebra {name!r} (have {[v.name for v in self.vertebrae]})")

    def require_levels(self, names: list[str], error: type[SpinenavError]) -> None:
        """Raise `error` naming the levels of `names` not in this model and those that are."""
        have = [v.name for v in self.vertebrae]
        missing = [n for n in names if n not in have]
        if missing:
            raise error(f"level {', '.join(missing)} is not in view (the CT shows {', '.join(have) or 'no vertebra'})")

    def landmarks_of(self, name: str, error: type[SpinenavError], purpose: str) -> VertebraLandmarks:
        """The landmarks of vertebra `name`, or `error` saying it is not in view or had none
        found (`purpose`: what cannot be done without them, e.g. "no screw can be planned")."""
        self.require_levels([name], error)
        lm = self.vertebra(name).landmarks
        if lm is None:
            raise error(f"{name}: no landmarks were found on this vertebra, so {purpose}")
        return lm

    def disc(self, name: str) -> Disc:
        for d in self.discs:
            if d.name == name:
                return d
        raise KeyError(f"no disc {name!r} (have {[d.name for d in self.discs]})")

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def load_spine_model(path: str | os.PathLike[str]) -> SpineModel:
    """Read a ``spine.json`` written by :func:`spinenav.anatomy.export.write_spine_json`.

    Raises
    ------
    SpineModelSchemaError
        Missing or unreadable file, another schema version, or fields that do not match.
    """
    return load_json_model(path, SpineModel, schema=SCHEMA, error=SpineModelSchemaError,
                           remedy="re-run 'spinenav segment' with this version of spinenav")
