"""Tubular access: microdiscectomy, decompression, and the MIS TLIF corridor and cage.

For a disc level ("L4-L5") and a side:

* **target**: microdiscectomy - the posterior surface of the disc just lateral to the dural sac
  (under the traversing root: "disc_space"); decompression - the lateral recess at the disc
  level ("lateral_recess"); TLIF - the centre of the bony Kambin triangle exposed by the
  facetectomy ("kambin_triangle", clinical-reference 6.1).
* **docking point**: on the posterior bone surface at the lamina-facet junction of the upper
  vertebra (``DOCK_MEDIAL_MM`` medial of its inferior facet joint); for TLIF on the facet joint
  itself (the facetectomy starts there).
* **tube**: along the line from the docking point to the target, extended backwards to the skin
  (HU threshold, :func:`~spinenav.planning.fields.skin_exit`); its paramedian offset is measured
  from the midsagittal plane (clinical-reference 6: about 15-20 mm for tubular discectomy
  [OV-TUBE], 25-30 mm for the Wiltse plane [OV-WILTSE]); diameter from the catalogue (14-26 mm,
  16/18 mm most used for discectomy [OV-TUBE] [KULKARNI19]); length rounded up to the catalogue.
* **bone in the corridor**: bone of the posterior elements (behind the posterior body wall)
  inside the tube's cylinder from the docking point to the target: the laminotomy (or
  facetectomy) volume, an upper bound of what must be removed.
* **canal**: neither the tube (its whole cylinder, skin to docking point) nor the working axis
  on to the target may enter the dural sac: the ``spinal_cord`` label (79) where the label map
  has it at this disc; otherwise a model from the SpineModel's canal (:func:`_sac_model`), and
  then the tube must also stay out of the bony canal around it.
* **bilateral decompression through a unilateral approach** ("over the top"): the tube is
  tilted medially to the contralateral lateral recess, passing dorsal to the sac.
* **TLIF cage**: height from the disc height, lordosis from the segmental lordosis, length from
  the oblique chord of the endplate, all from the catalogue; plus four percutaneous screws
  (:mod:`spinenav.planning.screws`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinenav.anatomy.labels import TS_V2_IDS
from spinenav.anatomy.model import SpineModel, vec3
from spinenav.imaging.volume import Volume
from spinenav.planning.catalogue import Catalogue, largest_at_most, smallest_at_least
from spinenav.planning.fields import cylinder_mask, inside_grid, skin_exit
from spinenav.planning.plan import Cage, Corridor, PlanFlag, PlanningError, PlanningParameters
from spinenav.planning.screws import _frame, _Frame, _unit, screw_angles_rad

SPINAL_CORD_ID = TS_V2_IDS["spinal_cord"]
#: Docking point: medial of the inferior facet joint of the upper vertebra, on the lamina (assumed).
DOCK_MEDIAL_MM = 6.0
#: Target clearance lateral of the dural sac for a discectomy (assumed: the root lies on the sac).
TARGET_LATERAL_OF_SAC_MM = 2.0
#: Without a sac label: the sac's half-width = half the interpedicular distance minus this (assumed).
RECESS_WIDTH_MM = 4.0
#: Paramedian offsets outside this range are flagged (clinical-reference 6: 15-20 mm tubular
#: discectomy [OV-TUBE], 25-30 mm Wiltse [OV-WILTSE]; MIS TLIF offsets are unverified).
OFFSET_RANGE_MM = (10.0, 45.0)
#: TLIF cage: insertion angle from the sagittal plane and rim clearance (assumed).
CAGE_INSERTION_DEG = 35.0
CAGE_RIM_MM = 3.0
#: A cage may restore this much height above the measured middle disc height (assumed).
CAGE_DISTRACTION_MM = 2.0
#: Kambin cannula sizes advised at L4-L5: 6-8 mm [KUMARI-KT]; <= 6 mm bony corridor [PAIRAI-KT].
KAMBIN_MIN_MM = 6.0


@dataclass
class DiscGeometry:
    name: str
    upper: str
    lower: str
    centre: NDArray[np.float64]
    normal: NDArray[np.float64]  # cranial
    frame: _Frame  # of the lower vertebra, origin moved to the disc centre
    ap_length_mm: float
    lr_width_mm: float
    posterior_surface: NDArray[np.float64]  # on the mid-sagittal line


def disc_geometry(spine: SpineModel, disc: str) -> DiscGeometry:
    up, sep, low = disc.partition("-")
    if not sep:
        raise PlanningError(f"{disc!r} is not a disc level: give two adjacent vertebrae, e.g. L4-L5")
    spine.require_levels([up, low], PlanningError)
    vu, vl = spine.vertebra(up), spine.vertebra(low)
    if vu.landmarks is None or vl.landmarks is None:
        raise PlanningError(f"{disc}: the landmarks of {up} or {low} were not found; no access can be planned")
    inf, sup = vu.landmarks.inferior_endplate, vl.landmarks.superior_endplate
    if inf is None or sup is None:
        raise PlanningError(f"{disc}: the endplates next to the disc were not found ({up} inferior: "
                            f"{'found' if inf else 'missing'}, {low} superior: {'found' if sup else 'missing'})")
    centre = 0.5 * (np.asarray(inf.centre_world_mm) + np.asarray(sup.centre_world_mm))
    fr = _frame(vl)
    fr = _Frame(fr.lr, fr.ap, fr.cc, centre)
    normal = _unit(np.asarray(sup.normal_world))
    post = centre + fr.ap * (sup.ap_length_mm / 2.0)
    return DiscGeometry(disc, up, low, centre, normal, fr, float(sup.ap_length_mm), float(sup.lr_width_mm), post)


@dataclass
class _Sac:
    """The dural sac near a disc: a mask (from the label) or an elliptic cylinder model."""

    source: str
    mask: NDArray[np.bool_] | None
    centre: NDArray[np.float64]
    half_width_mm: float  # lateral extent from the centre
    half_depth_mm: float
    frame: _Frame

    def contains(self, labels: Volume, pts: NDArray) -> NDArray[np.bool_]:
        pts = np.asarray(pts, float).reshape(-1, 3)
        if self.mask is not None:
            ijk = np.rint(labels.index_from_world(pts)).astype(int)
            ok = np.all((ijk >= 0) & (ijk < np.array(labels.shape)), axis=1)
            out = np.zeros(len(pts), bool)
            out[ok] = self.mask[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
            return out
        rel = pts - self.centre
        x = rel @ self.frame.lr / self.half_width_mm
        y = rel @ self.frame.ap / self.half_depth_mm
        return x ** 2 + y ** 2 <= 1.0


def _canal_centre(spine: SpineModel, g: DiscGeometry) -> tuple[NDArray, float, float]:
    """Canal centre at the disc level and (interpedicular, AP) from the two vertebrae's canals."""
    cs, ip, ap = [], [], []
    for name in (g.upper, g.lower):
        lm = spine.vertebra(name).landmarks
        if lm is not None and lm.canal is not None:
            cs.append(np.asarray(lm.canal.centre_world_mm))
            ip.append(lm.canal.interpedicular_mm)
            if lm.canal.ap_diameter_mm:
                ap.append(lm.canal.ap_diameter_mm)
    if not cs:
        raise PlanningError(f"{g.name}: the spinal canal was not found at {g.upper} or {g.lower}; the corridor "
                            "cannot be checked against it")
    c = np.mean(cs, axis=0)
    # move the canal centre to the disc level along the disc normal
    c = c + g.normal * float((g.centre - c) @ g.normal)
    return c, float(np.mean(ip)), float(np.mean(ap)) if ap else 15.0


