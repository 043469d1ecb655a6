"""Percutaneous pedicle screws: trajectory, size, cortical margin, predicted grade, rods.

For each vertebra and side:

1. **Trajectory.** Start from the SpineModel's pedicle (isthmus centre and axis, measured on
   the patient's CT: clinical-reference 2.3, "the planned TPA should follow the measured
   pedicle axis"), then search offsets of up to +-2 mm at the isthmus and tilts of up to +-8
   degrees for the line that keeps the most bone around it from just behind the isthmus to the
   body's frontal mid-plane (the signed distance to the vertebra's label-map boundary,
   :mod:`spinenav.planning.fields`). Among lines within 0.1 mm of the best clearance the one
   closest to the measured axis wins.
2. **Diameter.** The largest catalogue diameter that is at most ``fill_ratio_max`` (0.8) of the
   outer isthmus width [MISENHIMER89] [SOLITRO19] (clinical-reference 2.1) and keeps
   ``required_margin_mm`` (1 mm: the clearance a 4 mm screw needs in a 5 mm pedicle
   [KAUR16]) of bone all round from the seat to the tip.
3. **Length.** From the bone entry to a tip that stays ``required_margin_mm`` short of the
   anterior cortex (never past it, clinical-reference 2.1 note (c)) and no deeper than a
   level-dependent fraction of the body's AP length: 87.6 % at L1 falling to 78.9 % at L5
   [OH19] (clinical-reference 2.2); the largest catalogue length that fits.
4. **Margin and grade.** The smallest distance from the screw surface to the vertebra's
   boundary from the seat (where the screw is wholly inside the bone) to the tip, where it
   occurs and towards which wall; the predicted Gertzbein-Robbins grade from the breach
   (A none, B < 2, C < 4, D < 6, E >= 6 mm [GR-2024], clinical-reference 3.1). The margin is
   only as good as the boundary it is measured to: where the segmentation backend's boundary
   is not validated (the builtin one, :data:`BOUNDARY_UNCERTAINTY_MM`), an accepted screw whose
   margin does not also cover that boundary's measured error is flagged ``margin_unverified``
   with a lower confidence.
5. **Where no screw fits**: the best effort is returned with ``accepted = False``, the reason,
   and the alternatives: a smaller screw (when one fits without breach), a cortical bone
   trajectory (medial-to-lateral 13.8-20.9 deg, caudal-to-cranial 17.5-24.9 deg, 19-45 mm
   [CBT-CT], clinical-reference 2.4), or skipping the level.
6. **Rods**: the accepted screws of one side joined by a percutaneous rod: span, catalogue
   length, head alignment (medio-lateral and depth steps, bend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from spinenav.anatomy.labels import level_order
from spinenav.anatomy.model import SpineModel, Vertebra, vec3
from spinenav.imaging.volume import Volume
from spinenav.planning.catalogue import Catalogue, largest_at_most, screw_item, smallest_at_least
from spinenav.planning.fields import SignedDistance, skin_exit
from spinenav.planning.plan import PlanFlag, PlanningError, PlanningParameters, Rod, Screw, ScrewAlternative

#: Tip depth as a fraction of the body's AP length on the lateral view [OH19] (clinical-reference
#: 2.2: 87.6 % at L1 decreasing to 78.9 % at L5; linear in between, thoracic levels as L1, S1 as L5).
BODY_DEPTH_FRACTION: dict[str, float] = {"L1": 0.876, "L2": 0.854, "L3": 0.833, "L4": 0.811, "L5": 0.789,
                                         "L6": 0.789, "S1": 0.789}
#: Gertzbein-Robbins thresholds on the breach, mm [GR-2024] (clinical-reference 3.1).
GR_LIMITS_MM = ((2.0, "B"), (4.0, "C"), (6.0, "D"))  # above 0: B < 2 <= C < 4 <= D < 6 <= E
#: Where the screw crosses the posterior bone surface it is partly outside the bone: the seat
#: is where it is wholly inside with the margin. A seat farther than this from the bone entry
#: means the screw runs along the outside of the posterior cortex: not accepted (assumed value).
EXEMPT_MAX_MM = 10.0
#: Added to the required margin when choosing the size: on the phantoms the largest safe
#: diameter measured on the CT-refined surface agreed with the analytic truth within +-0.1 mm
#: (tests/planning), i.e. +-0.05 mm in radius; 0.1 mm keeps the margin a true lower bound.
SURFACE_UNCERTAINTY_MM = 0.1
#: How far a segmentation backend's vertebra boundary may lie OUTSIDE the true one next to the
#: screw paths, mm (a margin measured on it overstates the true margin by up to this much).
#: builtin: on the real chest CT (0.7 x 0.7 x 2.5 mm voxels), within 6 mm of the axes of the
#: screws it plans at T10-L3, its boundary (after the refinement to the CT's bone edge) lay
#: outside TotalSegmentator's by more than 1.25 mm at 4 % and by more than 2.5 mm (one slice)
#: at 0.2-0.5 % of the surface points (two versions of the builtin segmentation; measured, and
#: checked to stay under 1 %, by test_builtin_boundary_error_near_the_screws_is_within_the_
#: planners_allowance in tests/planning/test_chest_own_segmentation.py). The thin thoracic
#: pedicle cortex, blurred by the 2.5 mm slices, stays below the refinement's CT threshold, so
#: half the builtin boundary keeps the label map's faces there. Never less than one voxel of
#: the coarsest axis (:func:`boundary_uncertainty_mm`). A label map the user supplies
#: (labelmap, totalsegmentator) is the reference the margins are defined on: 0.
BOUNDARY_UNCERTAINTY_MM: dict[str, float] = {"builtin": 2.5}
#: Search of the trajectory around the measured pedicle axis.
OFFSETS_MM = np.arange(-2.0, 2.01, 0.5)
TILTS_RAD = np.deg2rad(np.arange(-8.0, 8.01, 2.0))
#: Cortical bone trajectory template [CBT-CT] (clinical-reference 2.4).
CBT_LATERAL_DEG = (13.8, 20.9)
CBT_CRANIAL_DEG = (17.5, 24.9)
CBT_LENGTH_MM = (19.0, 45.0)
#: Rod: overhang beyond the end heads and the head-alignment limits for a percutaneous rod
#: (assumed values; no source in the reference).
ROD_OVERHANG_MM = 5.0
ROD_MAX_ML_STEP_MM = 10.0
ROD_MAX_BEND_DEG = 30.0


def boundary_uncertainty_mm(backend: str, spacing_mm) -> float:
    """How far `backend`'s boundary may lie outside the bone's on a grid of `spacing_mm`
    (:data:`BOUNDARY_UNCERTAINTY_MM`, at least one voxel of the coarsest axis; 0 for a label
    map the user supplies)."""
    base = BOUNDARY_UNCERTAINTY_MM.get(backend, 0.0)
    return max(base, float(np.max(spacing_mm))) if base > 0 else 0.0


def gr_grade(breach_mm: float) -> str:
    """Gertzbein-Robbins grade of a breach (mm; <= 0 is no breach) [GR-2024]."""
    if breach_mm <= 0.0:
        return "A"
    for limit, grade in GR_LIMITS_MM:
        if breach_mm < limit:
            return grade
    return "E"


def body_depth_fraction(level: str) -> float:
    if level in BODY_DEPTH_FRACTION:
        return BODY_DEPTH_FRACTION[level]
    return BODY_DEPTH_FRACTION["L1"] if level.startswith("T") else BODY_DEPTH_FRACTION["L5"]


@dataclass
class _Frame:
    lr: NDArray[np.float64]
    ap: NDArray[np.float64]
    cc: NDArray[np.float64]
    origin: NDArray[np.float64]


def _frame(v: Vertebra) -> _Frame:
    f = v.landmarks.frame  # type: ignore[union-attr]
    return _Frame(np.asarray(f.axis_lr_world), np.asarray(f.axis_ap_world), np.asarray(f.axis_cc_world),
                  np.asarray(f.origin_world_mm))


def _unit(v: NDArray) -> NDArray[np.float64]:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def screw_angles_rad(axis_world: NDArray, frame: _Frame, side: str) -> tuple[float, float]:
    """(convergence, sagittal) in radians: convergence in the vertebra's axial plane, positive =
    medial going anterior; sagittal from the axial plane, positive = the anterior end caudal."""
    a = _unit(axis_world)
    lateral = 1.0 if side == "left" else -1.0
    medial_c = -lateral * float(a @ frame.lr)
    anterior_c = -float(a @ frame.ap)
    return math.atan2(medial_c, anterior_c), math.asin(float(np.clip(-(a @ frame.cc), -1, 1)))


def wall_name(direction_world: NDArray, frame: _Frame, side: str) -> str:
    """Which wall a breach direction (outward) points to, in the vertebra's frame."""
    d = _unit(direction_world)
    comps = {"lr": float(d @ frame.lr), "ap": float(d @ frame.ap), "cc": float(d @ frame.cc)}
    key = max(comps, key=lambda k: abs(comps[k]))
    val = comps[key]
    if key == "lr":
        lateral = (val > 0) == (side == "left")
        return "lateral" if lateral else "medial"
    if key == "ap":
        return "posterior" if val > 0 else "anterior"
    return "superior" if val > 0 else "inferior"


