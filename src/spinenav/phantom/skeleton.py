"""The whole bony model: vertebrae T10-L5, the sacrum (S1 + the rest), iliac bones and ribs.

Every bone is a solid in world (LPS) mm; bones of different labels keep at least
``BONE_GAP_MM`` of soft tissue between them (facet joints, costovertebral joints, the
sacro-iliac joint), by construction (:class:`~spinenav.phantom.shapes.Avoid`), so a voxel
belongs to at most one bone. Sacrum and ilium dimensions are assumed (clinical-reference.md
gives none) and sized to the adult pelvis: iliac crest tops at the L4-L5 disc level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from spinenav.phantom.anatomy import (HIP_LABELS, RIB_LABELS, RIB_LEVELS, SACRUM_LABEL, VERTEBRA_NAMES)
from spinenav.phantom.chain import SpineChain, T_vertebra_from_inferior
from spinenav.phantom.params import PhantomParams
from spinenav.phantom.shapes import (Avoid, Custom, Difference, Ellipsoid, EllipticCylinder, Intersection,
                                     Segment, Solid, SweptEllipse, Union, VertebralBody, apply_point,
                                     ellipse_sdf, keep_side, rot_x, trans)
from spinenav.phantom.vertebra import (BONE_GAP_MM, SIDES, VertebraModel, add_inferior_processes,
                                       build_vertebra, finish_vertebrae)

#: Sacral segments below S1 at scale 1 (assumed): width, depth, height, canal half-width,
#: canal half-AP (0: the open sacral hiatus), mm.
SACRAL_SEGMENTS: tuple[tuple[str, float, float, float, float, float], ...] = (
    ("S2", 40.0, 28.0, 22.0, 12.0, 4.5),
    ("S3", 32.0, 22.0, 17.0, 9.0, 3.5),
    ("S4", 24.0, 17.0, 14.0, 6.5, 3.0),
    ("S5", 17.0, 13.0, 11.0, 0.0, 0.0),
)
SACRAL_KYPHOSIS_DEG = 12.0  # per segment, the sacrum curving forward (assumed)
SI_JOINT_GAP_MM = 2.5  # sacro-iliac joint space (assumed)


@dataclass
class RibModel:
    level: str
    side: str
    label: int
    solid: Solid
    centreline_world_mm: NDArray[np.float64]  # (N, 3) head to tip
    radii_mm: NDArray[np.float64]


@dataclass
class Skeleton:
    """All bones, whether drawn or not (neighbours and soft tissue need every frame)."""

    chain: SpineChain
    vertebrae: dict[str, VertebraModel]
    drawn: tuple[str, ...]
    sacrum_rest: Solid | None = None
    sacrum_fused: Solid | None = None  # S1 and the rest unclipped: one bone for the intensities
    sacrum_segments: list[tuple[str, NDArray[np.float64], float]] = field(default_factory=list)
    sacral_canals: list[tuple[NDArray[np.float64], float, float, float, float]] = field(default_factory=list)
    ilium: dict[str, Solid] = field(default_factory=dict)
    iliac_crest_world_mm: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    iliac_crest_radius_mm: float = 0.0
    ribs: list[RibModel] = field(default_factory=list)


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- sacrum
def _add_alae(s1: VertebraModel, scale: float) -> dict[str, Ellipsoid]:
    """S1's alae: wings lateral to the body, kept in front of the pedicle isthmus."""
    d = s1.dims
    alae = {}
    for side, s in SIDES.items():
        T = s1.T_world_from_vertebra @ trans(s * (d.body_width_mm / 2 + 10.0 * scale), -5.0 * scale, -4.0 * scale)
        ala = Ellipsoid(T, (23.0 * scale, 14.0 * scale, 15.0 * scale))
        alae[side] = ala
        # S1's share: above the S1/S2 plane, in front of the isthmus plane
        T_inf = s1.T_world_from_vertebra @ T_vertebra_from_inferior(d)
        s1.parts[f"ala_{side}"] = Intersection([
            ala, keep_side(T_inf[:3, 3], T_inf[:3, 2]), s1.isthmus_clip(side, posterior=False, scale=scale)])
    return alae