def _sac_model(labels: Volume, spine: SpineModel, g: DiscGeometry) -> _Sac:
    c, ip, ap = _canal_centre(spine, g)
    arr = np.asarray(labels.array)
    mask = arr == SPINAL_CORD_ID
    if mask.any():
        # is the sac labelled at this disc? look within 8 mm of the canal centre
        sl, m = cylinder_mask(labels, c - g.normal * 8.0, c + g.normal * 8.0, ip / 2.0)
        if m.size and (mask[sl] & m).sum() > 50:
            pts = labels.world_from_index(np.argwhere(mask[sl] & m) + np.array([s.start for s in sl]))
            rel = pts - c
            half_w = float(np.percentile(np.abs(rel @ g.frame.lr), 98))
            half_d = float(np.percentile(np.abs(rel @ g.frame.ap), 98))
            return _Sac("spinal_cord label", mask, c, half_w, half_d, g.frame)
    return _Sac("SpineModel canal (assumed sac: interpedicular/2 - 4 mm wide)", None, c,
                max(ip / 2.0 - RECESS_WIDTH_MM, 4.0), ap / 2.0, g.frame)


def _posterior_bone_surface(labels: Volume, start: NDArray, ap: NDArray, ids: list[int], *, reach_mm: float = 60.0
                            ) -> NDArray[np.float64] | None:
    """Walk from `start` + reach along -ap (from behind) to the first voxel of a label in `ids`."""
    s = np.arange(reach_mm, -reach_mm, -0.5)
    pts = start + s[:, None] * ap
    ok = inside_grid(labels, pts)
    ijk = np.rint(labels.index_from_world(pts)).astype(int)
    ijk = np.clip(ijk, 0, np.array(labels.shape) - 1)
    hit = np.isin(np.asarray(labels.array)[ijk[:, 0], ijk[:, 1], ijk[:, 2]], ids) & ok
    if not hit.any():
        return None
    return pts[int(np.argmax(hit))]