@dataclass
class _Line:
    p0: NDArray[np.float64]  # point near the isthmus centre (s = 0)
    a: NDArray[np.float64]  # unit, posterior -> anterior
    s: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    phi: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def at(self, s: float) -> NDArray[np.float64]:
        return self.p0 + s * self.a


def _best_line(bone: SignedDistance, c: NDArray, a: NDArray, u: NDArray, v: NDArray, s_mid: float) -> _Line:
    """Search offsets and tilts around (c, a) for the line with the most clearance on [-3, s_mid]:
    a coarse grid (1 mm, 4 deg) over the search box, then a finer one around the best."""
    s_fine = np.arange(-3.0, max(s_mid, 2.0) + 0.25, 0.5)
    s_coarse = s_fine[::2]
    t_max = float(TILTS_RAD.max())

    def evaluate(off_u, off_v, tilt_u, tilt_v, s):
        du, dv, tu, tv = (x.ravel() for x in np.meshgrid(off_u, off_v, np.tan(tilt_u), np.tan(tilt_v), indexing="ij"))
        p0 = c + du[:, None] * u + dv[:, None] * v
        d = a + tu[:, None] * u + tv[:, None] * v
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        clearance = bone(p0[:, None, :] + s[None, :, None] * d[:, None, :]).min(axis=1)
        penalty = np.hypot(du, dv) / 2.0 + np.hypot(np.arctan(tu), np.arctan(tv)) / t_max
        return clearance, penalty, p0, d, du, dv, np.arctan(tu), np.arctan(tv)

    o_max = float(OFFSETS_MM.max())
    coarse = evaluate(np.linspace(-o_max, o_max, 5), np.linspace(-o_max, o_max, 5),
                      np.linspace(-t_max, t_max, 5), np.linspace(-t_max, t_max, 5), s_coarse)
    near = coarse[0] >= coarse[0].max() - 0.3
    k = int(np.flatnonzero(near)[np.argmin(coarse[1][near])])
    cu, cv, ctu, ctv = (coarse[i][k] for i in (4, 5, 6, 7))
    fine_o = np.array([-0.5, 0.0, 0.5])
    fine_t = np.deg2rad(np.array([-2.0, 0.0, 2.0]))
    fine = evaluate(np.clip(cu + fine_o, -o_max, o_max), np.clip(cv + fine_o, -o_max, o_max),
                    np.clip(ctu + fine_t, -t_max, t_max), np.clip(ctv + fine_t, -t_max, t_max), s_fine)
    coarse = evaluate(np.array([cu]), np.array([cv]), np.array([ctu]), np.array([ctv]), s_fine)  # re-scored
    clearance = np.concatenate([coarse[0], fine[0]])
    penalty = np.concatenate([coarse[1], fine[1]])
    p0 = np.concatenate([coarse[2], fine[2]])
    d = np.concatenate([coarse[3], fine[3]])
    near_best = clearance >= clearance.max() - 0.1
    k = int(np.flatnonzero(near_best)[np.argmin(penalty[near_best])])
    return _Line(p0=p0[k], a=d[k])


