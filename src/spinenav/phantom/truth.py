"""Ground truth of a phantom: every landmark and measurement, computed on the analytic model.

Nothing here is measured on the voxel image: pedicle widths are runs of the exact inside test
of the vertebra's union of solids, screw corridors come from radial searches of that inside
test, canal and disc figures from the design geometry (checked against runs of the inside test
in the tests). The tests in ``tests/phantom`` then check each figure against the image.

All positions are world LPS mm, directions unit vectors in world, angles degrees (this is the
file schema of ``truth.json``; inside the code angles are radians).

Definitions
-----------
Pedicle width/height
    Outer-cortex run of bone through the isthmus centre along the width direction
    (perpendicular to the axis, in the vertebra's axial plane) and the height direction
    (axis x width), in the plane perpendicular to the pedicle axis.
Transverse angle
    Angle in the vertebra's axial plane between the pedicle axis and the sagittal midline;
    positive = convergent (medial going anterior).
Sagittal angle
    Angle between the pedicle axis and the vertebra's axial plane; positive = the anterior
    end is caudal.
Chord
    Along the pedicle axis, from where it leaves the posterior bone surface (entry) to where it
    leaves the anterior cortex.
Safe screw corridor
    A screw of diameter D on the pedicle axis, starting at the chord's entry point. Along the
    axis, rho(s) is the radius of the largest axis-centred disc (perpendicular to the axis)
    lying wholly inside the vertebra (first exit of each of 32 radial rays, every 0.4 mm).
    The screw is safe when rho(s) >= D/2 + margin over one contiguous stretch [seat, tip] that
    passes through the isthmus and reaches the vertebral body's frontal mid-plane, and
    tip + margin (along the axis) is still bone. ``max_diameter_mm`` is the largest such D,
    rounded down to 0.02 mm;
    its tip is the end of that stretch (at most ``margin`` short of the anterior cortex), and
    ``max_length_mm`` = |tip - entry|. Between the entry point and the seat
    (``entry_exempt_mm`` along the axis) the screw is crossing the posterior bone surface and
    is exempt from the margin; from the seat to the tip every point of the screw is at least
    ``margin_mm`` inside the bone.
Disc heights
    Measured along the normal of the lower vertebra's superior endplate, from that endplate to
    the upper vertebra's inferior endplate plane, at the mid-sagittal line: anterior and
    posterior points 3 mm inside the endplate's anterior and posterior edges, middle at its
    centre.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from spinenav.documents import read_json_document
from spinenav.errors import SpinenavError
from spinenav.phantom.anatomy import (DISC_LABEL_OFFSET, DISC_NAMES, RIB_LEVELS, TISSUE_HU, VERTEBRA_NAMES,
                                      disc_label, label_names)
from spinenav.phantom.chain import disc_height_along_normal_mm
from spinenav.phantom.params import PhantomParams
from spinenav.phantom.shapes import Grid, Solid, apply_dir, apply_point
from spinenav.phantom.skeleton import Skeleton
from spinenav.phantom.vertebra import SIDES, VertebraModel, body_only

SCHEMA = "spinenav.phantom-truth/1"
MARGIN_MM = 1.0
DISC_EDGE_INSET_MM = 3.0

Vec3 = tuple[float, float, float]


class TruthSchemaError(SpinenavError):
    """A truth file is missing, unreadable or of another schema version."""


def _v(a) -> Vec3:
    a = np.asarray(a, float)
    return (float(a[0]), float(a[1]), float(a[2]))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EndplateTruth(_Model):
    centre_world_mm: Vec3
    normal_world: Vec3  # outward: cranial for a superior endplate, caudal for an inferior one


class CanalTruth(_Model):
    """Bony canal in the vertebra's axial plane through the pedicle isthmus centres. The
    centre lies on the canal's widest line (where the interpedicular distance is measured,
    along lr); the AP diameter is measured through it along ap."""

    centre_world_mm: Vec3
    plane_normal_world: Vec3
    area_mm2: float
    ap_diameter_mm: float
    interpedicular_mm: float
    stenosis_fraction: float


class ScrewCorridorTruth(_Model):
    entry_world_mm: Vec3
    tip_world_mm: Vec3
    axis_world: Vec3
    max_diameter_mm: float
    max_length_mm: float
    margin_mm: float
    entry_exempt_mm: float
    bottleneck_world_mm: Vec3


class PedicleTruth(_Model):
    side: Literal["left", "right"]
    isthmus_centre_world_mm: Vec3
    axis_world: Vec3
    width_direction_world: Vec3
    height_direction_world: Vec3
    width_mm: float
    height_mm: float
    transverse_angle_deg: float
    sagittal_angle_deg: float
    chord_length_mm: float
    chord_entry_world_mm: Vec3
    chord_exit_world_mm: Vec3
    corridor: ScrewCorridorTruth


class FacetTruth(_Model):
    centre_world_mm: Vec3  # mid-joint (between the two articular surfaces)
    normal_world: Vec3  # from the superior articular process towards the inferior one


class VertebraTruth(_Model):
    name: str
    label_id: int
    in_field_of_view: bool
    centre_world_mm: Vec3  # centroid of the body (minus the canal)
    T_world_from_vertebra: list[list[float]]
    axis_lr_world: Vec3  # towards the patient's left
    axis_ap_world: Vec3  # posterior
    axis_cc_world: Vec3  # cranial
    body_width_mm: float
    body_depth_mm: float
    body_height_mm: float
    superior_endplate: EndplateTruth
    inferior_endplate: EndplateTruth
    canal: CanalTruth
    pedicles: dict[str, PedicleTruth]
    spinous_tip_world_mm: Vec3
    transverse_process_tips_world_mm: dict[str, Vec3]
    facets: dict[str, FacetTruth]  # superior_left, superior_right, inferior_left, inferior_right
    has_ribs: bool
    coronal_tilt_deg: float


class DiscTruth(_Model):
    name: str
    label_id: int
    upper: str
    lower: str
    centre_world_mm: Vec3
    anterior_height_mm: float
    middle_height_mm: float
    posterior_height_mm: float
    height_loss_fraction: float
    sagittal_angle_deg: float  # lordotic (anterior taller) > 0
    coronal_angle_deg: float
    slip_mm: float


class SlipTruth(_Model):
    level: str
    over: str
    slip_mm: float
    slip_percent: float  # of the lower vertebra's superior endplate AP length
    meyerding_grade: int


class CurveTruth(_Model):
    lordosis_l1_s1_deg: float
    segmental_lordosis_deg: dict[str, float]
    thoracolumbar_kyphosis_deg: float
    sacral_slope_deg: float
    scoliosis_cobb_deg: float


class GridTruth(_Model):
    shape: tuple[int, int, int]
    spacing_mm: Vec3
    T_world_from_index: list[list[float]]


class PhantomTruth(_Model):
    """Everything known about a phantom (see the module docstring for definitions)."""

    schema_: Literal["spinenav.phantom-truth/1"] = SCHEMA
    seed: int
    params: PhantomParams
    grid: GridTruth
    levels: list[str]
    label_ids: dict[str, int]
    disc_label_offset: int = DISC_LABEL_OFFSET
    tissue_hu: dict[str, float]
    vertebrae: list[VertebraTruth]
    discs: list[DiscTruth]
    slips: list[SlipTruth]
    curve: CurveTruth
    rib_levels: list[str]
    iliac_crest_top_z_world_mm: dict[str, float]
    iliac_crest_top_level: str | None
    notes: list[str]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def vertebra(self, name: str) -> VertebraTruth:
        for v in self.vertebrae:
            if v.name == name:
                return v
        raise KeyError(f"no vertebra {name!r} in this phantom (levels {self.levels})")

    def disc(self, name: str) -> DiscTruth:
        for d in self.discs:
            if d.name == name:
                return d
        raise KeyError(f"no disc {name!r} in this phantom")

    def to_json_dict(self) -> dict:
        d = self.model_dump(mode="json")
        d = {"schema": d.pop("schema_"), **d}
        return d

    @classmethod
    def from_json_dict(cls, d: dict) -> PhantomTruth:
        d = dict(d)
        d["schema_"] = d.pop("schema")
        return cls.model_validate(d)


NOTES = [
    "Positions are LPS world mm (x patient left, y posterior, z head); angles degrees.",
    "Label 79 ('spinal_cord') marks the whole dural sac (cord, roots and CSF).",
    f"Disc labels are {DISC_LABEL_OFFSET} + the id of the vertebra above (L4-L5 = 228): an "
    "extension, not a TotalSegmentator class.",
    "Pedicle width/height: outer cortex through the isthmus centre, perpendicular to the axis.",
    "Corridor: between entry and seat (entry_exempt_mm) the screw crosses the posterior surface "
    "and is exempt from the margin; from seat to tip it stays >= margin_mm inside the bone.",
    "Disc heights: along the lower endplate normal at the mid-sagittal line, anterior and "
    f"posterior points {DISC_EDGE_INSET_MM} mm inside the endplate edges.",
    "Vertebra truth exists for every drawn level; in_field_of_view says whether the body "
    "centre is inside the scanned grid.",
]


# ----------------------------------------------------------------------------- analytic runs
def run_length_mm(solid: Solid, origin_world_mm, direction_world, *, max_mm: float = 80.0,
                  step_mm: float = 0.2) -> float:
    """Distance from `origin` (inside `solid`) along `direction` to the first point outside:
    samples every `step_mm`, then three rounds of 8-fold refinement (precision step / 512)."""
    o = np.asarray(origin_world_mm, float)
    d = np.asarray(direction_world, float)
    d = d / np.linalg.norm(d)
    t = np.arange(0.0, max_mm + step_mm, step_mm)
    inside = solid.contains(o + t[:, None] * d)
    if not inside[0]:
        raise ValueError(f"run_length_mm: origin {o} is not inside the solid")
    out = np.nonzero(~inside)[0]
    if len(out) == 0:
        return float(max_mm)
    lo, hi = t[out[0] - 1], t[out[0]]
    for _ in range(3):
        tt = np.linspace(lo, hi, 9)[1:]
        ins = solid.contains(o + tt[:, None] * d)
        k = int(np.argmin(ins)) if not ins.all() else len(tt) - 1
        lo, hi = (tt[k - 1] if k > 0 else lo), tt[k]
    return float(0.5 * (lo + hi))


def _radial_min_exit(solid: Solid, centres: NDArray, rays: NDArray, r_max: float, step: float) -> NDArray:
    """For each centre (S, 3): the smallest first-exit radius over the rays (P, 3), capped at
    r_max. Every ray is sampled every `step`; the rays whose exit bracket could hold the
    minimum are refined by three rounds of 8-fold bisection (precision step / 512)."""
    r = np.arange(step, r_max + step / 2, step)
    pts = centres[:, None, None, :] + r[None, None, :, None] * rays[None, :, None, :]
    inside = solid.contains(pts.reshape(-1, 3)).reshape(len(centres), len(rays), len(r))
    exits = ~inside.all(axis=2)
    first_out = np.argmin(inside, axis=2)
    lo = np.where(exits, np.where(first_out == 0, 0.0, r[np.maximum(first_out - 1, 0)]), r_max)
    hi = np.where(exits, r[first_out], r_max)
    # only rays whose bracket starts below the best upper bound at that depth can be the minimum
    todo = exits & (lo <= hi.min(axis=1, keepdims=True))
    idx = np.nonzero(todo)
    a, b = lo[idx], hi[idx]
    c_pts, c_rays = centres[idx[0]], rays[idx[1]]
    f = np.linspace(0.0, 1.0, 9)[1:]
    for _ in range(3):
        rr = a[:, None] + (b - a)[:, None] * f[None, :]
        q = c_pts[:, None, :] + rr[:, :, None] * c_rays[:, None, :]
        ins = solid.contains(q.reshape(-1, 3)).reshape(rr.shape)
        j = np.where(ins.all(axis=1), len(f) - 1, np.argmin(ins, axis=1))
        rows = np.arange(len(j))
        a, b = np.where(j == 0, a, rr[rows, np.maximum(j - 1, 0)]), rr[rows, j]
    lo[idx] = a
    return lo.min(axis=1)


def safe_corridor(solid: Solid, centre_world_mm, axis_world, *, s_body_mm: float, r_max_mm: float,
                  margin_mm: float = MARGIN_MM, ds_mm: float = 0.4, n_rays: int = 32) -> ScrewCorridorTruth:
    """The largest screw on the pedicle axis (see the module docstring)."""
    C = np.asarray(centre_world_mm, float)
    a = np.asarray(axis_world, float)
    a = a / np.linalg.norm(a)
    s_post = -run_length_mm(solid, C, -a, max_mm=120.0)
    s_ant = run_length_mm(solid, C, a, max_mm=120.0)
    ref = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    w = np.cross(a, ref)
    w /= np.linalg.norm(w)
    h = np.cross(a, w)
    phi = np.linspace(0.0, 2 * np.pi, n_rays, endpoint=False)
    rays = np.cos(phi)[:, None] * w + np.sin(phi)[:, None] * h
    s = np.concatenate([np.arange(0.0, s_post, -ds_mm)[::-1], np.arange(ds_mm, s_ant, ds_mm)])
    i0 = int(np.argmin(np.abs(s)))
    centres = C + s[:, None] * a
    rho = _radial_min_exit(solid, centres, rays, r_max_mm + margin_mm + 1.0, 0.5)
    i_body = int(np.searchsorted(s, s_body_mm))
    i_body = min(i_body, len(s) - 1)
    R = float(rho[i0:i_body + 1].min())  # largest disc radius from the isthmus to the body
    # round the radius down to 0.01 mm: the 32-ray search may miss a narrowing between rays by
    # a few microns, the rounding keeps every point of the screw at least `margin` inside
    r = max(math.floor((R - margin_mm) * 100.0) / 100.0, 0.0)
    ok = rho >= r + margin_mm
    i_seat = i0
    while i_seat > 0 and ok[i_seat - 1]:
        i_seat -= 1
    i_end = i0
    while i_end + 1 < len(s) and ok[i_end + 1]:
        i_end += 1
    s_tip = min(s[i_end], s_ant - margin_mm)
    i_min = i0 + int(np.argmin(rho[i0:i_body + 1]))
    return ScrewCorridorTruth(
        entry_world_mm=_v(C + s_post * a), tip_world_mm=_v(C + s_tip * a), axis_world=_v(a),
        max_diameter_mm=2.0 * r, max_length_mm=float(s_tip - s_post), margin_mm=margin_mm,
        entry_exempt_mm=float(s[i_seat] - s_post), bottleneck_world_mm=_v(C + s[i_min] * a))


# ----------------------------------------------------------------------------- per structure
def _centroid(solid: Solid, T: NDArray, half: NDArray, step: float = 1.0) -> NDArray:
    """Centroid of `solid` by the midpoint rule on cells of `step` mm in the frame T."""
    axes = [np.arange(-h + step / 2, h, step) for h in half]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    pts = apply_point(T, g)
    ins = solid.contains(pts)
    return pts[ins].mean(axis=0)


def _pedicle_truth(v: VertebraModel, side: str, scale: float) -> PedicleTruth:
    p = v.pedicles[side]
    C = v.world(p.centre_local_mm)
    a = v.world_dir(p.axis_local)
    w = v.world_dir(p.width_dir_local)
    h = v.world_dir(p.height_dir_local)
    solid = v.solid
    width = run_length_mm(solid, C, w, max_mm=30) + run_length_mm(solid, C, -w, max_mm=30)
    height = run_length_mm(solid, C, h, max_mm=30) + run_length_mm(solid, C, -h, max_mm=30)
    s_post = run_length_mm(solid, C, -a, max_mm=120)
    s_ant = run_length_mm(solid, C, a, max_mm=120)
    cth = p.axis_local[1]
    s_body = float(-p.centre_local_mm[1] / cth) if cth < 0 else s_ant / 2
    corridor = safe_corridor(solid, C, a, s_body_mm=s_body,
                             r_max_mm=max(p.width_mm, p.height_mm) / 2 + 1.0)
    return PedicleTruth(
        side=side, isthmus_centre_world_mm=_v(C), axis_world=_v(a), width_direction_world=_v(w),
        height_direction_world=_v(h), width_mm=width, height_mm=height,
        transverse_angle_deg=math.degrees(p.tpa_rad), sagittal_angle_deg=math.degrees(p.sagittal_rad),
        chord_length_mm=s_post + s_ant, chord_entry_world_mm=_v(C - s_post * a),
        chord_exit_world_mm=_v(C + s_ant * a), corridor=corridor)


def _vertebra_truth(sk: Skeleton, name: str, grid: Grid, scale: float) -> VertebraTruth:
    v = sk.vertebrae[name]
    T = v.T_world_from_vertebra
    d = v.dims
    sup = sk.chain.T_world_from_superior(name)
    inf = sk.chain.T_world_from_inferior(name)
    half = np.array([d.body_width_mm / 2, d.body_depth_mm / 2, d.body_height_mm / 2 + 3.0])
    centre = _centroid(body_only(v), T, half)
    A, Bp, Bn = v.canal_a_mm, v.canal_b_mm, v.canal_b_nominal_mm
    canal = CanalTruth(centre_world_mm=_v(v.world(v.canal_centre_local_mm)), plane_normal_world=_v(T[:3, 2]),
                       area_mm2=math.pi * A * (Bn + Bp) / 2, ap_diameter_mm=Bn + Bp, interpedicular_mm=2 * A,
                       stenosis_fraction=1.0 - (Bn + Bp) / (2 * Bn))
    facets = {}
    for side in SIDES:
        J, n = v.superior_facets_local[side]
        facets[f"superior_{side}"] = FacetTruth(centre_world_mm=_v(v.world(J)), normal_world=_v(v.world_dir(n)))
        if side in v.inferior_facets_local:
            J, n = v.inferior_facets_local[side]
            facets[f"inferior_{side}"] = FacetTruth(centre_world_mm=_v(v.world(J)),
                                                    normal_world=_v(v.world_dir(n)))
    lo = grid.affine[:3, 3]
    hi = lo + (np.array(grid.shape) - 1) * np.array(grid.spacing_mm)
    n_sup = sup[:3, 2]
    return VertebraTruth(
        name=name, label_id=v.label, in_field_of_view=bool(np.all((centre >= lo) & (centre <= hi))),
        centre_world_mm=_v(centre), T_world_from_vertebra=T.tolist(), axis_lr_world=_v(T[:3, 0]),
        axis_ap_world=_v(T[:3, 1]), axis_cc_world=_v(T[:3, 2]), body_width_mm=d.body_width_mm,
        body_depth_mm=d.body_depth_mm, body_height_mm=d.body_height_mm,
        superior_endplate=EndplateTruth(centre_world_mm=_v(sup[:3, 3]), normal_world=_v(n_sup)),
        inferior_endplate=EndplateTruth(centre_world_mm=_v(inf[:3, 3]), normal_world=_v(-inf[:3, 2])),
        canal=canal, pedicles={side: _pedicle_truth(v, side, scale) for side in SIDES},
        spinous_tip_world_mm=_v(v.world(v.spinous_tip_local_mm)),
        transverse_process_tips_world_mm={s: _v(v.world(t)) for s, t in v.transverse_tips_local_mm.items()},
        facets=facets, has_ribs=any(r.level == name for r in sk.ribs),
        coronal_tilt_deg=math.degrees(math.atan2(n_sup[0], n_sup[2])))


def _disc_truth(sk: Skeleton, name: str) -> DiscTruth:
    g = sk.chain.discs[name]
    low = sk.chain.dims[g.lower]
    T_lo = sk.chain.T_world_from_superior(g.lower)
    T_up = sk.chain.T_world_from_inferior(g.upper)
    yb = low.body_depth_mm / 2 - DISC_EDGE_INSET_MM
    heights = [disc_height_along_normal_mm(sk.chain, name, (0.0, y, 0.0)) for y in (-yb, 0.0, yb)]
    n_up = apply_dir(np.linalg.inv(T_lo), T_up[:3, 2])
    return DiscTruth(
        name=name, label_id=disc_label(name), upper=g.upper, lower=g.lower,
        centre_world_mm=_v(0.5 * (T_lo[:3, 3] + T_up[:3, 3])), anterior_height_mm=heights[0],
        middle_height_mm=heights[1], posterior_height_mm=heights[2], height_loss_fraction=g.height_loss,
        sagittal_angle_deg=math.degrees(math.atan2(n_up[1], n_up[2])),
        coronal_angle_deg=math.degrees(math.atan2(n_up[0], n_up[2])), slip_mm=g.slip_mm)


def _sagittal_between(T_lower_frame: NDArray, n_upper_world: NDArray) -> float:
    """Angle (deg) of an upper endplate normal relative to a lower frame's z, in the lower
    frame's sagittal plane; positive = tilted posteriorly (lordotic)."""
    n = apply_dir(np.linalg.inv(T_lower_frame), n_upper_world)
    return math.degrees(math.atan2(n[1], n[2]))