def _bone_volume_mm3(labels: Volume, ids: list[int], a: NDArray, b: NDArray, radius: float, *,
                     wall: NDArray, ap: NDArray) -> float:
    """Bone of `ids` inside the cylinder a->b, behind the plane through `wall` with normal ap."""
    sl, m = cylinder_mask(labels, a, b, radius)
    if not m.size:
        return 0.0
    sub = np.isin(np.asarray(labels.array)[sl], ids) & m
    if not sub.any():
        return 0.0
    idx = np.argwhere(sub) + np.array([s.start for s in sl])
    pts = labels.world_from_index(idx)
    behind = (pts - wall) @ ap > 0
    return float(behind.sum() * abs(np.linalg.det(labels.affine[:3, :3])))


def _kambin(spine: SpineModel, g: DiscGeometry, sac: _Sac, side: str) -> tuple[NDArray, float, list[str]]:
    """Centre and inscribed-circle diameter of the bony Kambin triangle after facetectomy.

    In the plane of the disc's posterior surface: the base along the lower vertebra's superior
    endplate from the sac's lateral edge to the lateral border of the lower pedicle, the medial
    side along the sac's edge up to the upper pedicle's inferior border (where the exiting root
    runs), the hypotenuse between them (the exiting root). A model, not a measurement of
    nerves (CT does not show them).
    """
    notes: list[str] = []
    lateral = g.frame.lr if side == "left" else -g.frame.lr
    x_m = sac.half_width_mm
    pl = spine.vertebra(g.lower).landmarks.pedicles.get(side)  # type: ignore[union-attr]
    pu = spine.vertebra(g.upper).landmarks.pedicles.get(side)  # type: ignore[union-attr]
    if pl is not None:
        x_l = float((np.asarray(pl.isthmus_centre_world_mm) - sac.centre) @ lateral) + pl.width_mm / 2.0
    else:
        x_l = x_m + 10.0
        notes.append(f"{g.lower} {side} pedicle not found: triangle base assumed 10 mm")
    sup = spine.vertebra(g.lower).landmarks.superior_endplate  # type: ignore[union-attr]
    z_lo = float((np.asarray(sup.centre_world_mm) - g.centre) @ g.normal)  # type: ignore[union-attr]
    if pu is not None:
        z_hi = float((np.asarray(pu.isthmus_centre_world_mm) - g.centre) @ g.normal) - pu.height_mm / 2.0
    else:
        z_hi = z_lo + 15.0
        notes.append(f"{g.upper} {side} pedicle not found: triangle height assumed 15 mm")
    a, b = max(x_l - x_m, 0.0), max(z_hi - z_lo, 0.0)
    r = (a + b - math.hypot(a, b)) / 2.0
    centre = (g.posterior_surface + lateral * (x_m + r) + g.normal * (z_lo + r)
              + g.frame.lr * float((sac.centre - g.posterior_surface) @ g.frame.lr))
    return centre, 2.0 * r, notes