def _sample(bone: SignedDistance, line: _Line, *, back_mm: float = 60.0, front_mm: float = 90.0, ds: float = 0.25
            ) -> _Line:
    line.s = np.arange(-back_mm, front_mm + ds / 2, ds)
    line.phi = bone(line.p0 + line.s[:, None] * line.a)
    return line


def _zero_crossing(s: NDArray, phi: NDArray, i_in: int, step: int) -> float:
    """Walk from index i_in (phi > 0) in `step` direction to where phi changes sign."""
    i = i_in
    while 0 <= i + step < len(s) and phi[i + step] > 0:
        i += step
    j = i + step
    if not 0 <= j < len(s):
        return float(s[i])
    f = phi[i] / (phi[i] - phi[j])
    return float(s[i] + f * (s[j] - s[i]))


def _stretch(ok: NDArray[np.bool_], i0: int) -> tuple[int, int]:
    lo = hi = i0
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi + 1 < len(ok) and ok[hi + 1]:
        hi += 1
    return lo, hi


@dataclass
class _Fit:
    d: float
    L: float
    s_entry: float
    s_seat: float
    s_tip: float
    margin: float
    s_min: float


def _margin(line: _Line, r: float, s_from: float, s_to: float) -> tuple[float, float]:
    sel = (line.s >= s_from - 1e-9) & (line.s <= s_to + 1e-9)
    if not sel.any():
        return float("-inf"), s_from
    k = int(np.argmin(line.phi[sel]))
    return float(line.phi[sel][k] - r), float(line.s[sel][k])