def _sacrum_rest(sk: Skeleton, alae: dict[str, Ellipsoid], scale: float) -> Solid:
    s1 = sk.vertebrae["S1"]
    T_prev_bottom = s1.T_world_from_vertebra @ T_vertebra_from_inferior(s1.dims)
    prev_wd = (s1.dims.body_width_mm / 2, s1.dims.body_depth_mm / 2)
    prev_canal = (0.0, s1.canal_centre_local_mm[1], s1.canal_a_mm, s1.canal_b_nominal_mm)
    parts: list[Solid] = []
    canals: list[Solid] = []
    for name, W, D, H, A, B in SACRAL_SEGMENTS:
        W, D, H, A, B = (x * scale for x in (W, D, H, A, B))
        T_top = T_prev_bottom @ rot_x(-math.radians(SACRAL_KYPHOSIS_DEG))
        T_c = T_top @ trans(0, 0, -H / 2)
        parts.append(VertebralBody(T_c, W / 2, D / 2, H, waist=0.03))
        # fused disc: fills the wedge between the two segments, reaching 3 mm into both so the
        # fused bone has no internal surface (and so no cortex line across it)
        ov = 3.0 * scale
        parts.append(SweptEllipse(T_top @ trans(0, 0, -ov), T_prev_bottom @ trans(0, 0, ov),
                                  (0, 0, W / 2, D / 2), (0, 0, *prev_wd)))
        sk.sacrum_segments.append((name, T_c, H))
        y_c = D / 2 - 1.5 * scale + max(B, 2.0 * scale)
        if A > 0:
            canals.append(EllipticCylinder(T_c, A, B, -H / 2 - 3 * scale, H / 2 + 3 * scale, (0.0, y_c)))
            # the canal through the fused disc above, blending from the segment above
            canals.append(SweptEllipse(T_top, T_prev_bottom, (0.0, y_c, A, B), prev_canal))
            prev_canal = (0.0, y_c, A, B)
            sk.sacral_canals.append((T_c, A, B, y_c, H))
            plate = EllipticCylinder(T_c, A + 8.0 * scale, B + 5.0 * scale, -H / 2 - 1.0 * scale,
                                     H / 2 + 1.0 * scale, (0.0, y_c))
            parts.append(Intersection([plate, keep_side(apply_point(T_c, (0, D / 2 - 3 * scale, 0)),
                                                        T_c[:3, 1])]))
            # median sacral crest
            parts.append(Ellipsoid(T_c @ trans(0, y_c + B + 5.0 * scale, 0),
                                   (3.0 * scale, 4.0 * scale, H / 2)))
        if name in ("S2", "S3"):
            big = name == "S2"
            for s in SIDES.values():
                T_m = T_c @ trans(s * (W / 2 + (9.0 if big else 5.0) * scale), 0.0, (2.0 if big else 0.0) * scale)
                radii = (17.0 * scale, D / 2 + 1.0 * scale, 14.0 * scale) if big else \
                    (10.0 * scale, D / 2, H / 2 + 2.0 * scale)
                parts.append(Ellipsoid(T_m, radii))
        T_prev_bottom = T_c @ trans(0, 0, -H / 2)
        prev_wd = (W / 2, D / 2)
    # the alae below the S1/S2 plane
    T_inf = s1.T_world_from_vertebra @ T_vertebra_from_inferior(s1.dims)
    for ala in alae.values():
        parts.append(Intersection([ala, keep_side(T_inf[:3, 3], -T_inf[:3, 2], offset_mm=1e-3)]))
    body = Difference(Union(parts), Union(canals))
    # S1 and the rest as one bone (for the intensities): S1's canal still carved near the joint
    near_joint = keep_side(apply_point(T_inf, (0, 0, -4.0 * scale)), T_inf[:3, 2])
    sk.sacrum_fused = Difference(Union([body, s1.solid]), Intersection([s1.canal, near_joint]))
    return Intersection([body, keep_side(T_inf[:3, 3], -T_inf[:3, 2], offset_mm=1e-3), Avoid(s1.solid, 0.0)])