def plan_corridor(ct: Volume, labels: Volume, spine: SpineModel, disc: str, side: str, *, procedure: str,
                  params: PlanningParameters, catalogue: Catalogue, over_the_top: bool = False) -> Corridor:
    """One tubular corridor (see the module docstring)."""
    if procedure not in ("microdiscectomy", "decompression", "tlif"):
        raise PlanningError(f"unknown access procedure {procedure!r}; choose microdiscectomy, decompression or tlif")
    g = disc_geometry(spine, disc)
    sac = _sac_model(labels, spine, g)
    lateral = g.frame.lr if side == "left" else -g.frame.lr
    flags: list[str] = []
    reasons: list[str] = []
    vu, vl = spine.vertebra(g.upper), spine.vertebra(g.lower)
    ids = [vu.label_id, vl.label_id]
    # ---- target
    sac_lat = float((sac.centre - g.centre) @ g.frame.lr)  # sac centre offset from the disc centre, lr
    kambin_d = kambin_c = None
    if procedure == "microdiscectomy":
        target = (g.posterior_surface - g.frame.ap * 2.0 + g.frame.lr * sac_lat
                  + lateral * (sac.half_width_mm + TARGET_LATERAL_OF_SAC_MM))
        kind = "disc_space"
    elif procedure == "decompression":
        target = (sac.centre + lateral * (sac.half_width_mm + 1.0))
        kind = "lateral_recess"
    else:
        kambin_c, kambin_d, notes = _kambin(spine, g, sac, side)
        target = kambin_c - g.frame.ap * 2.0
        kind = "kambin_triangle"
        reasons += notes
        if kambin_d < KAMBIN_MIN_MM:
            flags.append("kambin_small")
            reasons.append(f"the bony Kambin triangle takes a {kambin_d:.1f} mm circle (< {KAMBIN_MIN_MM:.0f} mm "
                           "cannula advised [KUMARI-KT]; bony corridors are often <= 6 mm [PAIRAI-KT])")
    # ---- docking point
    facet = vu.landmarks.facets.get(f"inferior_{side}") if vu.landmarks else None  # type: ignore[union-attr]
    if facet is not None:
        f = np.asarray(facet.centre_world_mm)
    else:
        ped = vu.landmarks.pedicles.get(side) if vu.landmarks else None  # type: ignore[union-attr]
        if ped is None:
            raise PlanningError(f"{disc} {side}: neither the {g.upper} facet joint nor its pedicle was found; "
                                "no docking point")
        f = np.asarray(ped.entry_world_mm) - g.normal * 10.0
        flags.append("facet_not_found")
        reasons.append(f"{g.upper} {side} facet joint not found: docking placed 10 mm below the pedicle entry")
    if procedure == "tlif":
        dock_start = f
    else:
        # lamina-facet junction: medial of the joint, never medial of the sac's edge
        lat_f = float((f - sac.centre) @ lateral)
        shift = min(DOCK_MEDIAL_MM, max(lat_f - sac.half_width_mm, 0.0))
        dock_start = f - lateral * shift
    dock = _posterior_bone_surface(labels, dock_start, g.frame.ap, ids)
    if dock is None:
        raise PlanningError(f"{disc} {side}: no bone found behind the canal at the lamina-facet junction; "
                            "check the segmentation")
    axis = _unit(target - dock)
    if float(axis @ -g.frame.ap) < 0.3:
        flags.append("steep_trajectory")
        reasons.append("the corridor runs more sideways than forwards (target and docking point nearly level)")
    skin, why = skin_exit(ct, dock, -axis, hu_threshold=params.skin_hu_threshold)
    if skin is None:
        flags.append("skin_entry_unknown")
        reasons.append(f"skin entry not found: {why}")
    mid = sac.centre
    offset = None if skin is None else abs(float((skin - mid) @ g.frame.lr))
    if offset is not None and not OFFSET_RANGE_MM[0] <= offset <= OFFSET_RANGE_MM[1]:
        flags.append("unusual_offset")
        reasons.append(f"skin entry {offset:.0f} mm from the midline (usual {OFFSET_RANGE_MM[0]:.0f}-"
                       f"{OFFSET_RANGE_MM[1]:.0f} mm, clinical-reference 6)")
    # ---- tube
    d_tube = float(params.tube_diameter_mm.get(procedure, catalogue.tube_default_mm[procedure]))
    if d_tube not in catalogue.tube_diameters_mm:
        raise PlanningError(f"tube diameter {d_tube:g} mm is not in the catalogue "
                            f"({', '.join(f'{d:g}' for d in catalogue.tube_diameters_mm)} mm)")
    depth = None if skin is None else float(np.linalg.norm(dock - skin))
    tdepth = None if skin is None else float(np.linalg.norm(target - skin))
    tube_len = None if depth is None else smallest_at_least(catalogue.tube_lengths_mm, depth)
    if depth is not None and tube_len is None:
        flags.append("tube_too_short")
        reasons.append(f"docking point {depth:.0f} mm deep: longer than the longest tube "
                       f"({max(catalogue.tube_lengths_mm):.0f} mm)")
    # ---- canal
    wall = g.posterior_surface
    tube_start = skin if skin is not None else dock - axis * 60.0
    s = np.arange(0.0, float(np.linalg.norm(dock - tube_start)) + 0.25, 0.5)
    ring = _ring(axis, d_tube / 2.0)
    tube_pts = (tube_start + s[:, None] * axis)[:, None, :] + ring[None]
    tube_pts = np.vstack([tube_pts.reshape(-1, 3), tube_start + s[:, None] * axis])
    # with a sac label: the tube must hold no voxel of it; without: none of the bony canal model
    in_canal_tube = sac.contains(labels, tube_pts) if sac.mask is not None else _in_bony_canal(tube_pts, sac, g)
    s2 = np.arange(0.0, float(np.linalg.norm(target - dock)) + 0.25, 0.25)
    work = dock + s2[:, None] * axis
    in_sac_axis = sac.contains(labels, work)
    crosses = bool(in_canal_tube.any() or in_sac_axis.any())
    min_dist = _min_distance_to_sac(labels, sac, np.vstack([tube_start + s[:, None] * axis, work]))
    if crosses:
        flags.append("crosses_canal")
        reasons.append("the tube or its working axis enters the canal / dural sac")
    # ---- bone in the corridor
    lam = _bone_volume_mm3(labels, ids, dock - axis * 5.0, target, d_tube / 2.0, wall=wall, ap=g.frame.ap)
    # ---- contralateral (over the top)
    contra = ott = None
    if over_the_top:
        if procedure != "decompression":
            raise PlanningError("bilateral decompression over the top applies to --procedure decompression only")
        # the contralateral recess, reached dorsal to the sac (under the lamina)
        contra = sac.centre - lateral * (sac.half_width_mm + 1.0) + g.frame.ap * (0.5 * sac.half_depth_mm)
        ax2 = _unit(contra - dock)
        ott = math.degrees(screw_angles_rad(ax2, g.frame, side)[0])
        path = dock + np.arange(0.0, float(np.linalg.norm(contra - dock)), 0.25)[:, None] * ax2
        inside = sac.contains(labels, path)
        if inside.any():
            flags.append("over_the_top_crosses_sac")
            reasons.append("the over-the-top path to the contralateral recess passes through the dural sac")
    med, cc = screw_angles_rad(axis, g.frame, side)
    conf = float(min(vu.label.confidence, vl.label.confidence))
    if sac.mask is None:
        conf = min(conf, 0.7)
        reasons.append("no dural sac label: the sac is modelled from the bony canal")
    return Corridor(
        id=f"{disc}-{side}-{procedure}", procedure=procedure, level=disc, side=side, target_kind=kind,  # type: ignore[arg-type]
        target_world_mm=vec3(target), docking_world_mm=vec3(dock), skin_entry_world_mm=None if skin is None else vec3(skin),
        axis_world=vec3(axis), paramedian_offset_mm=offset, medial_angle_deg=math.degrees(med),
        craniocaudal_angle_deg=math.degrees(cc), tube_diameter_mm=d_tube,
        tube_catalogue_item=f"tube-{d_tube:g}x{tube_len:g}" if tube_len else f"tube-{d_tube:g}",
        tube_length_mm=tube_len, depth_mm=depth, target_depth_mm=tdepth, laminotomy_volume_mm3=lam,
        bilateral_over_the_top=over_the_top, contralateral_target_world_mm=None if contra is None else vec3(contra),
        over_the_top_angle_deg=ott, min_canal_distance_mm=min_dist, crosses_canal=crosses, canal_source=sac.source,
        kambin_inscribed_diameter_mm=kambin_d, kambin_centre_world_mm=None if kambin_c is None else vec3(kambin_c),
        confidence=conf, flags=flags, reason="; ".join(reasons) or None)