@dataclass
class ScrewContext:
    """Everything screw planning needs for one vertebra (built once, shared by both sides)."""

    vertebra: Vertebra
    frame: _Frame
    bone: SignedDistance
    ap_length_mm: float | None
    posterior_wall_world_mm: NDArray[np.float64] | None
    backend: str = "labelmap"  # the segmentation backend the label map came from
    boundary_uncertainty_mm: float = 0.0  # BOUNDARY_UNCERTAINTY_MM of that backend


def screw_context(labels: Volume, spine: SpineModel, level: str, *, ct: Volume | None = None,
                  bone_ids: list[int] | None = None) -> ScrewContext:
    spine.landmarks_of(level, PlanningError, "no screw can be planned")
    v = spine.vertebra(level)
    arr = np.asarray(labels.array)
    mask = arr == v.label_id
    if not mask.any():
        raise PlanningError(f"{level}: label {v.label_id} is empty in the label map")
    fr = _frame(v)
    lm = v.landmarks
    eps = [e for e in (lm.superior_endplate, lm.inferior_endplate) if e is not None]
    ap_len = float(np.mean([e.ap_length_mm for e in eps])) if eps else None
    wall = None
    if eps and ap_len:
        centre = np.mean([np.asarray(e.centre_world_mm) for e in eps], axis=0)
        wall = centre + fr.ap * (ap_len / 2.0)
    return ScrewContext(vertebra=v, frame=fr, bone=SignedDistance(labels, mask, ct=ct,
                                                                        other_bone=_other_bone(arr, mask, bone_ids)),
                        ap_length_mm=ap_len,
                        posterior_wall_world_mm=wall, backend=spine.backend.name,
                        boundary_uncertainty_mm=boundary_uncertainty_mm(spine.backend.name, labels.spacing_mm))


def bone_label_ids(arr: NDArray) -> list[int]:
    """Ids of every bone in a label map (vertebrae, sacrum, ribs, hips)."""
    from spinenav.anatomy.labels import is_vertebra_id, structure_name

    ids = [int(i) for i in np.unique(arr) if i]
    return [i for i in ids if is_vertebra_id(i) or (structure_name(i) or "").startswith(("rib_", "hip_", "sacrum"))]