# ----------------------------------------------------------------------------- ilium
def _iliac_wing(side: str, origin: NDArray[np.float64], z_peak: float, scale: float):
    """The iliac wing as a bowl-shaped shell of an elliptic cone (world axes, centred near the
    S1 body); returns the solid and the crest centreline (N, 3)."""
    s = SIDES[side]
    cx, cy = 40.0 * scale, origin[1] - 30.0 * scale
    rx0, ry0 = 95.0 * scale, 70.0 * scale
    t_half = 4.0 * scale
    psi_p, psi_a, psi_peak = math.radians(-90.0), math.radians(40.0), math.radians(-15.0)
    rim_r = 5.5 * scale
    k = 40.0 * scale / (psi_p - psi_peak) ** 2
    z_bot = origin[2] - 75.0 * scale
    shrink = 0.0035 / scale

    def radii(z):
        f = 1.0 - shrink * (z_peak - z)
        return rx0 * f, ry0 * f

    def z_top(psi):
        return z_peak - rim_r - k * (psi - psi_peak) ** 2

    def sdf(x, y, z):
        u = s * x - cx
        v = cy - y
        rx, ry = radii(z)
        psi = np.arctan2(v / ry, u / rx)
        d_rad = np.abs(ellipse_sdf(u, v, rx, ry)) - t_half
        r_mean = 0.5 * (rx + ry)
        d_ang = np.maximum((psi_p - psi) * r_mean, (psi - psi_a) * r_mean)
        d_z = np.maximum(z - z_top(np.clip(psi, psi_p, psi_a)), z_bot - z)
        return np.maximum(np.maximum(d_rad, d_ang), d_z)

    lo = np.array([min(s * (cx - rx0), s * (cx + rx0)) - 10, cy - ry0 - 10, z_bot - 5])
    hi = np.array([max(s * (cx - rx0), s * (cx + rx0)) + 10, cy + ry0 + 10, z_peak + 1])
    if s > 0:
        lo[0] = max(lo[0], 0.0)
    else:
        hi[0] = min(hi[0], 0.0)
    wing = Custom(sdf, (lo, hi))
    psis = np.linspace(psi_p, psi_a, 28)
    crest = []
    for psi in psis:
        z = z_top(psi)
        rx, ry = radii(z)
        crest.append((s * (cx + rx * math.cos(psi)), cy - ry * math.sin(psi), z))
    return wing, np.array(crest), rim_r


def _ilium(sk: Skeleton, side: str, sacrum_all: Solid, scale: float) -> Solid:
    s = SIDES[side]
    s1 = sk.vertebrae["S1"]
    origin = s1.T_world_from_vertebra[:3, 3]
    l5, l4 = sk.chain.T_world_from_superior("L5"), sk.chain.T_world_from_inferior("L4")
    z_peak = 0.5 * (l5[2, 3] + l4[2, 3])  # crest tops at the L4-L5 disc
    wing, crest, rim_r = _iliac_wing(side, origin, z_peak, scale)
    sk.iliac_crest_world_mm[side] = crest
    sk.iliac_crest_radius_mm = rim_r
    rim = [Segment(a, b, rim_r, rim_r) for a, b in zip(crest[:-1], crest[1:])]
    # posterior ilium (PSIS) and the auricular part facing the sacral ala
    ala_x = s1.dims.body_width_mm / 2 + 33.0 * scale
    psis = Ellipsoid(trans(s * 48.0 * scale, origin[1] + 30.0 * scale, origin[2] - 8.0 * scale),
                     (14.0 * scale, 17.0 * scale, 30.0 * scale))
    auricular = Ellipsoid(trans(s * (ala_x + 11.0 * scale), origin[1] + 6.0 * scale, origin[2] - 18.0 * scale),
                          (13.0 * scale, 24.0 * scale, 30.0 * scale))
    gap = SI_JOINT_GAP_MM * scale
    return Intersection([Union([wing, *rim, psis, auricular]), Avoid(sacrum_all, gap),
                         Avoid(sk.vertebrae["L5"].solid, BONE_GAP_MM * scale)])


