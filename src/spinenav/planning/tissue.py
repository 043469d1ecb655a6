"""Tissue spared: the open midline equivalent of a plan versus the MIS plan itself.

Only computed quantities, each with its definition in ``TissueComparison.definitions``:

* **paraspinal muscle**: the autochthon labels (TotalSegmentator ``autochthon_left/right``, 86
  and 87) when the label map has them; otherwise voxels of 0-100 HU (skeletal muscle on CT;
  assumed window) behind the spinal canal, within 70 mm of the midline.
* **open midline equivalent**: one midline incision from ``OPEN_EXTENSION_MM`` above the
  highest spinous tip of the levels to as far below the lowest; the paraspinal muscle stripped
  from the midline out to the transverse process tips (fusion: screws, TLIF) or to the facet
  joints (decompression, discectomy), over the incision's cranio-caudal extent, on the operated
  sides (both for fusion).
* **MIS**: the incisions of the plan; the muscle inside the tubes (skin to docking point) and
  inside each percutaneous screw's dilator path (skin to bone entry, ``dilator_diameter_mm``).
* **bone removed**: MIS - the bone in the tube corridors (laminotomy / facetectomy volumes);
  open - decompression and TLIF: a laminectomy (the posterior arch between the pedicles within
  12 mm of the disc plane) plus, for TLIF, the same facetectomy; discectomy: the same laminotomy
  as MIS; screws only: none.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from spinenav.anatomy.labels import TS_V2_IDS
from spinenav.anatomy.model import SpineModel
from spinenav.imaging.volume import Volume
from spinenav.planning.fields import cylinder_mask
from spinenav.planning.plan import Corridor, Incision, Screw, TissueComparison

AUTOCHTHON_IDS = (TS_V2_IDS["autochthon_left"], TS_V2_IDS["autochthon_right"])
#: Open incision beyond the outer spinous tips (assumed).
OPEN_EXTENSION_MM = 20.0
#: HU window for skeletal muscle when no autochthon label exists (assumed), lateral reach (mm).
MUSCLE_HU = (0.0, 100.0)
PARASPINAL_REACH_MM = 70.0
#: Laminectomy band around the disc plane (mm, assumed).
LAMINECTOMY_HALF_MM = 12.0


def _axes(spine: SpineModel, levels: list[str]) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    frs = [spine.vertebra(n).landmarks.frame for n in levels]  # type: ignore[union-attr]
    lr = np.mean([f.axis_lr_world for f in frs], axis=0)
    ap = np.mean([f.axis_ap_world for f in frs], axis=0)
    cc = np.mean([f.axis_cc_world for f in frs], axis=0)
    lr, ap, cc = (v / np.linalg.norm(v) for v in (lr, ap, cc))
    centre = np.mean([f.origin_world_mm for f in frs], axis=0)
    return lr, ap, cc, centre


def muscle_mask(ct: Volume, labels: Volume, spine: SpineModel, levels: list[str]
                ) -> tuple[NDArray[np.bool_], str]:
    arr = np.asarray(labels.array)
    m = np.isin(arr, AUTOCHTHON_IDS)
    if m.sum() > 1000:
        return m, "autochthon labels"
    lr, ap, _, centre = _axes(spine, levels)
    canal = [spine.vertebra(n).landmarks.canal for n in levels]  # type: ignore[union-attr]
    back = np.mean([c.centre_world_mm for c in canal if c is not None], axis=0) if any(canal) else centre
    hu = np.asarray(ct.array)
    cand = (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1]) & (arr == 0)
    idx = np.argwhere(cand)
    pts = ct.world_from_index(idx)
    keep = ((pts - back) @ ap > 0) & (np.abs((pts - back) @ lr) < PARASPINAL_REACH_MM)
    out = np.zeros(arr.shape, bool)
    out[tuple(idx[keep].T)] = True
    return out, "HU mask"


def _cyl_count(grid: Volume, mask: NDArray[np.bool_], taken: NDArray[np.bool_], a, b, r: float) -> None:
    sl, m = cylinder_mask(grid, np.asarray(a), np.asarray(b), r)
    if m.size:
        taken[sl] |= m & mask[sl]


def compare_tissue(ct: Volume, labels: Volume, spine: SpineModel, *, levels: list[str], procedures: list[str],
                   sides: list[str], screws: list[Screw], corridors: list[Corridor], incisions: list[Incision],
                   dilator_diameter_mm: float) -> TissueComparison:
    """The open-versus-MIS comparison (see the module docstring)."""
    lr, ap, cc, centre = _axes(spine, levels)
    muscle, source = muscle_mask(ct, labels, spine, levels)
    voxel_mm3 = float(abs(np.linalg.det(ct.affine[:3, :3])))
    flags: list[str] = []
    # cranio-caudal extent of the open incision
    tips = []
    for n in levels:
        lm = spine.vertebra(n).landmarks
        if lm is not None and lm.spinous_tip is not None:
            tips.append(np.asarray(lm.spinous_tip.position_world_mm))
        elif lm is not None:
            tips.append(np.asarray(lm.frame.origin_world_mm) + ap * 40.0)
            flags.append(f"{n}: spinous tip not found, body centre used for the open incision's extent")
    t = np.array([(p - centre) @ cc for p in tips])
    z_lo, z_hi = float(t.min() - OPEN_EXTENSION_MM), float(t.max() + OPEN_EXTENSION_MM)
    open_len = z_hi - z_lo
    fusion = any(p in ("screws", "tlif") for p in procedures)
    reach = []
    for n in levels:
        lm = spine.vertebra(n).landmarks
        if lm is None:
            continue
        pts = ([t.position_world_mm for t in lm.transverse_process_tips.values()] if fusion else
               [f.centre_world_mm for f in lm.facets.values()])
        reach += [abs(float((np.asarray(p) - centre) @ lr)) for p in pts]
    lateral_mm = (max(reach) if reach else (45.0 if fusion else 25.0))
    if not reach:
        flags.append("transverse tips / facets not found: the open exposure's lateral extent is assumed")
    open_sides = ["left", "right"] if fusion else sides
    idx = np.argwhere(muscle)
    pts = ct.world_from_index(idx) if len(idx) else np.zeros((0, 3))
    rel = pts - centre
    z = rel @ cc
    x = rel @ lr
    in_band = (z >= z_lo) & (z <= z_hi)
    on_side = np.zeros(len(pts), bool)
    if "left" in open_sides:
        on_side |= (x >= 0) & (x <= lateral_mm)
    if "right" in open_sides:
        on_side |= (x < 0) & (x >= -lateral_mm)
    open_muscle = float((in_band & on_side).sum() * voxel_mm3 / 1000.0)
    total_muscle = float(in_band.sum() * voxel_mm3 / 1000.0)
    # MIS: tubes and dilator paths
    taken = np.zeros(muscle.shape, bool)
    for c in corridors:
        if c.skin_entry_world_mm is not None:
            _cyl_count(ct, muscle, taken, c.skin_entry_world_mm, c.docking_world_mm, c.tube_diameter_mm / 2.0)
    for s in screws:
        if s.entry_skin_world_mm is not None and s.accepted:
            _cyl_count(ct, muscle, taken, s.entry_skin_world_mm, s.entry_bone_world_mm, dilator_diameter_mm / 2.0)
    mis_muscle = float(taken.sum() * voxel_mm3 / 1000.0)
    mis_len = float(sum(i.length_mm for i in incisions))
    mis_bone = float(sum(c.laminotomy_volume_mm3 for c in corridors))
    open_bone = 0.0
    discs = sorted({c.level for c in corridors})
    for d in discs:
        procs = {c.procedure for c in corridors if c.level == d}
        if procs & {"decompression", "tlif"}:
            open_bone += _laminectomy_mm3(labels, spine, d)
        if "tlif" in procs:
            open_bone += sum(c.laminotomy_volume_mm3 for c in corridors if c.level == d and c.procedure == "tlif")
        if procs == {"microdiscectomy"}:
            open_bone += sum(c.laminotomy_volume_mm3 for c in corridors if c.level == d)
    spared = open_muscle - mis_muscle
    return TissueComparison(
        levels=levels, open_incision_length_mm=open_len, mis_incision_length_mm=mis_len,
        open_muscle_disrupted_cm3=open_muscle, mis_muscle_disrupted_cm3=mis_muscle, muscle_spared_cm3=spared,
        muscle_spared_percent=(100.0 * spared / open_muscle) if open_muscle > 0 else None,
        open_bone_removed_mm3=open_bone, mis_bone_removed_mm3=mis_bone, paraspinal_muscle_total_cm3=total_muscle,
        muscle_source=source, open_lateral_extent_mm=lateral_mm,  # type: ignore[arg-type]
        definitions=[
            f"open incision: midline, {OPEN_EXTENSION_MM:.0f} mm beyond the outer spinous tips of {levels[0]}-{levels[-1]}",
            f"open muscle: paraspinal muscle over the incision's extent, from the midline to "
            f"{'the transverse process tips' if fusion else 'the facet joints'} ({lateral_mm:.0f} mm), sides: "
            f"{', '.join(open_sides)}",
            f"MIS muscle: paraspinal muscle inside the tubes (skin to docking point) and the screw dilator paths "
            f"({dilator_diameter_mm:.0f} mm, skin to bone entry)",
            "bone removed: MIS = bone in the tube corridors; open = laminectomy for decompression/TLIF (+ the "
            "facetectomy for TLIF), the same laminotomy for a discectomy, none for screws alone",
            f"muscle source: {source}"],
        flags=flags)


def _laminectomy_mm3(labels: Volume, spine: SpineModel, disc: str) -> float:
    from spinenav.planning.access import _canal_centre, disc_geometry

    g = disc_geometry(spine, disc)
    c, ip, ap_d = _canal_centre(spine, g)
    ids = [spine.vertebra(g.upper).label_id, spine.vertebra(g.lower).label_id]
    arr = np.asarray(labels.array)
    sl, m = cylinder_mask(labels, c - g.normal * LAMINECTOMY_HALF_MM, c + g.normal * LAMINECTOMY_HALF_MM, 60.0)
    if not m.size:
        return 0.0
    sub = np.isin(arr[sl], ids) & m
    idx = np.argwhere(sub) + np.array([s.start for s in sl])
    pts = labels.world_from_index(idx) - c
    keep = (pts @ g.frame.ap > ap_d / 2.0) & (np.abs(pts @ g.frame.lr) <= ip / 2.0)
    return float(keep.sum() * abs(np.linalg.det(labels.affine[:3, :3])))