def _other_bone(arr: NDArray, mask: NDArray[np.bool_], bone_ids: list[int] | None) -> NDArray[np.bool_]:
    """Voxels of any other bone near `mask` (computed in its bounding box plus 10 voxels)."""
    ids = bone_ids if bone_ids is not None else bone_label_ids(arr)
    nz = [np.nonzero(mask.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
    box = tuple(slice(max(int(n[0]) - 10, 0), int(n[-1]) + 11) for n in nz)
    out = np.zeros(arr.shape, bool)
    out[box] = np.isin(arr[box], ids) & ~mask[box]
    return out


def _mirror_pedicle(other, fr: _Frame, side: str):
    """The contralateral pedicle reflected through the vertebra's midsagittal plane."""
    def pt(p):
        p = np.asarray(p, float)
        return vec3(p - 2.0 * float((p - fr.origin) @ fr.lr) * fr.lr)

    def dr(d):
        d = np.asarray(d, float)
        return d - 2.0 * float(d @ fr.lr) * fr.lr

    axis, width = dr(other.axis_world), dr(other.width_direction_world)
    height = np.cross(axis, width)
    if height @ fr.cc < 0:
        height = -height
    return other.model_copy(update=dict(
        side=side, isthmus_centre_world_mm=pt(other.isthmus_centre_world_mm), axis_world=vec3(axis),
        width_direction_world=vec3(width), height_direction_world=vec3(height),
        entry_world_mm=pt(other.entry_world_mm), exit_world_mm=pt(other.exit_world_mm),
        confidence=min(other.confidence, 0.5), flags=[*other.flags, "mirrored_from_other_side"]))


def plan_screw(ct: Volume, ctx: ScrewContext, side: str, *, params: PlanningParameters, catalogue: Catalogue
               ) -> Screw:
    """One pedicle screw (accepted, or flagged with the reason and alternatives)."""
    v = ctx.vertebra
    level = v.name
    sid = f"{level}-{side}"
    ped = v.landmarks.pedicles.get(side) if v.landmarks else None  # type: ignore[union-attr]
    fr = ctx.frame
    mirrored = False
    if ped is None:
        other = v.landmarks.pedicles.get("right" if side == "left" else "left") if v.landmarks else None  # type: ignore[union-attr]
        if other is None:
            raise PlanningError(f"{level}: neither pedicle was found on the CT "
                                f"({(v.landmarks.reason if v.landmarks else None) or 'no landmark'}); no screw can be "
                                "planned at this level")
        ped = _mirror_pedicle(other, fr, side)
        mirrored = True
    m = params.required_margin_mm
    m_fit = m + SURFACE_UNCERTAINTY_MM
    c = np.asarray(ped.isthmus_centre_world_mm)
    a = _unit(ped.axis_world)
    u = _unit(ped.width_direction_world)
    w = _unit(ped.height_direction_world)
    # body frontal mid-plane along the axis: the stretch that must hold the margin (as the truth)
    denom = float(a @ -fr.ap)
    s_mid = float((fr.origin - c) @ -fr.ap) / denom if denom > 0.2 else 20.0
    if s_mid <= 0.0:
        why = (v.landmarks.reason if v.landmarks else None) or ", ".join(ped.flags) or "no reason given"
        raise PlanningError(f"{level} {side}: the measured pedicle isthmus lies {-s_mid:.0f} mm in front of the "
                            f"vertebral body's centre (inconsistent landmarks: {why}); check the segmentation of "
                            "this level")
    line = _sample(ctx.bone, _best_line(ctx.bone, c, a, u, w, s_mid))
    # re-anchor s = 0 at the point nearest the isthmus centre
    i0 = int(np.argmin(np.abs(line.s)))
    flags: list[str] = []
    reasons: list[str] = []
    if line.phi[i0] <= 0:
        raise PlanningError(f"{level} {side}: the measured pedicle axis does not run through bone in the label map; "
                            "check the segmentation of this level")
    s_entry = _zero_crossing(line.s, line.phi, i0, -1)
    s_exit = _zero_crossing(line.s, line.phi, i0, +1)
    s_depth = float("inf")
    if ctx.posterior_wall_world_mm is not None and ctx.ap_length_mm:
        frac = body_depth_fraction(level)
        k = float(-(line.a @ fr.ap))
        if k > 0.2:
            s_depth = (frac * ctx.ap_length_mm - float((ctx.posterior_wall_world_mm - line.p0) @ fr.ap)) / k
    i_mid = int(np.searchsorted(line.s, s_mid))
    R = float(line.phi[i0:i_mid + 1].min())
    largest_safe = max(2.0 * (R - m_fit), 0.0)
    d_cap = params.fill_ratio_max * ped.width_mm
    fit: _Fit | None = None
    limit_note = ""
    for d in sorted(catalogue.screw_diameters_mm, reverse=True):
        if d > d_cap + 1e-9:
            continue
        r = d / 2.0
        ok = line.phi >= r + m_fit
        if not ok[i0:i_mid + 1].all():
            continue
        lo, hi = _stretch(ok, i0)
        s_seat, s_end = float(line.s[lo]), float(line.s[hi])
        if s_seat - s_entry > EXEMPT_MAX_MM:
            limit_note = (f"a {d:.1f} mm screw would run {s_seat - s_entry:.0f} mm along the outside of the "
                          "posterior cortex before it is wholly in bone")
            continue
        s_tip_max = min(s_end, s_exit - m, s_depth)
        L = largest_at_most(catalogue.screw_lengths_mm, s_tip_max - s_entry)
        if L is None:
            limit_note = (f"only {s_tip_max - s_entry:.0f} mm of bone along the trajectory (shortest screw "
                          f"{min(catalogue.screw_lengths_mm):.0f} mm)")
            continue
        s_tip = s_entry + L
        margin, s_min = _margin(line, r, s_seat, s_tip)
        fit = _Fit(d, L, s_entry, s_seat, s_tip, margin, s_min)
        break
    longest = min(s_exit - m, s_depth) - s_entry
    if fit is None:
        d = min(catalogue.screw_diameters_mm)
        L = largest_at_most(catalogue.screw_lengths_mm, longest) or min(catalogue.screw_lengths_mm)
        s_seat = s_entry + min(3.0, EXEMPT_MAX_MM)
        margin, s_min = _margin(line, d / 2.0, s_seat, s_entry + L)
        fit = _Fit(d, L, s_entry, s_seat, s_entry + L, margin, s_min)
        why = (f"no catalogue screw keeps {m:.1f} mm of bone around it: the largest safe diameter on the best "
               f"trajectory is {largest_safe:.1f} mm (outer isthmus width {ped.width_mm:.1f} mm, smallest "
               f"screw {d:.1f} mm)")
        if limit_note and largest_safe >= d:
            why = f"no catalogue screw fits: {limit_note}"
        reasons.append(why)
        flags.append("no_safe_screw")
    accepted = "no_safe_screw" not in flags and fit.margin >= m - 1e-6
    breach = max(0.0, -fit.margin)
    p_min = line.at(fit.s_min)
    wall = wall_name(-ctx.bone.gradient(p_min), fr, side)
    skin, skin_why = skin_exit(ct, line.at(fit.s_entry), -line.a, hu_threshold=params.skin_hu_threshold)
    if skin is None:
        flags.append("skin_entry_unknown")
        reasons.append(f"skin entry not found: {skin_why}")
    conv, sag = screw_angles_rad(line.a, fr, side)
    confidence = float(min(ped.confidence, v.label.confidence))
    u_mm = ctx.boundary_uncertainty_mm
    if accepted and fit.margin < m + u_mm:
        # the margin is to a boundary that may lie up to u_mm outside the bone's: not established
        confidence = min(confidence, 0.5)
        flags.append("margin_unverified")
        reasons.append(_margin_unverified_reason(fit.margin, m, ctx))
    if mirrored:
        confidence = min(confidence, 0.5)
        flags.append("pedicle_mirrored")
        reasons.append(f"the {side} pedicle was not found on the CT: its axis was mirrored from the other side "
                       "and refined on the bone; check it on the images")
    if ped.flags:
        flags += [f"pedicle:{f}" for f in ped.flags]
    if v.label.ambiguous:
        flags.append("level_name_uncertain")
        reasons.append("the level's name is uncertain: count the levels on the images before operating")
    alternatives: list[ScrewAlternative] = []
    if not accepted:
        alternatives = _alternatives(ctx, line, side, fit, params=params, catalogue=catalogue)
    return Screw(
        id=sid, level=level, side=side, trajectory="pedicle", entry_bone_world_mm=vec3(line.at(fit.s_entry)),
        entry_skin_world_mm=None if skin is None else vec3(skin),
        skin_to_bone_mm=None if skin is None else float(np.linalg.norm(skin - line.at(fit.s_entry))),
        tip_world_mm=vec3(line.at(fit.s_tip)), axis_world=vec3(line.a), diameter_mm=fit.d, length_mm=fit.L,
        catalogue_item=screw_item(fit.d, fit.L), convergence_deg=math.degrees(conv), sagittal_deg=math.degrees(sag),
        isthmus_width_mm=ped.width_mm, isthmus_height_mm=ped.height_mm, fill_ratio=fit.d / ped.width_mm,
        largest_safe_diameter_mm=largest_safe, longest_safe_length_mm=max(longest, 0.0),
        seat_mm=fit.s_seat - fit.s_entry, min_cortical_margin_mm=fit.margin, min_margin_world_mm=vec3(p_min),
        min_margin_along_mm=fit.s_min - fit.s_entry, min_margin_direction=wall, required_margin_mm=m,
        predicted_grade=gr_grade(breach), max_breach_mm=breach, accepted=accepted,  # type: ignore[arg-type]
        confidence=confidence, flags=flags, reason="; ".join(reasons) or None, alternatives=alternatives)


def _margin_unverified_reason(margin_mm: float, required_mm: float, ctx: ScrewContext) -> str:
    u = ctx.boundary_uncertainty_mm
    return (f"the {margin_mm:.1f} mm cortical margin was measured on the {ctx.backend} segmentation, whose vertebra "
            f"boundary next to screw paths may lie up to {u:.1f} mm outside the bone's on real CT: the screw is not "
            f"shown to keep {required_mm:.1f} mm of bone (that needs {required_mm + u:.1f} mm on this segmentation); "
            "check its margin on the images, or plan on a validated label map (--backend labelmap or totalsegmentator)")


def _alternatives(ctx: ScrewContext, line: _Line, side: str, fit: _Fit, *, params: PlanningParameters,
                  catalogue: Catalogue) -> list[ScrewAlternative]:
    out: list[ScrewAlternative] = []
    m = params.required_margin_mm
    # a smaller screw on the same trajectory that at least stays in bone
    for d in sorted(catalogue.screw_diameters_mm, reverse=True):
        marg, _ = _margin(line, d / 2.0, fit.s_seat, fit.s_tip)
        if marg >= 0.0:
            out.append(ScrewAlternative(
                kind="smaller_screw", diameter_mm=d, length_mm=fit.L, catalogue_item=screw_item(d, fit.L),
                entry_bone_world_mm=vec3(line.at(fit.s_entry)), tip_world_mm=vec3(line.at(fit.s_tip)),
                axis_world=vec3(line.a), min_cortical_margin_mm=marg, predicted_grade="A", fits=marg >= m,
                message=(f"a {d:.1f} mm screw on this trajectory stays in bone with {marg:.1f} mm margin "
                         f"(less than the {m:.1f} mm required: placement must be exact)")))
            break
    cbt = plan_cbt(ctx, side, params=params, catalogue=catalogue)
    if cbt is not None:
        out.append(cbt)
    out.append(ScrewAlternative(kind="skip_level", fits=True,
                                message=f"leave {ctx.vertebra.name} {side} without a screw; the rod spans the level"))
    return out


def plan_cbt(ctx: ScrewContext, side: str, *, params: PlanningParameters, catalogue: Catalogue
             ) -> ScrewAlternative | None:
    """Best cortical bone trajectory in the [CBT-CT] template, or None when none stays in bone."""
    ped = ctx.vertebra.landmarks.pedicles.get(side)  # type: ignore[union-attr]
    if ped is None:
        return None
    fr = ctx.frame
    m = params.required_margin_mm
    lateral = fr.lr if side == "left" else -fr.lr
    c = np.asarray(ped.isthmus_centre_world_mm)
    best = None
    s = np.arange(-40.0, 60.0, 0.5)
    for lat in np.deg2rad(np.linspace(*CBT_LATERAL_DEG, 4)):
        for cra in np.deg2rad(np.linspace(*CBT_CRANIAL_DEG, 4)):
            a = _unit(-fr.ap + math.tan(lat) * lateral + math.tan(cra) * fr.cc)
            for dm in (0.0, -1.5, -3.0):  # through the medial ...
                for dc in (0.0, -2.0, -4.0):  # ... and caudal part of the isthmus
                    p0 = c + dm * lateral + dc * fr.cc
                    phi = ctx.bone(p0 + s[:, None] * a)
                    i0 = int(np.argmin(np.abs(s)))
                    if phi[i0] <= 0:
                        continue
                    se = _zero_crossing(s, phi, i0, -1)
                    sx = _zero_crossing(s, phi, i0, +1)
                    L = min(sx - m, se + CBT_LENGTH_MM[1]) - se
                    if L < CBT_LENGTH_MM[0]:
                        continue
                    sel = (s >= se + 3.0) & (s <= se + L)
                    clear = float(phi[sel].min()) if sel.any() else -1.0
                    if best is None or clear > best[0]:
                        best = (clear, p0, a, se, L)
    if best is None:
        return None
    clear, p0, a, se, L = best
    d = largest_at_most(catalogue.screw_diameters_mm, 2.0 * (clear - m))
    Lc = largest_at_most(catalogue.screw_lengths_mm, L)
    if d is None or Lc is None:
        d0 = min(catalogue.screw_diameters_mm)
        return ScrewAlternative(kind="cortical_bone_trajectory", fits=False, min_cortical_margin_mm=clear - d0 / 2,
                                message=(f"no cortical bone trajectory keeps {m:.1f} mm margin either (best clearance "
                                         f"{clear:.1f} mm around the axis)"))
    return ScrewAlternative(
        kind="cortical_bone_trajectory", entry_bone_world_mm=vec3(p0 + se * a), tip_world_mm=vec3(p0 + (se + Lc) * a),
        axis_world=vec3(a), diameter_mm=d, length_mm=Lc, catalogue_item=screw_item(d, Lc),
        min_cortical_margin_mm=clear - d / 2, predicted_grade="A", fits=True,
        message=(f"cortical bone trajectory from the pars (medial-to-lateral, caudal-to-cranial [CBT-CT]): "
                 f"{d:.1f} x {Lc:.0f} mm with {clear - d / 2:.1f} mm margin"))


def plan_screws(ct: Volume, labels: Volume, spine: SpineModel, levels: list[str], sides: list[str], *,
                params: PlanningParameters, catalogue: Catalogue) -> tuple[list[Screw], list[PlanFlag]]:
    """Screws at every level and side, with a plan-level flag for each screw that does not fit."""
    screws: list[Screw] = []
    flags: list[PlanFlag] = []
    bone_ids = bone_label_ids(np.asarray(labels.array))
    for level in levels:
        ctx = screw_context(labels, spine, level, ct=ct, bone_ids=bone_ids)
        for side in sides:
            s = plan_screw(ct, ctx, side, params=params, catalogue=catalogue)
            screws.append(s)
            if not s.accepted:
                alts = "; ".join(a.message for a in s.alternatives if a.kind != "skip_level")
                flags.append(PlanFlag(
                    code="no_safe_screw", level=level, side=side, item=s.id, severity="critical",
                    message=(f"{level} {side}: no screw fits safely ({s.reason}); predicted grade "
                             f"{s.predicted_grade} for the smallest screw. Alternatives: "
                             f"{alts or 'none found'}; or skip the level"),
                    value=s.largest_safe_diameter_mm, threshold=min(catalogue.screw_diameters_mm), unit="mm",
                    source="clinical-reference 2.1 [MISENHIMER89] [KAUR16]; 2.4 [CBT-CT]; 3.1 [GR-2024]"))
            if "margin_unverified" in s.flags:
                flags.append(PlanFlag(
                    code="margin_unverified", level=level, side=side, item=s.id, severity="warning",
                    message=(f"{level} {side}: "
                             f"{_margin_unverified_reason(s.min_cortical_margin_mm, s.required_margin_mm, ctx)}"),
                    value=s.min_cortical_margin_mm,
                    threshold=s.required_margin_mm + ctx.boundary_uncertainty_mm, unit="mm",
                    source="assumed: the boundary error measured on one real CT (planning/screws.py)"))
            if "skin_entry_unknown" in s.flags:
                flags.append(PlanFlag(code="skin_entry_unknown", level=level, side=side, item=s.id,
                                      severity="warning", message=f"{level} {side}: {s.reason}"))
    return screws, flags


def plan_rods(screws: list[Screw], spine: SpineModel, *, catalogue: Catalogue) -> tuple[list[Rod], list[PlanFlag]]:
    """One rod per side joining its accepted screws (two or more)."""
    rods: list[Rod] = []
    flags: list[PlanFlag] = []
    for side in ("left", "right"):
        ss = sorted((s for s in screws if s.side == side and s.accepted), key=lambda s: level_order(s.level))
        if len(ss) < 2:
            continue
        heads = np.array([s.entry_bone_world_mm for s in ss])
        seg = np.diff(heads, axis=0)
        span = float(np.linalg.norm(seg, axis=1).sum())
        chord = heads[-1] - heads[0]
        cu = _unit(chord)
        rel = heads - heads[0]
        offsets = np.linalg.norm(rel - (rel @ cu)[:, None] * cu, axis=1)
        ml, depth = [], []
        for s0, s1, h0, h1 in zip(ss, ss[1:], heads, heads[1:]):
            fr = _frame(spine.vertebra(s0.level))
            ml.append(abs(float((h1 - h0) @ fr.lr)))
            depth.append(abs(float((h1 - h0) @ fr.ap)))
        bends = [0.0]
        for g0, g1 in zip(seg, seg[1:]):
            bends.append(math.degrees(math.acos(float(np.clip(_unit(g0) @ _unit(g1), -1, 1)))))
        need = span + 2 * ROD_OVERHANG_MM
        length = smallest_at_least(catalogue.rod_lengths_mm, need)
        rflags, reasons = [], []
        if length is None:
            rflags.append("rod_too_long")
            reasons.append(f"needs {need:.0f} mm, longer than the catalogue's {max(catalogue.rod_lengths_mm):.0f} mm")
        if max(ml) > ROD_MAX_ML_STEP_MM:
            rflags.append("heads_misaligned")
            reasons.append(f"neighbouring heads {max(ml):.0f} mm apart side to side (> {ROD_MAX_ML_STEP_MM:.0f} mm, "
                           "assumed limit for passing a percutaneous rod)")
        if max(bends) > ROD_MAX_BEND_DEG:
            rflags.append("rod_bend")
            reasons.append(f"the rod must bend {max(bends):.0f} deg (> {ROD_MAX_BEND_DEG:.0f}, assumed limit)")
        rod = Rod(id=f"rod-{side}", side=side, screw_ids=[s.id for s in ss], levels=[s.level for s in ss],  # type: ignore[arg-type]
                  head_world_mm=[vec3(h) for h in heads], span_mm=span, overhang_mm=ROD_OVERHANG_MM,
                  length_mm=float(length if length is not None else need),
                  catalogue_item=None if length is None else f"rod-{length:.0f}",
                  max_head_offset_mm=float(offsets.max()), ml_step_mm=float(max(ml)), depth_step_mm=float(max(depth)),
                  bend_deg=float(max(bends)), ok=not rflags, flags=rflags, reason="; ".join(reasons) or None)
        rods.append(rod)
        if rflags:
            flags.append(PlanFlag(code=rflags[0], side=side, item=rod.id, severity="warning",
                                  message=f"{side} rod: {rod.reason}", source="assumed"))
    return rods, flags