def meyerding_grade(slip_percent: float) -> int:
    """Meyerding grade from the slip as % of the lower endplate (clinical-reference 7.3)."""
    for grade, upper in ((1, 25.0), (2, 50.0), (3, 75.0), (4, 100.0)):
        if slip_percent <= upper:
            return grade
    return 5


def compute_truth(sk: Skeleton, params: PhantomParams, grid: Grid) -> PhantomTruth:
    """The truth of a generated phantom (see the module docstring)."""
    chain = sk.chain
    drawn = list(sk.drawn)
    vertebrae = [_vertebra_truth(sk, n, grid, params.scale) for n in drawn]
    disc_names = [f"{u}-{l}" for u, l in zip(drawn[:-1], drawn[1:])]
    discs = [_disc_truth(sk, n) for n in disc_names]
    slips = []
    for name in DISC_NAMES:
        g = chain.discs[name]
        if g.slip_mm > 0 and name in disc_names:
            pct = 100.0 * g.slip_mm / chain.dims[g.lower].body_depth_mm
            slips.append(SlipTruth(level=g.upper, over=g.lower, slip_mm=g.slip_mm, slip_percent=pct,
                                   meyerding_grade=meyerding_grade(pct)))
    T_s1 = chain.T_world_from_superior("S1")
    segmental = {n: _sagittal_between(chain.T_world_from_superior(chain.discs[n].lower),
                                      chain.T_world_from_inferior(chain.discs[n].upper)[:3, 2])
                 for n in DISC_NAMES}
    lordosis = _sagittal_between(T_s1, chain.T_world_from_superior("L1")[:3, 2])
    kyphosis = -_sagittal_between(chain.T_world_from_superior("L1"), chain.T_world_from_inferior("T10")[:3, 2])
    s1_n = T_s1[:3, 2]
    tilts = [v.coronal_tilt_deg for v in vertebrae]
    curve = CurveTruth(lordosis_l1_s1_deg=lordosis, segmental_lordosis_deg=segmental,
                       thoracolumbar_kyphosis_deg=kyphosis,
                       sacral_slope_deg=math.degrees(math.atan2(-s1_n[1], s1_n[2])),
                       scoliosis_cobb_deg=(max(tilts) - min(tilts)) if tilts else 0.0)
    crest_z = {side: float(c[:, 2].max() + sk.iliac_crest_radius_mm) for side, c in sk.iliac_crest_world_mm.items()}
    crest_level = _level_at_z(sk, max(crest_z.values())) if crest_z else None
    return PhantomTruth(
        seed=params.seed, params=params,
        grid=GridTruth(shape=grid.shape, spacing_mm=grid.spacing_mm, T_world_from_index=grid.affine.tolist()),
        levels=drawn, label_ids=label_names(), tissue_hu={t.name.lower(): v for t, v in TISSUE_HU.items()},
        vertebrae=vertebrae, discs=discs, slips=slips, curve=curve,
        rib_levels=[lv for lv in RIB_LEVELS if lv in drawn], iliac_crest_top_z_world_mm=crest_z,
        iliac_crest_top_level=crest_level, notes=NOTES)