def _ring(axis: NDArray, r: float, n: int = 16) -> NDArray[np.float64]:
    ref = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = _unit(np.cross(axis, ref))
    v = np.cross(axis, u)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return r * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)


def _in_bony_canal(pts: NDArray, sac: _Sac, g: DiscGeometry) -> NDArray[np.bool_]:
    """Inside the bony canal model (an elliptic cylinder: the sac's extent plus the lateral
    recesses, from the posterior disc surface to the sac's back + 3 mm of ligamentum flavum)."""
    rel = pts - sac.centre
    x = rel @ g.frame.lr / (sac.half_width_mm + RECESS_WIDTH_MM)
    y = rel @ g.frame.ap / (sac.half_depth_mm + 1.5)
    return x ** 2 + y ** 2 <= 1.0


def _min_distance_to_sac(labels: Volume, sac: _Sac, pts: NDArray) -> float:
    if sac.mask is not None:
        near = sac.mask
        idx = np.argwhere(near)
        if len(idx) == 0:
            return float("inf")
        from scipy.spatial import cKDTree

        sac_pts = labels.world_from_index(idx)
        d, _ = cKDTree(sac_pts).query(pts)
        return float(d.min())
    rel = pts - sac.centre
    x = rel @ sac.frame.lr
    y = rel @ sac.frame.ap
    # distance to the ellipse approximated by scaling (exact for a circle)
    rr = np.hypot(x / sac.half_width_mm, y / sac.half_depth_mm)
    return float(((rr - 1.0) * min(sac.half_width_mm, sac.half_depth_mm)).min())


