"""Measurements per level and the radiological flags they raise; the whole `SpineModel`.

Geometry comes from :mod:`spinenav.anatomy.landmarks` (endplate planes, canal section,
pedicle isthmus); this module turns it into clinical measurements and compares them with the
thresholds of docs/clinical-reference.md (each constant cites its source tag). Flags are
*radiological findings*: image measures correlate poorly with symptoms [DSA-DURAL70], so a
flag says what the image shows, never a diagnosis.

Definitions (see also :class:`spinenav.anatomy.model.Disc`)

Body heights
    Along the vertebra's cc axis between its two endplate planes, on the mid-sagittal line:
    at the frame origin (middle) and 3 mm inside the superior endplate's AP extent
    (anterior, posterior).
Disc heights
    Along the lower vertebra's superior endplate normal, from that endplate to the upper
    vertebra's inferior endplate plane, on the lower endplate's mid-sagittal line: anterior
    and posterior points 3 mm inside its AP extent, middle at its centre.
Disc height index (DHI)
    Mean of the three disc heights / mean of the two adjacent bodies' mean heights.
Slip
    The displacement of the upper inferior endplate centre from the lower superior endplate
    centre, split into a part along the disc's bisecting normal (height) and a part along
    the lower endplate's anterior direction (the slip; anterolisthesis > 0).
    ``slip_percent`` = slip / lower superior endplate AP length x 100 (Meyerding).
Lateral recess depth
    Per side, in the axial plane 1 mm below the pedicle's superior border, 1 mm medial to its
    medial wall: the AP gap from the body's posterior surface to the vertebra's own bone
    behind it (its superior articular process), label-map precision.
Foraminal height / width
    Per side between two vertebrae: height = distance along the mean cc axis from the
    inferior margin of the upper pedicle (isthmus centre - height/2) to the superior margin of
    the lower pedicle; width = the AP gap, at the midpoint of those margins, between the
    nearest bone or disc in front and the nearest bone behind (label-map precision).
Cobb angle
    Largest difference of the superior endplates' lateral inclinations (the angle of the
    normal out of the patient's sagittal plane, asin of its left component), over the
    vertebrae in view whose landmarks are trusted (confidence >= 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

from spinenav import __version__
from spinenav.anatomy.labels import (DISC_ID_OFFSET, LUMBAR_LEVELS, disc_name, is_vertebra_id, level_name,
                                     level_order, normalize_level, ts_id)
from spinenav.anatomy.landmarks import LandmarkError, spine_landmarks
from spinenav.anatomy.model import (Backend, Disc, Flag, Geometry, LevelLabel, SpineMeasures, SpineModel, Vertebra,
                                    VertebraLandmarks, VertebraMeasurements)
from spinenav.imaging.volume import Volume

def apply_affine(T: NDArray, pts: NDArray) -> NDArray[np.float64]:
    """Points (..., 3) through a 4x4 affine (nibabel's ``apply_affine``, written out per
    component: several times faster on millions of points)."""
    p = np.asarray(pts, dtype=np.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return np.stack([T[j, 0] * x + T[j, 1] * y + T[j, 2] * z + T[j, 3] for j in range(3)], axis=-1)


# ----------------------------------------------------------------------------- thresholds
# Central canal, bony AP diameter (Verbiest): < 10 mm absolute, 10-12 mm relative stenosis.
CANAL_AP_ABSOLUTE_MM = 10.0  # [NEUP-STEN]
CANAL_AP_RELATIVE_MM = 12.0  # [NEUP-STEN]
# Dural sac cross-sectional area (Bolender): < 100 mm2 central stenosis, 100-130 mm2 early.
DURAL_SAC_STENOSIS_MM2 = 100.0  # [NEUP-STEN]
DURAL_SAC_EARLY_MM2 = 130.0  # [NEUP-STEN]
# Disc height index bands: >= 0.40 normal, 0.30-0.39 mild, 0.20-0.29 moderate, < 0.20 severe.
DHI_NORMAL = 0.40  # [SPINEBASE-DHI]
DHI_MILD = 0.30  # [SPINEBASE-DHI]
DHI_MODERATE = 0.20  # [SPINEBASE-DHI]
# Foramen (Hasegawa): posterior disc height <= 4 mm or foraminal height <= 15 mm.
POSTERIOR_DISC_HEIGHT_MM = 4.0  # [HASEGAWA]
FORAMINAL_HEIGHT_MM = 15.0  # [HASEGAWA]
# Meyerding grades: slip as % of the lower endplate's AP length, I 0-25, II 26-50, III 51-75,
# IV 76-100, V > 100.
MEYERDING_UPPER_PERCENT = (25.0, 50.0, 75.0, 100.0)  # [RADIO-MEY]
# A slip smaller than this is not reported as a listhesis (assumed: the usual radiological
# cut-off of 3 mm, about six times the measurement's error on the phantom; the reference
# gives no lower limit).
SLIP_REPORT_MM = 3.0
# Findings are not raised from a disc or vertebra whose geometry has less confidence than
# this (it is reported with the reason instead).
MIN_FINDING_CONFIDENCE = 0.5
# A 4 mm screw with 1.0 mm clearance needs a pedicle of at least 5 mm.
PEDICLE_MIN_WIDTH_MM = 5.0  # [KAUR16]
# Lateral recess height < 3 mm.
LATERAL_RECESS_MM = 3.0  # [MEDSCAPE-STEN]
# Levels where the recess is measured against its superior articular process (the sacrum's
# recess has another shape; not assessed).
LATERAL_RECESS_LEVELS = ("L1", "L2", "L3", "L4", "L5", "L6")

DISC_EDGE_INSET_MM = 3.0  # same inset as the phantom's truth (clinical-reference gives none)

DEFINITIONS = [
    "Positions LPS world mm (x patient left, y posterior, z head); directions unit vectors; angles degrees.",
    "Label ids: TotalSegmentator v2 ('total' task); T13 = 140 and L6 = 141 and discs (200 + id of the "
    "vertebra above) are spinenav extensions.",
    "Vertebra frame: cc = mean of the superior endplate normal and the reversed inferior one; ap from the "
    "body centroid towards the canal centroid (perpendicular to cc); lr = ap x cc; origin midway between "
    "the endplate centres.",
    "Pedicle width/height: outer cortex at the isthmus (least-area section along the pedicle axis), along "
    "the width direction (perpendicular to the axis in the axial plane) and axis x width; TPA in the "
    "vertebra's axial plane from the midline, convergent > 0; sagittal angle from the vertebra's axial "
    "plane, anterior end caudal > 0.",
    "Canal: in the vertebra's axial plane through the pedicle isthmus centres; interpedicular distance = "
    "widest left-right chord; AP diameter = chord along ap through its midpoint.",
    "Disc heights along the lower superior endplate normal to the upper inferior endplate plane, anterior "
    f"and posterior points {DISC_EDGE_INSET_MM} mm inside the lower endplate's AP extent; DHI = mean disc "
    "height / mean adjacent body height.",
    "Slip: translation of the upper vertebra along the lower endplate's anterior direction, after removing "
    "the part along the disc's bisecting normal; Meyerding % of the lower endplate AP length.",
    "Flags are radiological findings (image measures correlate poorly with symptoms [DSA-DURAL70]); "
    "lumbar criteria (canal, dural sac, DHI, Hasegawa, lateral recess) are applied at L1-S1 only.",
]


def meyerding_grade(slip_percent: float) -> int:
    """Meyerding grade (1-5) of an anterior slip given as % of the lower endplate [RADIO-MEY].

    >>> meyerding_grade(10.0), meyerding_grade(30.0), meyerding_grade(120.0)
    (1, 2, 5)
    """
    for grade, upper in enumerate(MEYERDING_UPPER_PERCENT, start=1):
        if slip_percent <= upper:
            return grade
    return 5


def dhi_band(dhi: float) -> str:
    """'normal', 'mild', 'moderate' or 'severe' disc height loss [SPINEBASE-DHI]."""
    if dhi >= DHI_NORMAL:
        return "normal"
    if dhi >= DHI_MILD:
        return "mild"
    if dhi >= DHI_MODERATE:
        return "moderate"
    return "severe"


# ----------------------------------------------------------------------------- geometry helpers
def _v(a) -> NDArray[np.float64]:
    return np.asarray(a, dtype=np.float64)


def _unit(v) -> NDArray[np.float64]:
    v = _v(v)
    return v / np.linalg.norm(v)


def _line_plane(p, d, c, n) -> float:
    """t where p + t d meets the plane through c with normal n."""
    return float(((_v(c) - _v(p)) @ _v(n)) / (_v(d) @ _v(n)))


def _endplate_axes(lm: VertebraLandmarks, superior: bool = True) -> tuple[NDArray, NDArray, NDArray]:
    """(x, y, z) of an endplate's frame: z = the endplate's cranial normal, y = the vertebra's
    ap made perpendicular to it, x = y x z (patient's left)."""
    ep = lm.superior_endplate if superior else lm.inferior_endplate
    z = _v(ep.normal_world) * (1.0 if superior else -1.0)
    ap = _v(lm.frame.axis_ap_world)
    y = _unit(ap - (ap @ z) * z)
    return np.cross(y, z), y, z


def body_heights(lm: VertebraLandmarks) -> tuple[float, float, float] | None:
    """(anterior, middle, posterior) body heights in mm (see the module docstring)."""
    sup, inf = lm.superior_endplate, lm.inferior_endplate
    if sup is None or inf is None:
        return None
    o, ap, cc = _v(lm.frame.origin_world_mm), _v(lm.frame.axis_ap_world), _v(lm.frame.axis_cc_world)
    half = max(sup.ap_length_mm / 2 - DISC_EDGE_INSET_MM, 0.0)
    out = []
    for y in (-half, 0.0, half):
        p = o + y * ap
        out.append(_line_plane(p, cc, sup.centre_world_mm, sup.normal_world)
                   - _line_plane(p, cc, inf.centre_world_mm, inf.normal_world))
    return out[0], out[1], out[2]


class _LabelLookup:
    """Nearest-neighbour label at world points; `kinds` maps ids to 'bone' / 'disc'."""

    def __init__(self, labels: Volume):
        self.labels = labels
        self.T_index_from_world = np.linalg.inv(labels.affine)
        ids = np.unique(labels.array)
        self.lut = np.zeros(int(ids.max()) + 1, np.uint8)
        for i in ids:
            i = int(i)
            if i == 0:
                continue
            if is_vertebra_id(i) or level_name(i) == "sacrum":
                self.lut[i] = 1
            elif i > DISC_ID_OFFSET:
                self.lut[i] = 2

    def __call__(self, pts_world: NDArray) -> NDArray[np.uint8]:
        p = np.asarray(pts_world, float)
        idx = np.rint(apply_affine(self.T_index_from_world, p.reshape(-1, 3))).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(self.labels.shape)), axis=1)
        out = np.zeros(len(idx), np.uint8)
        vals = self.labels.array[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        out[ok] = self.lut[np.minimum(vals, len(self.lut) - 1)]
        return out.reshape(p.shape[:-1])

    def label(self, pts_world: NDArray) -> NDArray:
        p = np.asarray(pts_world, float)
        idx = np.rint(apply_affine(self.T_index_from_world, p.reshape(-1, 3))).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(self.labels.shape)), axis=1)
        out = np.zeros(len(idx), self.labels.array.dtype)
        out[ok] = self.labels.array[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out.reshape(p.shape[:-1])


def _gap_along(look: _LabelLookup, start, direction, *, max_mm: float, step: float = 0.1,
               stop_kinds=(1,)) -> float | None:
    """Distance from `start` along `direction` to the first voxel whose kind is in
    `stop_kinds` (None when none within max_mm)."""
    t = np.arange(0.0, max_mm + step / 2, step)
    k = look(_v(start) + t[:, None] * _unit(direction))
    hit = np.nonzero(np.isin(k, stop_kinds))[0]
    return float(t[hit[0]]) if len(hit) else None


# ----------------------------------------------------------------------------- per vertebra
def _lateral_recess(look: _LabelLookup, lm: VertebraLandmarks, side: str) -> float | None:
    p = lm.pedicles.get(side)
    if p is None:
        return None
    ap = _v(lm.frame.axis_ap_world)
    C, wd, hd = _v(p.isthmus_centre_world_mm), _v(p.width_direction_world), _v(p.height_direction_world)
    medial = C - (p.width_mm / 2 + 1.0) * wd  # 1 mm medial of the medial wall
    q = medial + (p.height_mm / 2 - 1.0) * hd  # 1 mm below the superior border
    # from inside the body (10 mm in front), leave the body, then the gap to the vertebra's
    # own bone behind it (its superior articular process)
    start = q - 10.0 * ap
    t = np.arange(0.0, 45.0, 0.1)
    bone = look.label(start + t[:, None] * ap) == lm.label_id
    if not bone[0]:
        return None
    out = np.nonzero(~bone)[0]
    if len(out) == 0:
        return None
    i0 = out[0]
    back = np.nonzero(bone[i0:])[0]
    if len(back) == 0:
        return None
    return float(t[i0 + back[0]] - t[i0])


def _dural_sac_area(look: _LabelLookup, lm: VertebraLandmarks, dural_label: int) -> float | None:
    if lm.canal is None:
        return None
    R = lm.frame.T_world_from_vertebra()[:3, :3]
    step = 0.25
    g = np.arange(-20.0, 20.0 + step / 2, step)
    U, V = np.meshgrid(g, g, indexing="ij")
    c = _v(lm.canal.centre_world_mm)
    pts = c + U[..., None] * R[:, 0] + V[..., None] * R[:, 1]
    n = int((look.label(pts) == dural_label).sum())
    return n * step * step if n else None


def _vertebra_measurements(look: _LabelLookup, labels: Volume, lm: VertebraLandmarks,
                           dural_label: int | None) -> VertebraMeasurements:
    m = VertebraMeasurements()
    notes = []
    if lm.canal is not None:
        m.canal_area_mm2 = lm.canal.area_mm2
        m.interpedicular_distance_mm = lm.canal.interpedicular_mm
        m.canal_ap_diameter_mm = lm.canal.ap_diameter_mm
    else:
        notes.append("canal not found: no canal measurements")
    if dural_label is not None:
        m.dural_sac_area_mm2 = _dural_sac_area(look, lm, dural_label)
    for side, p in lm.pedicles.items():
        m.pedicle_width_mm[side] = p.width_mm
        m.pedicle_height_mm[side] = p.height_mm
        m.lateral_recess_depth_mm[side] = _lateral_recess(look, lm, side)
    bh = body_heights(lm)
    if bh is not None:
        m.body_height_anterior_mm, m.body_height_middle_mm, m.body_height_posterior_mm = bh
    else:
        notes.append("an endplate is missing: no body heights")
    m.notes = notes
    return m


def _vertebra_flags(name: str, m: VertebraMeasurements, lm: VertebraLandmarks) -> list[Flag]:
    flags: list[Flag] = []
    if lm.confidence < MIN_FINDING_CONFIDENCE:
        m.notes.append(f"no findings: the landmarks are doubtful ({lm.reason})")
        return flags
    lumbar = normalize_level(name) in LUMBAR_LEVELS
    ap = m.canal_ap_diameter_mm
    if lumbar and ap is not None:
        if ap < CANAL_AP_ABSOLUTE_MM:
            flags.append(Flag(code="canal_stenosis_absolute", level=name, value=ap, threshold=CANAL_AP_ABSOLUTE_MM,
                              unit="mm", source="NEUP-STEN", severity="severe",
                              message=f"{name}: bony canal AP diameter {ap:.1f} mm is below {CANAL_AP_ABSOLUTE_MM:g} mm: "
                                      "absolute central canal stenosis (radiological finding)"))
        elif ap < CANAL_AP_RELATIVE_MM:
            flags.append(Flag(code="canal_stenosis_relative", level=name, value=ap, threshold=CANAL_AP_RELATIVE_MM,
                              unit="mm", source="NEUP-STEN", severity="mild",
                              message=f"{name}: bony canal AP diameter {ap:.1f} mm is {CANAL_AP_ABSOLUTE_MM:g}-"
                                      f"{CANAL_AP_RELATIVE_MM:g} mm: relative central canal stenosis "
                                      "(radiological finding)"))
    sac = m.dural_sac_area_mm2
    if lumbar and sac is not None:
        if sac < DURAL_SAC_STENOSIS_MM2:
            flags.append(Flag(code="dural_sac_stenosis", level=name, value=sac, threshold=DURAL_SAC_STENOSIS_MM2,
                              unit="mm2", source="NEUP-STEN", severity="severe",
                              message=f"{name}: dural sac area {sac:.0f} mm2 is below {DURAL_SAC_STENOSIS_MM2:g} mm2: "
                                      "central stenosis (radiological finding)"))
        elif sac < DURAL_SAC_EARLY_MM2:
            flags.append(Flag(code="dural_sac_early_stenosis", level=name, value=sac, threshold=DURAL_SAC_EARLY_MM2,
                              unit="mm2", source="NEUP-STEN", severity="mild",
                              message=f"{name}: dural sac area {sac:.0f} mm2 is {DURAL_SAC_STENOSIS_MM2:g}-"
                                      f"{DURAL_SAC_EARLY_MM2:g} mm2: early stenosis (radiological finding)"))
    for side, wmm in m.pedicle_width_mm.items():
        if wmm < PEDICLE_MIN_WIDTH_MM and "implausible_size" not in lm.pedicles[side].flags:
            flags.append(Flag(code="pedicle_too_narrow", level=name, value=wmm, threshold=PEDICLE_MIN_WIDTH_MM,
                              unit="mm", source="KAUR16", severity="moderate",
                              message=f"{name} {side} pedicle is {wmm:.1f} mm wide: below {PEDICLE_MIN_WIDTH_MM:g} mm, "
                                      "too narrow for a 4 mm screw with 1 mm clearance"))
    if normalize_level(name) in LATERAL_RECESS_LEVELS:
        for side, d in m.lateral_recess_depth_mm.items():
            if d is not None and d < LATERAL_RECESS_MM:
                flags.append(Flag(code="lateral_recess_stenosis", level=name, value=d, threshold=LATERAL_RECESS_MM,
                                  unit="mm", source="MEDSCAPE-STEN", severity="moderate",
                                  message=f"{name} {side} lateral recess is {d:.1f} mm deep: below "
                                          f"{LATERAL_RECESS_MM:g} mm, lateral recess stenosis (radiological finding)"))
    return flags


# ----------------------------------------------------------------------------- per disc
def _foramen(look: _LabelLookup, up: VertebraLandmarks, lo: VertebraLandmarks, side: str
             ) -> tuple[float | None, float | None]:
    pu, pl = up.pedicles.get(side), lo.pedicles.get(side)
    if pu is None or pl is None:
        return None, None
    cc = _unit(_v(up.frame.axis_cc_world) + _v(lo.frame.axis_cc_world))
    bottom = _v(pu.isthmus_centre_world_mm) - pu.height_mm / 2 * _v(pu.height_direction_world)
    top = _v(pl.isthmus_centre_world_mm) + pl.height_mm / 2 * _v(pl.height_direction_world)
    height = float((bottom - top) @ cc)
    mid = 0.5 * (bottom + top)
    ap = _unit(_v(lo.frame.axis_ap_world) - (_v(lo.frame.axis_ap_world) @ cc) * cc)
    if look(mid[None])[0] != 0:
        return height, None
    front = _gap_along(look, mid, -ap, max_mm=25.0, stop_kinds=(1, 2))
    back = _gap_along(look, mid, ap, max_mm=25.0, stop_kinds=(1,))
    width = front + back if front is not None and back is not None else None
    return height, width


def _midline_edges(look: _LabelLookup, lm: VertebraLandmarks, c: NDArray, y: NDArray, z: NDArray
                   ) -> tuple[float, float] | None:
    """Front and back of the vertebra's bone on the mid-sagittal line just under its
    superior endplate, as offsets (mm) along `y` from the endplate centre `c`; None without
    a run of the vertebra's label through `c`.

    The line, not the endplate's centre +- half its length: behind the middle of the body
    the canal cuts the posterior wall (on the phantom ~1.5 mm in front of the body's
    outline), so the centre of the whole endplate lies behind the middle of this line, and
    its points "3 mm inside the edges" did not lie 3 mm inside them. Looked for 1-3 mm under
    the plane (the longest run) so that the label's stair steps on thick slices do not cut
    the line short."""
    t = np.arange(-40.0, 40.0 + 1e-9, 0.1)
    i0 = int(np.argmin(np.abs(t)))
    best = None
    for depth in (1.0, 1.5, 2.0, 2.5, 3.0):
        pts = c[None] - depth * z[None] + t[:, None] * y[None]
        inside = look.label(pts) == lm.label_id
        if not inside[i0]:
            continue
        lo = i0
        while lo > 0 and inside[lo - 1]:
            lo -= 1
        hi = i0
        while hi < len(t) - 1 and inside[hi + 1]:
            hi += 1
        run = (float(t[lo]) - 0.05, float(t[hi]) + 0.05)
        if best is None or run[1] - run[0] > best[1] - best[0]:
            best = run
    return best


def _disc(look: _LabelLookup, up_name: str, up: VertebraLandmarks, lo_name: str, lo: VertebraLandmarks,
          heights: Mapping[str, tuple[float, float, float] | None]) -> Disc:
    name = disc_name(up_name, lo_name)
    try:
        did = DISC_ID_OFFSET + ts_id(up_name)
    except ValueError:
        did = DISC_ID_OFFSET + int(up.label_id)
    d = Disc(name=name, upper=up_name, lower=lo_name, label_id=did, edge_inset_mm=DISC_EDGE_INSET_MM)
    sup, inf = lo.superior_endplate, up.inferior_endplate
    if sup is None or inf is None:
        d.confidence = 0.0
        d.flags = ["endplate_missing"]
        d.reason = "an endplate facing the disc was not found (out of view?)"
        return d
    x, y, z = _endplate_axes(lo, superior=True)
    c_l, c_u = _v(sup.centre_world_mm), _v(inf.centre_world_mm)
    edges = _midline_edges(look, lo, c_l, y, z)
    if edges is None:  # no label run through the centre: the endplate's own length
        half = max(sup.ap_length_mm / 2 - DISC_EDGE_INSET_MM, 0.0)
        ys = (-half, 0.0, half)
    else:
        y0, y1 = edges
        ys = (y0 + DISC_EDGE_INSET_MM, 0.5 * (y0 + y1), y1 - DISC_EDGE_INSET_MM)
    hs = []
    for yy in ys:  # anterior, middle, posterior
        p = c_l + yy * y
        hs.append(_line_plane(p, z, c_u, inf.normal_world))
    d.anterior_height_mm, d.middle_height_mm, d.posterior_height_mm = hs
    bu, bl = heights.get(up_name), heights.get(lo_name)
    bodies = [float(np.mean(b)) for b in (bu, bl) if b is not None]
    if bodies:
        d.disc_height_index = float(np.mean(hs) / np.mean(bodies))
    # angles of the upper endplate (cranial normal) in the lower endplate's frame
    m = -_v(inf.normal_world)
    d.segmental_lordosis_deg = math.degrees(math.atan2(m @ y, m @ z))
    d.coronal_angle_deg = math.degrees(math.atan2(m @ x, m @ z))
    # slip: c_u - c_l = -slip * y + h * bisector
    nb = _unit(z + m)
    A = np.column_stack([-y, nb])
    (slip, _), *_ = np.linalg.lstsq(A, c_u - c_l, rcond=None)
    d.slip_mm = float(slip)
    d.slip_percent = float(100.0 * slip / sup.ap_length_mm)
    if slip >= SLIP_REPORT_MM:
        d.meyerding_grade = meyerding_grade(d.slip_percent)
    for side in ("left", "right"):
        fh, fw = _foramen(look, up, lo, side)
        d.foraminal_height_mm[side] = fh
        d.foraminal_width_mm[side] = fw
    conf = min(sup.confidence, inf.confidence, up.confidence, lo.confidence)
    d.confidence = conf
    if conf < 1.0:
        d.flags = ["geometry_doubtful"]
        d.reason = "; ".join(dict.fromkeys(r for r in (sup.reason, inf.reason, up.reason, lo.reason) if r)) \
            or "an endplate is doubtful"
    return d


def _disc_flags(d: Disc) -> list[Flag]:
    flags: list[Flag] = []
    if d.confidence < MIN_FINDING_CONFIDENCE:
        if "not_assessed" not in d.flags:
            d.flags = [*d.flags, "not_assessed"]
        return flags
    lumbar = normalize_level(d.upper) in LUMBAR_LEVELS
    if d.disc_height_index is not None and lumbar:
        band = dhi_band(d.disc_height_index)
        if band != "normal":
            thr = {"mild": DHI_NORMAL, "moderate": DHI_MILD, "severe": DHI_MODERATE}[band]
            flags.append(Flag(code=f"disc_height_loss_{band}", level=d.name, value=d.disc_height_index,
                              threshold=thr, unit="", source="SPINEBASE-DHI", severity=band,  # type: ignore[arg-type]
                              message=f"{d.name}: disc height index {d.disc_height_index:.2f} is below {thr:.2f}: "
                                      f"{band} disc height loss (radiological finding)"))
    if lumbar and d.posterior_height_mm is not None and d.posterior_height_mm <= POSTERIOR_DISC_HEIGHT_MM:
        flags.append(Flag(code="posterior_disc_height_low", level=d.name, value=d.posterior_height_mm,
                          threshold=POSTERIOR_DISC_HEIGHT_MM, unit="mm", source="HASEGAWA", severity="moderate",
                          message=f"{d.name}: posterior disc height {d.posterior_height_mm:.1f} mm is at most "
                                  f"{POSTERIOR_DISC_HEIGHT_MM:g} mm: foraminal root compression likely "
                                  "(radiological finding)"))
    if lumbar:
        for side, fh in d.foraminal_height_mm.items():
            if fh is not None and fh <= FORAMINAL_HEIGHT_MM:
                flags.append(Flag(code="foraminal_height_low", level=d.name, value=fh, threshold=FORAMINAL_HEIGHT_MM,
                                  unit="mm", source="HASEGAWA", severity="moderate",
                                  message=f"{d.name} {side} foraminal height {fh:.1f} mm is at most "
                                          f"{FORAMINAL_HEIGHT_MM:g} mm: foraminal stenosis likely (radiological finding)"))
    if d.meyerding_grade is not None and d.slip_mm is not None and d.slip_percent is not None:
        g = d.meyerding_grade
        roman = "I II III IV V".split()[g - 1]
        flags.append(Flag(code="spondylolisthesis", level=d.name, value=d.slip_percent,
                          threshold=0.0 if g == 1 else MEYERDING_UPPER_PERCENT[g - 2], unit="%",
                          source="RADIO-MEY", severity="moderate" if g <= 2 else "severe",
                          message=f"{d.name}: {d.upper} slipped {d.slip_mm:.1f} mm ({d.slip_percent:.0f}% of "
                                  f"{d.lower}'s endplate) forwards: spondylolisthesis Meyerding grade {roman} "
                                  f"({'low' if g <= 2 else 'high'} grade, radiological finding)"))
    elif d.slip_mm is not None and d.slip_mm <= -SLIP_REPORT_MM:
        flags.append(Flag(code="retrolisthesis", level=d.name, value=d.slip_mm, threshold=-SLIP_REPORT_MM, unit="mm",
                          source="", severity="mild",
                          message=f"{d.name}: {d.upper} sits {-d.slip_mm:.1f} mm behind {d.lower}: retrolisthesis "
                                  "(radiological finding; Meyerding grades apply to forward slips only)"))
    return flags


# ----------------------------------------------------------------------------- spine-wide
def _spine_measures(named: list[tuple[str, VertebraLandmarks]]) -> SpineMeasures:
    sm = SpineMeasures()
    by = {n: lm for n, lm in named}
    l1, s1 = by.get("L1"), by.get("S1")
    if (l1 is not None and s1 is not None and l1.superior_endplate and s1.superior_endplate
            and min(l1.confidence, s1.confidence) >= MIN_FINDING_CONFIDENCE):
        x, y, z = _endplate_axes(s1, superior=True)
        n = _v(l1.superior_endplate.normal_world)
        sm.lumbar_lordosis_deg = math.degrees(math.atan2(n @ y, n @ z))
        sm.lumbar_lordosis_levels = ("L1", "S1")
    else:
        sm.notes.append("lumbar lordosis needs the superior endplates of L1 and S1 in view")
    # lateral inclination of each endplate: the angle of its normal out of the sagittal plane
    # (unlike atan2(x, z), not inflated where the spine bends forward, e.g. the upper chest)
    tilts = [(n, math.degrees(math.asin(float(np.clip(lm.superior_endplate.normal_world[0], -1.0, 1.0)))))
             for n, lm in named if lm.superior_endplate is not None and lm.confidence >= MIN_FINDING_CONFIDENCE]
    if len(tilts) >= 3:
        hi = max(tilts, key=lambda t: t[1])
        lo = min(tilts, key=lambda t: t[1])
        sm.cobb_angle_deg = hi[1] - lo[1]
        first, second = sorted((hi, lo), key=lambda t: level_order(t[0]) if normalize_level(t[0]) else 0)
        sm.cobb_upper, sm.cobb_lower = first[0], second[0]
    else:
        sm.notes.append("the Cobb angle needs at least three vertebrae with a trusted superior endplate")
    return sm


def _geometry(v: Volume) -> Geometry:
    return Geometry(shape=v.shape, spacing_mm=tuple(float(s) for s in v.spacing_mm),  # type: ignore[arg-type]
                    T_world_from_index=v.affine.tolist(), axcodes="".join(v.axcodes))


def measure_spine(ct: Volume | None, labels: Volume, *, names: Mapping[int, str] | None = None,
                  landmarks: Mapping[int, VertebraLandmarks] | None = None,
                  backend: Backend | None = None, level_labels: Mapping[int, LevelLabel] | None = None,
                  dural_sac_label: int | None = None, warnings: Iterable[str] = (),
                  progress: Callable[[str, float], None] | None = None) -> SpineModel:
    """Landmarks (unless given), measurements and flags of every vertebra: the SpineModel.

    Parameters
    ----------
    ct : Volume or None
        CT in HU on the label map's grid (None: label-map precision, flagged).
    labels : Volume
        Label map with TotalSegmentator v2 ids (or any ids with `names`).
    names : mapping id -> level name, optional
        Level names (default: the TotalSegmentator v2 table; levels.py gives checked ones).
    landmarks : mapping id -> VertebraLandmarks, optional
        Already computed landmarks (default: :func:`~spinenav.anatomy.landmarks.spine_landmarks`).
    backend : Backend, optional
        Which segmentation made `labels` (recorded in the document).
    level_labels : mapping id -> LevelLabel, optional
        Confidence and evidence of each name (from the level labelling).
    dural_sac_label : int, optional
        Id of a label that covers the whole dural sac (the phantom's 79); TotalSegmentator's
        "spinal_cord" (79) is the cord only, so it is not used unless asked for.
    warnings : iterable of str
        Warnings from earlier steps, carried into the document.

    Returns
    -------
    SpineModel
    """
    if landmarks is None:
        landmarks = spine_landmarks(ct, labels, names=names, progress=progress)
    if not landmarks:
        raise LandmarkError("no vertebra landmarks to measure")
    if names is None:
        names = {i: (lm.name or level_name(i) or f"label_{i}") for i, lm in landmarks.items()}
    look = _LabelLookup(labels)
    named: list[tuple[str, VertebraLandmarks]] = []
    for i, lm in landmarks.items():
        nm = names.get(i) or lm.name or f"label_{i}"
        named.append((nm, lm))

    def key(item):
        try:
            return float(level_order(item[0]))
        except ValueError:
            return -float(item[1].frame.origin_world_mm[2])

    named.sort(key=key)
    vertebrae: list[Vertebra] = []
    heights: dict[str, tuple[float, float, float] | None] = {}
    all_flags: list[Flag] = []
    warn = list(warnings)
    for nm, lm in named:
        m = _vertebra_measurements(look, labels, lm, dural_sac_label)
        fl = _vertebra_flags(nm, m, lm)
        heights[nm] = body_heights(lm)
        lab = (level_labels or {}).get(lm.label_id, LevelLabel())
        vertebrae.append(Vertebra(name=nm, label_id=lm.label_id, label=lab, landmarks=lm, measurements=m, flags=fl))
        all_flags += fl
        if lm.confidence < 1.0 and lm.reason:
            warn.append(f"{nm}: {lm.reason}")
    discs: list[Disc] = []
    for (un, ul), (ln, ll) in zip(named[:-1], named[1:]):
        try:
            adjacent = 0 < level_order(ln) - level_order(un) <= 2
        except ValueError:
            adjacent = True
        gap = np.linalg.norm(_v(ul.frame.origin_world_mm) - _v(ll.frame.origin_world_mm))
        if not adjacent or gap > 80.0 or normalize_level(un) in ("S1", "sacrum"):
            continue
        d = _disc(look, un, ul, ln, ll, heights)
        d.findings = _disc_flags(d)
        all_flags += d.findings
        discs.append(d)
    spine = _spine_measures(named)
    return SpineModel(spinenav_version=__version__, geometry=_geometry(labels),
                      backend=backend or Backend(name="labelmap"), vertebrae=vertebrae, discs=discs, spine=spine,
                      flags=all_flags, warnings=warn, definitions=DEFINITIONS)
