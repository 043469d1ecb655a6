"""One vertebra (T10-L5, and S1's vertebral part) as a union of solids, in its own frame.

Local frame (the vertebra frame of :mod:`spinenav.phantom.chain`): origin at the body centre,
x (lr) to the patient's left, y (ap) posterior, z (cc) cranial. Axial layout::

            spinous process (y large)
        lamina arch  (half ring behind the canal, y >= y_c)
     SAP/junction/TP  |  canal ellipse (0, y_c), semi-axes A x B  |  junction/TP/SAP
     pedicle (tube) --M                                          M-- pedicle
          filler block (|x| <= A, between the body and y_c)
                     body (ellipse W/2 x D/2 at the origin)

How the isthmus stays exact. Each pedicle is a :class:`~spinenav.phantom.shapes.Tube` whose
waist (the isthmus) is centred at C; its cross-section perpendicular to the axis at C is the
ellipse PW x PH. The medial end M of the isthmus width (C - PW/2 along the lateral width
direction) lies on the canal ellipse (a vertical cylinder carved from all of the vertebra's
bone) at the point where the ellipse's tangent is parallel to the pedicle axis, so the
pedicle's medial wall touches the canal there without being cut by it: along the width line
the run of bone is exactly PW, and the narrowest part of the pedicle is its isthmus. The other parts are
clipped to stay on their own side of the isthmus plane (posterior parts behind it, the filler
in front of it; the clips only act lateral of the canal), so nothing else touches the isthmus
section, while in the axial plane through the isthmus centres the canal is bounded all round
by bone exactly along its ellipse: area pi*A*B, AP 2B, interpedicular distance 2A. Stenosis
narrows only the posterior half of the canal (lamina and ligament side): its half-ellipse
takes semi-axis B' = B(1 - 2f), so the AP diameter loses the fraction f, the area becomes
pi*A*(B + B')/2, and the pedicles are untouched. These
properties are checked on the analytic model and on the image in tests/phantom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from spinenav.phantom.anatomy import VERTEBRA_LABELS, LevelDims
from spinenav.phantom.chain import SpineChain, T_vertebra_from_inferior
from spinenav.phantom.shapes import (Avoid, Box, Difference, Ellipsoid, EllipticCylinder, HalfSpace,
                                     Intersection, RoundedBox, Solid, Tube, Union, VertebralBody, apply_dir, apply_point,
                                     frame_from_axes, keep_side, trans)

#: Overlap of the front and back half-ellipses of the canal (mm); see where `v.canal` is built.
CANAL_HALVES_OVERLAP_MM = 1.0

SIDES: dict[str, float] = {"left": 1.0, "right": -1.0}  # sign of local x on that side

#: Design constants at scale 1 (mm); all assumed (the reference gives none).
CANAL_INTO_BODY_MM = 1.5  # the canal ellipse cuts this far into the posterior body wall
PEDICLE_TOP_GAP_MM = 2.0  # pedicle top below the superior endplate
PEDICLE_POSTERIOR_MM = 7.0  # pedicle tube length behind the isthmus
LAMINA_THICKNESS_MM = 6.0
FACET_GAP_MM = 1.5  # facet joint space
ARTICULAR_THICKNESS_MM = 3.5  # articular process thickness behind its facet
BONE_GAP_MM = 1.5  # least soft tissue between two bones (labels never touch)
ISTHMUS_CLEAR_MM = 2.0  # posterior elements start this far behind the isthmus plane
CLIP_EPS_MM = 0.01


@dataclass
class PedicleDesign:
    """A pedicle as designed, in the vertebra frame (mm, radians)."""

    side: str
    centre_local_mm: NDArray[np.float64]  # isthmus centre C
    axis_local: NDArray[np.float64]  # unit, posterior -> anterior
    width_dir_local: NDArray[np.float64]  # unit, lateral, in the axial plane
    height_dir_local: NDArray[np.float64]  # unit, axis x width, cranial
    width_mm: float
    height_mm: float
    tpa_rad: float
    sagittal_rad: float


@dataclass
class VertebraModel:
    """Solids and design landmarks of one vertebra. `parts` are raw (world) solids before the
    neighbour avoidances; `solid` is the final vertebra (set by :func:`finish_vertebrae`)."""

    name: str
    label: int
    dims: LevelDims
    T_world_from_vertebra: NDArray[np.float64]
    canal_a_mm: float  # half of the interpedicular distance
    canal_b_mm: float  # posterior half-AP (narrowed by stenosis)
    canal_b_nominal_mm: float  # anterior half-AP (never narrowed)
    canal_centre_local_mm: NDArray[np.float64]  # (0, y_c, z_c): z_c = isthmus height
    pedicles: dict[str, PedicleDesign]
    parts: dict[str, Solid] = field(default_factory=dict)
    canal: Solid | None = None
    solid: Solid | None = None
    superior_facets_local: dict[str, tuple[NDArray, NDArray]] = field(default_factory=dict)
    inferior_facets_local: dict[str, tuple[NDArray, NDArray]] = field(default_factory=dict)
    spinous_tip_local_mm: NDArray[np.float64] | None = None
    transverse_tips_local_mm: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    arch_z_range_local_mm: tuple[float, float] = (0.0, 0.0)
    body: Solid | None = None

    def world(self, p_local) -> NDArray[np.float64]:
        return apply_point(self.T_world_from_vertebra, p_local)

    def world_dir(self, v_local) -> NDArray[np.float64]:
        return apply_dir(self.T_world_from_vertebra, v_local)

    def isthmus_clip(self, side: str, *, posterior: bool, scale: float = 1.0, clear: bool = True) -> HalfSpace:
        """Keep the side of this pedicle's isthmus plane behind it (posterior parts) or in
        front of it, at least ISTHMUS_CLEAR_MM away (`clear`), so nothing but the pedicle is
        near its isthmus section even at voxel scale; the filler (medial, `clear=False`) may
        touch the plane."""
        p = self.pedicles[side]
        a = self.world_dir(p.axis_local)
        off = ISTHMUS_CLEAR_MM * scale if clear else CLIP_EPS_MM
        return keep_side(self.world(p.centre_local_mm), -a if posterior else a, offset_mm=off)


def _unit(v) -> NDArray[np.float64]:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def canal_tangent_point(s: float, tpa_rad: float, a: float, b: float, y_c: float, z_c: float) -> NDArray[np.float64]:
    """The point of the canal ellipse (semi-axes a, b, centre (0, y_c)) on side `s` where its
    tangent is parallel to a pedicle axis of transverse angle `tpa_rad`: the medial wall of the
    pedicle (a line through it along the axis) touches the canal there and stays outside it."""
    u = -math.atan(b / a * math.tan(tpa_rad))
    return np.array([s * a * math.cos(u), y_c + b * math.sin(u), z_c])


def _pedicle_design(dims: LevelDims, side: str, canal_a: float, canal_b: float, y_c: float,
                    z_c: float) -> PedicleDesign:
    s = SIDES[side]
    th, ph = math.radians(dims.pedicle_tpa_deg), math.radians(dims.pedicle_sagittal_deg)
    a = np.array([-s * math.sin(th) * math.cos(ph), -math.cos(th) * math.cos(ph), -math.sin(ph)])
    w_lat = np.array([s * math.cos(th), -math.sin(th), 0.0])
    h = _unit(np.cross(a, w_lat))
    if h[2] < 0:
        h = -h
    m = canal_tangent_point(s, th, canal_a, canal_b, y_c, z_c)  # medial end of the isthmus width
    c = m + dims.pedicle_width_mm / 2 * w_lat
    return PedicleDesign(side, c, a, w_lat, h, dims.pedicle_width_mm, dims.pedicle_height_mm, th, ph)


def _part(T_world_from_vertebra, T_vertebra_from_part) -> NDArray[np.float64]:
    return T_world_from_vertebra @ T_vertebra_from_part


def build_vertebra(name: str, chain: SpineChain, *, stenosis: float, scale: float) -> VertebraModel:
    """Raw parts of vertebra `name` (T10-L5 or S1) in world coordinates (no neighbour
    avoidance yet; see :func:`finish_vertebrae`)."""
    d = chain.dims[name]
    T = chain.T_world_from_vertebra[name]
    thoracic = name.startswith("T")
    sacral = name == "S1"
    W, D, H = d.body_width_mm, d.body_depth_mm, d.body_height_mm
    A = d.canal_width_mm / 2
    B_nom = d.canal_ap_mm / 2
    B_post = B_nom * (1.0 - 2.0 * stenosis)  # stenosis narrows the canal from behind
    bd = D / 2
    y_c = bd - CANAL_INTO_BODY_MM * scale + B_nom
    PH, PW = d.pedicle_height_mm, d.pedicle_width_mm
    z_c = H / 2 - PH / 2 - PEDICLE_TOP_GAP_MM * scale
    pedicles = {side: _pedicle_design(d, side, A, B_nom, y_c, z_c) for side in SIDES}
    v = VertebraModel(name, VERTEBRA_LABELS[name], d, T, A, B_post, B_nom, np.array([0.0, y_c, z_c]), pedicles)

    parts: dict[str, Solid] = {}
    body = VertebralBody(T, W / 2, D / 2, H, waist=0.05 if thoracic else 0.07,
                         wedge_rad=math.radians(d.body_wedge_deg))
    parts["body"] = body
    v.body = body

    # pedicles: hourglass tubes
    L_p = PEDICLE_POSTERIOR_MM * scale
    for side, p in pedicles.items():
        cth = max(math.cos(p.tpa_rad) * math.cos(p.sagittal_rad), 0.3)
        s_body = max((p.centre_local_mm[1] - bd) / cth, 2.0)  # axis reaches the body wall
        s_end = (p.centre_local_mm[1] - 0.15 * bd) / cth
        x_axis = _unit(np.cross(p.height_dir_local, p.axis_local))
        Tp = _part(T, frame_from_axes(p.centre_local_mm, x_axis, p.height_dir_local))
        # behind the isthmus the medial wall flares faster than the canal ellipse curves away
        # from it, so the canal stays closed by bone exactly along its ellipse
        u = math.atan(B_nom / A * math.tan(p.tpa_rad))
        rho_c = (A * A * math.sin(u) ** 2 + B_nom * B_nom * math.cos(u) ** 2) ** 1.5 / (A * B_nom)
        k_post = max(2.5 / L_p ** 2, 1.3 / (2.0 * rho_c))
        parts[f"pedicle_{side}"] = Tube(Tp, -L_p, s_end, PW / 2, PH / 2, flare_ant=1.5 / s_body ** 2,
                                        flare_post=k_post, max_flare_w_mm=3.5 * scale,
                                        max_flare_h_mm=1.5 * scale)

    # filler between the body and the pedicle roots, in front of the isthmus planes
    y_lo = bd - CANAL_INTO_BODY_MM * scale - 1.0 * scale
    filler = Box(_part(T, trans(0.0, (y_lo + y_c) / 2, z_c)), (A, (y_c - y_lo) / 2, 0.45 * PH))
    ex = v.world_dir((1.0, 0.0, 0.0))
    clips_front = []
    clips_back = []
    for side, s in SIDES.items():
        # the filler: in front of the isthmus plane, on this side of the midline
        clips_front.append(Union([v.isthmus_clip(side, posterior=False, clear=False),
                                  HalfSpace(v.world((0.0, 0.0, 0.0)), s * ex)]))
        # posterior parts: behind the isthmus plane where lateral of its medial end M
        m_x = abs(pedicles[side].centre_local_mm[0]) - PW / 2 * math.cos(pedicles[side].tpa_rad)
        clips_back.append(Union([v.isthmus_clip(side, posterior=True, scale=scale),
                                 HalfSpace(v.world((s * m_x, 0.0, 0.0)), s * ex)]))
    parts["filler"] = Intersection([filler, *clips_front])

    # lamina arch: half ring behind the canal's widest line
    T_lam = LAMINA_THICKNESS_MM * scale
    z_hi = z_c + PH / 2 - 1.0 * scale
    z_lo = -H / 2 - (2.0 if thoracic else 3.0) * scale
    if sacral:
        z_lo = -H / 2 + 1.0 * scale
    v.arch_z_range_local_mm = (z_lo, z_hi)
    side_w = PW * math.cos(math.radians(d.pedicle_tpa_deg)) + 1.0 * scale
    arch = EllipticCylinder(T, A + side_w, B_nom + T_lam, z_lo, z_hi, (0.0, y_c))
    y_m = min(p.centre_local_mm[1] + PW / 2 * math.sin(p.tpa_rad) for p in pedicles.values())  # M's y
    parts["arch"] = Intersection([arch, keep_side(v.world((0.0, y_m, 0.0)), v.world_dir((0.0, 1.0, 0.0))),
                                  *clips_back])

    # junction of pedicle, lamina, articular and transverse processes ("lateral mass")
    for side, p in pedicles.items():
        x_axis = _unit(np.cross(p.height_dir_local, p.axis_local))
        j0 = p.centre_local_mm - p.axis_local * L_p
        Tj = _part(T, frame_from_axes(j0, x_axis, p.height_dir_local))
        parts[f"junction_{side}"] = Intersection([Ellipsoid(Tj, (PW / 2 + 1.5 * scale, PH / 2 + 1.0 * scale,
                                                                 5.0 * scale)),
                                                  v.isthmus_clip(side, posterior=True, scale=scale)])

    # superior articular processes and their joint with the vertebra above
    d_above = _disc_height_above(name, chain)
    alpha = math.radians(d.facet_angle_deg)
    g = FACET_GAP_MM * scale
    t_art = ARTICULAR_THICKNESS_MM * scale
    for side, s in SIDES.items():
        p = pedicles[side]
        j0 = p.centre_local_mm - p.axis_local * L_p
        n = np.array([-s * math.cos(alpha), math.sin(alpha), 0.0])  # from SAP towards IAP
        z_j = H / 2 + d_above / 2
        J = np.array([j0[0], j0[1], z_j]) + n * 2.0 * scale
        v.superior_facets_local[side] = (J, n)
        z_bot, z_top = z_c, z_j + 5.0 * scale
        centre = J - n * (g / 2 + t_art)
        centre[2] = (z_bot + z_top) / 2
        Ts = _part(T, frame_from_axes(centre, n, np.cross((0.0, 0.0, 1.0), n)))
        sap = Ellipsoid(Ts, (t_art + 1.0 * scale, 6.5 * scale, (z_top - z_bot) / 2))
        parts[f"sap_{side}"] = Intersection([sap, keep_side(v.world(J), v.world_dir(-n), offset_mm=g / 2),
                                             v.isthmus_clip(side, posterior=True, scale=scale)])

    # spinous process: a rounded plate sloping down and back (S1: the median sacral crest's
    # first tubercle); its tip is the centre of the plate's posterior face
    beta = math.radians(d.spinous_slope_deg)
    dsp = np.array([0.0, math.cos(beta), -math.sin(beta)])
    p0 = np.array([0.0, y_c + B_nom + T_lam - 3.0 * scale, (z_hi + z_lo) / 2])
    L_sp = d.spinous_length_mm
    c_sp = p0 + dsp * (L_sp / 2)
    Tsp = _part(T, frame_from_axes(c_sp, (1.0, 0.0, 0.0), dsp))
    thick = (3.0 if thoracic else 3.5) * scale
    parts["spinous"] = RoundedBox(Tsp, (thick, L_sp / 2 + 1.5 * scale, d.spinous_height_mm / 2),
                                  radius_mm=min(2.5 * scale, 0.9 * thick))
    v.spinous_tip_local_mm = c_sp + dsp * (L_sp / 2 + 1.5 * scale)

    # transverse processes (none at S1: the ala takes their place)
    if not sacral:
        gam = math.radians(d.tp_posterior_deg)
        for side, s in SIDES.items():
            p = pedicles[side]
            root = p.centre_local_mm - p.axis_local * (0.7 * L_p) + np.array([0.0, 1.0 * scale, 0.0])
            dtp = _unit([s * math.cos(gam), math.sin(gam), 0.08 if thoracic else 0.0])
            span = (d.tp_reach_mm - abs(root[0])) / abs(dtp[0])
            semi_tp = span / 2 + 1.0 * scale
            c_tp = root + dtp * (semi_tp - 2.0 * scale)
            Tt = _part(T, frame_from_axes(c_tp, dtp, np.cross((0.0, 0.0, 1.0), dtp)))
            r_ap, r_cc = (3.5, 5.0) if thoracic else (3.0, 4.5)
            tp = Ellipsoid(Tt, (semi_tp, r_ap * scale, r_cc * scale))
            parts[f"tp_{side}"] = Intersection([tp, v.isthmus_clip(side, posterior=True, scale=scale)])
            v.transverse_tips_local_mm[side] = c_tp + dtp * semi_tp

    v.parts = parts
    z0, z1 = -H / 2 - 25.0 * scale, H / 2 + 25.0 * scale
    # The two half-ellipses overlap by CANAL_HALVES_OVERLAP_MM: cut exactly at y_c, each half's
    # distance (max of ellipse and plane) is 0 all over the plane, and so was the canal's, which
    # painted a half-bright coronal sheet of "bone" through the middle of the canal. Near y_c
    # both halves have the same lateral semi-axis A, so the overlap changes the outline by
    # < A (1 - sqrt(1 - (overlap / B)^2)), a few hundredths of a mm.
    front = keep_side(v.world((0.0, y_c, 0.0)), v.world_dir((0.0, -1.0, 0.0)), offset_mm=-CANAL_HALVES_OVERLAP_MM)
    back = keep_side(v.world((0.0, y_c, 0.0)), v.world_dir((0.0, 1.0, 0.0)), offset_mm=-CANAL_HALVES_OVERLAP_MM)
    v.canal = Union([Intersection([EllipticCylinder(T, A, B_nom, z0, z1, (0.0, y_c)), front]),
                     Intersection([EllipticCylinder(T, A, max(B_post, 1e-3), z0, z1, (0.0, y_c)), back])])
    return v


def _disc_height_above(name: str, chain: SpineChain) -> float:
    for disc in chain.discs.values():
        if disc.lower == name:
            return disc.mid_height_mm
    return 5.0 * chain.dims[name].body_height_mm / 23.5  # T10: the T9-T10 disc is not modelled


def add_inferior_processes(upper: VertebraModel, lower: VertebraModel, chain: SpineChain, *,
                           scale: float) -> None:
    """Inferior articular processes of `upper`, facing `lower`'s superior ones.

    The joint is designed on the unslipped chain (so the facets match), then each process
    moves with its own vertebra; the IAP is clipped by the joint plane fixed to `lower`, so a
    slip or a scoliotic twist narrows the process instead of overlapping the neighbour.
    """
    T_u_from_l = (np.linalg.inv(chain.T_world_from_vertebra_unslipped[upper.name])
                  @ chain.T_world_from_vertebra_unslipped[lower.name])
    g = FACET_GAP_MM * scale
    t_art = ARTICULAR_THICKNESS_MM * scale
    z_lo_arch = upper.arch_z_range_local_mm[0]
    for side in SIDES:
        J_l, n_l = lower.superior_facets_local[side]
        J = apply_point(T_u_from_l, J_l)
        n = apply_dir(T_u_from_l, n_l)
        upper.inferior_facets_local[side] = (J, n)
        z_bot, z_top = J[2] - 7.0 * scale, z_lo_arch + 4.0 * scale
        centre = J + n * (g / 2 + t_art)
        centre[2] = (z_bot + z_top) / 2
        n_h = _unit([n[0], n[1], 0.0])
        Ti = upper.T_world_from_vertebra @ frame_from_axes(centre, n_h, np.cross((0.0, 0.0, 1.0), n_h))
        iap = Ellipsoid(Ti, (t_art + 1.0 * scale, 5.5 * scale, (z_top - z_bot) / 2))
        upper.parts[f"iap_{side}"] = Intersection([
            iap, keep_side(lower.world(J_l), lower.world_dir(n_l), offset_mm=g / 2)])


def _overlaps(a: Solid, b: Solid, pad: float) -> bool:
    ba, bb = a.bounds(), b.bounds()
    if ba is None or bb is None:
        return True
    return bool(np.all(ba[0] - pad <= bb[1]) and np.all(bb[0] - pad <= ba[1]))


POSTERIOR_PARTS = ("arch", "spinous", "junction_left", "junction_right", "tp_left", "tp_right",
                   "sap_left", "sap_right", "iap_left", "iap_right")


def finish_vertebrae(models: dict[str, VertebraModel], order: list[str], *, scale: float,
                     extra_avoid: dict[str, list[Solid]] | None = None) -> None:
    """Give each vertebra its final solid: its parts, each kept `BONE_GAP_MM` clear of the
    neighbours' posterior elements (upper parts avoid the lower vertebra's; a superior
    articular process avoids the upper vertebra's pedicles and body), minus the canal."""
    gap = BONE_GAP_MM * scale
    for i, name in enumerate(order):
        v = models[name]
        lower = models.get(order[i + 1]) if i + 1 < len(order) else None
        upper = models.get(order[i - 1]) if i > 0 else None
        final: list[Solid] = []
        for pname, part in v.parts.items():
            avoid: list[Solid] = []
            if lower is not None and pname in POSTERIOR_PARTS:
                avoid += [q for qn, q in lower.parts.items()
                          if qn in POSTERIOR_PARTS or qn.startswith("ala")]
            if upper is not None and pname.startswith("sap"):
                avoid += [q for qn, q in upper.parts.items() if qn.startswith(("pedicle", "body"))]
            if extra_avoid and pname in POSTERIOR_PARTS:
                avoid += extra_avoid.get(name, [])
            avoid = [q for q in avoid if _overlaps(part, q, gap + 3.0)]
            final.append(Intersection([part, *[Avoid(q, gap) for q in avoid]]) if avoid else part)
        v.solid = Difference(Union(final), v.canal)


def body_only(v: VertebraModel) -> Solid:
    """The vertebral body minus the canal (for the centroid)."""
    return Difference(v.body, v.canal)


def inferior_endplate_frame(v: VertebraModel) -> NDArray[np.float64]:
    return v.T_world_from_vertebra @ T_vertebra_from_inferior(v.dims)