def _level_at_z(sk: Skeleton, z: float) -> str:
    """Name of the vertebra or disc whose centre (world z) is nearest to `z`."""
    cands = [(abs(sk.vertebrae[n].T_world_from_vertebra[2, 3] - z), n) for n in VERTEBRA_NAMES]
    for name in DISC_NAMES:
        g = sk.chain.discs[name]
        zc = 0.5 * (sk.chain.T_world_from_superior(g.lower)[2, 3] + sk.chain.T_world_from_inferior(g.upper)[2, 3])
        cands.append((abs(zc - z), name))
    return min(cands)[1]


# ----------------------------------------------------------------------------- files
def load_truth(path: str | os.PathLike[str]) -> PhantomTruth:
    """Read a ``truth.json`` written by :func:`spinenav.phantom.write_phantom`.

    Raises
    ------
    TruthSchemaError
        Missing or unreadable file, or a schema other than ``spinenav.phantom-truth/1``.
    """
    p = Path(path)
    data = read_json_document(p, schema=SCHEMA, error=TruthSchemaError,
                              remedy="regenerate the phantom with this version of spinenav")
    try:
        return PhantomTruth.from_json_dict(data)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise TruthSchemaError(f"{p}: does not match {SCHEMA} ({' '.join(first[:3])})") from exc