# ----------------------------------------------------------------------------- ribs
def _rib(sk: Skeleton, level: str, side: str, scale: float) -> RibModel:
    v = sk.vertebrae[level]
    s = SIDES[side]
    d = v.dims
    bd = d.body_depth_mm / 2
    z_c = v.canal_centre_local_mm[2]
    x_edge = d.body_width_mm / 2 * math.sqrt(1 - 0.45 ** 2)
    head = np.array([s * (x_edge + 5.0 * scale), 0.45 * bd, z_c + 2.0 * scale])
    tip = v.transverse_tips_local_mm[side]
    if level == "T10":  # costotransverse joint: the tubercle lies in front of the TP tip
        tub = tip + np.array([-s * 2.0 * scale, -9.0 * scale, -2.0 * scale])
    else:  # floating ribs pass in front of the transverse process
        tub = np.array([s * 0.85 * d.tp_reach_mm, tip[1] - 11.0 * scale, z_c - 2.0 * scale])
    rx, ry = 128.0 * scale, 108.0 * scale
    psi0 = math.asin(min(0.95, (abs(tub[0]) + 12.0 * scale) / rx))
    y_rc = tub[1] + 4.0 * scale - ry * math.cos(psi0)
    psi_end = math.radians({"T10": 150.0, "T11": 118.0, "T12": 75.0}[level])
    drop = {"T10": 0.45, "T11": 0.5, "T12": 0.55}[level] * scale  # mm per degree
    psis = np.arange(psi0, psi_end + 1e-9, math.radians(8.0))
    arc = [np.array([s * rx * math.sin(p), y_rc + ry * math.cos(p),
                     tub[2] - 4.0 * scale - drop * math.degrees(p - psi0)]) for p in psis]
    pts_local = np.array([head, tub, *arc])
    radii = np.concatenate([[5.5, 4.5], np.linspace(4.3, 3.5, len(arc))]) * scale
    pts = v.world(pts_local)
    segs = [Segment(pts[i], pts[i + 1], radii[i], radii[i + 1]) for i in range(len(pts) - 1)]
    gap = BONE_GAP_MM * scale
    i = VERTEBRA_NAMES.index(level)
    neighbours = [sk.vertebrae[VERTEBRA_NAMES[j]].solid for j in (i - 1, i, i + 1)
                  if 0 <= j < len(VERTEBRA_NAMES) - 1 and VERTEBRA_NAMES[j] in sk.vertebrae]
    near = Intersection([Union(segs[:3]), *[Avoid(n, gap) for n in neighbours]])
    solid = Union([near, *segs[3:]])
    return RibModel(level, side, RIB_LABELS[(level, side)], solid, pts, radii)


# ----------------------------------------------------------------------------- assembly
def build_skeleton(chain: SpineChain, params: PhantomParams) -> Skeleton:
    """Every bone of the phantom as world solids (the whole chain is modelled; `drawn` says
    which bones the image shows)."""
    scale = params.scale
    models = {n: build_vertebra(n, chain, stenosis=params.stenosis.get(n, 0.0), scale=scale)
              for n in VERTEBRA_NAMES}
    for upper, lower in zip(VERTEBRA_NAMES[:-1], VERTEBRA_NAMES[1:]):
        add_inferior_processes(models[upper], models[lower], chain, scale=scale)
    sk = Skeleton(chain, models, params.drawn_levels)
    alae = _add_alae(models["S1"], scale)
    finish_vertebrae(models, list(VERTEBRA_NAMES), scale=scale)
    sk.sacrum_rest = _sacrum_rest(sk, alae, scale)
    if "S1" in sk.drawn:
        sacrum_all = Union([models["S1"].solid, sk.sacrum_rest])
        for side in SIDES:
            sk.ilium[side] = _ilium(sk, side, sacrum_all, scale)
    for level in RIB_LEVELS:
        if level in sk.drawn:
            for side in SIDES:
                sk.ribs.append(_rib(sk, level, side, scale))
    return sk


def bone_paint_list(sk: Skeleton) -> list[tuple[str, Solid, int]]:
    """(name, solid, label) of every drawn bone, in painting order."""
    out: list[tuple[str, Solid, int]] = []
    if "S1" in sk.drawn and sk.sacrum_rest is not None:
        out.append(("sacrum", sk.sacrum_rest, SACRUM_LABEL))
        for side, solid in sk.ilium.items():
            out.append((f"hip_{side}", solid, HIP_LABELS[side]))
    for rib in sk.ribs:
        out.append((f"rib_{rib.side}_{rib.level}", rib.solid, rib.label))
    for name in sk.drawn:
        v = sk.vertebrae[name]
        out.append((f"vertebrae_{name}", v.solid, v.label))
    return out