def plan_cage(spine: SpineModel, disc: str, side: str, *, catalogue: Catalogue) -> Cage:
    """The TLIF cage for `disc`, inserted from `side` (see the module docstring)."""
    g = disc_geometry(spine, disc)
    flags: list[str] = []
    reasons: list[str] = []
    try:
        d = spine.disc(disc)
    except KeyError:
        d = None
    mid = d.middle_height_mm if d else None
    post = d.posterior_height_mm if d else None
    ant = d.anterior_height_mm if d else None
    lordo = d.segmental_lordosis_deg if d else None
    if mid is None:
        h = catalogue.cage_heights_mm[len(catalogue.cage_heights_mm) // 2]
        flags.append("disc_height_unknown")
        reasons.append(f"disc height not measured: cage height {h:g} mm is a default, check on the images")
    else:
        h = largest_at_most(catalogue.cage_heights_mm, mid + CAGE_DISTRACTION_MM)
        if h is None:
            h = min(catalogue.cage_heights_mm)
            flags.append("disc_collapsed")
            reasons.append(f"disc middle height {mid:.1f} mm: the smallest cage ({h:g} mm) needs "
                           f"{h - mid:.1f} mm of distraction")
    lo = 0.0 if lordo is None else float(np.clip(lordo, min(catalogue.cage_lordosis_deg),
                                                 max(catalogue.cage_lordosis_deg)))
    lordosis = min(catalogue.cage_lordosis_deg, key=lambda x: abs(x - lo))
    th = math.radians(CAGE_INSERTION_DEG)
    a_ax, b_ax = g.ap_length_mm / 2.0, g.lr_width_mm / 2.0
    chord = 2.0 / math.sqrt((math.cos(th) / a_ax) ** 2 + (math.sin(th) / b_ax) ** 2)
    avail = chord - 2.0 * CAGE_RIM_MM
    length = largest_at_most(catalogue.cage_lengths_mm, avail)
    if length is None:
        length = min(catalogue.cage_lengths_mm)
        flags.append("endplate_small")
        reasons.append(f"only {avail:.0f} mm of endplate along the insertion line; the shortest cage is {length:g} mm")
    lateral = g.frame.lr if side == "left" else -g.frame.lr
    axis = _unit(math.cos(th) * -g.frame.ap + math.sin(th) * -lateral)
    return Cage(id=f"{disc}-cage", level=disc, side=side, catalogue_item=f"cage-tlif-{length:g}x{h:g}x{lordosis:g}",  # type: ignore[arg-type]
                length_mm=length, width_mm=catalogue.cage_width_mm, height_mm=h, lordosis_deg=lordosis,
                disc_height_mm=mid, disc_posterior_height_mm=post, disc_anterior_height_mm=ant,
                segmental_lordosis_deg=lordo, endplate_depth_mm=g.ap_length_mm, available_length_mm=avail,
                centre_world_mm=vec3(g.centre), axis_world=vec3(axis), height_axis_world=vec3(g.normal),
                insertion_angle_deg=CAGE_INSERTION_DEG, confidence=float(d.confidence) if d else 0.5,
                flags=flags, reason="; ".join(reasons) or None)


def corridor_flags(c: Corridor) -> list[PlanFlag]:
    out = []
    severe = {"crosses_canal": "critical", "over_the_top_crosses_sac": "critical"}
    for code in c.flags:
        out.append(PlanFlag(code=code, level=c.level, side=c.side, item=c.id,
                            severity=severe.get(code, "warning"),  # type: ignore[arg-type]
                            message=f"{c.level} {c.side} {c.procedure}: {c.reason}",
                            source="clinical-reference 6, 6.1" if code in ("kambin_small", "unusual_offset") else ""))
    return out
