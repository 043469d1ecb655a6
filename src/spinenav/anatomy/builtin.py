"""Builtin vertebra segmentation from the CT alone: offline, no model weights.

The route, stage by stage (each stage records how sure it is in :class:`BuiltinTrace`):

1. **Spinal canal** on a coarse (2 mm) LPS grid: bone (HU > 150) closed with a 4 mm ball;
   in each axial slice the enclosed low-density holes (40-700 mm^2, -80..130 HU) are canal
   candidates; the canal is the longest chain of candidates that moves little from slice to
   slice (a longest path through a DAG of candidates).
2. **Working grid**: a 1 mm LPS grid around the canal, and a local frame per canal point:
   ``s`` along the canal (mm, cranial +), ``u`` lateral (towards the patient's right), ``v``
   anterior; every bone voxel gets its (s, u, v).
3. **Bone mask**: hysteresis (> 110 HU connected to > 300 HU) on a smoothed CT, minus
   contrast-filled vessels (homogeneous regions, local SD < 40 HU: the aorta lies against
   the bodies and is brighter than osteoporotic bone, but never what the cortex encloses),
   with the marrow filled slice by slice (the canal's own hole kept open).
4. **Pedicles -> vertebrae**: walking up the canal, dense bone immediately lateral to it on
   both sides (<= 16 mm, +-20 degrees of pure lateral) marks each vertebra's pedicles; at a
   disc level the same place is the empty intervertebral foramen. One peak per vertebra.
   Below the trace's caudal end the canal is continued straight for SACRAL_EXTRAPOLATE_MM:
   the sacrum's flat canal is traced over only part of it, and its block of lateral bone, cut
   short by the trace, would read as a pedicle.
5. **Discs**: between consecutive pedicle peaks, just above the lower one (pedicles join the
   cranial part of their body), where a dark band lies between two bright endplates.
6. **Separation**: seeded watershed on the negative distance transform of the bone mask
   (thin partial-volume bridges at facet joints become ridges; joint spaces, dips darker than
   the bone on both sides, are cut at the surface and flooded last). Seeds per vertebra: its body
   between its discs, its pedicles, and the innermost lamina just behind the canal below its
   pedicles (the lamina above overlaps it posteriorly). Bone far lateral, anterior or
   posterior (ribs, sternum, scapulae, pelvis) is seeded as "other". Next to each disc the
   body is then split again by the disc's own mid-surface, a plane fitted to the darkest point
   between the endplates in each column of the body (wedged discs tilt against the canal's
   normal plane); discs too faint to fit take this spine's median tilt.
7. **Clean-up**: per vertebra a closing and hole filling, axial slice by slice and then in
   sagittal and coronal planes (canal kept open); rib heads split off at their joints (of ribs joined
   to each other through the sternum, only in front of the pedicles); of each vertebra only
   its largest connected piece is kept.

Vertebrae are numbered 1..N from caudal to cranial; naming them is
:mod:`spinenav.anatomy.levels`' job, from the evidence recorded here (ribs, sacrum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy.signal import find_peaks
from scipy.spatial import cKDTree
from skimage.filters import apply_hysteresis_threshold
from skimage.segmentation import watershed

from spinenav.errors import SpinenavError
from spinenav.imaging.resample import resample_to_grid
from spinenav.imaging.volume import Volume

ProgressCallback = Callable[[str, float], None]

#: Canal candidates: enclosed holes of this area (mm^2) and mean HU in each axial slice.
CANAL_AREA_MM2 = (40.0, 700.0)
CANAL_HU = (-80.0, 130.0)
#: Bone for the canal search, HU, and the closing radius that bridges gaps in the bony ring, mm.
CANAL_BONE_HU = 150.0
CANAL_CLOSE_MM = 4.0
#: Hysteresis thresholds of the bone mask (smoothed HU): weak voxels join strong ones.
BONE_WEAK_HU, BONE_STRONG_HU = 110.0, 300.0
#: The outer surface of a vertebra lies at the half-maximum between the cortex nearby (the
#: local maximum within 2 mm) and soft tissue, clipped to this range (HU). On the chest CT,
#: TotalSegmentator's boundary has 285 HU just inside and 145 HU just outside.
SOFT_TISSUE_HU = 40.0
SURFACE_HU_RANGE = (150.0, 600.0)
#: Contrast-filled vessels: homogeneous (local SD < this, HU) regions brighter than 150 HU.
VESSEL_SD_HU = 40.0
#: Pedicle detector: rays from the canal centre, lateral +-20 deg, out to 16 mm, bone > 200 HU.
PEDICLE_RAY_MM = 16.0
PEDICLE_SPREAD_RAD = math.radians(20.0)
PEDICLE_HU = 200.0
#: Lateral (|u|), anterior (v) and posterior (-v) distance beyond which bone is not spine, mm.
OTHER_BONE_LATERAL_MM, OTHER_BONE_ANTERIOR_MM, OTHER_BONE_POSTERIOR_MM = 55.0, 75.0, 60.0
WORK_SPACING_MM = 1.0
#: The pedicle signal is sampled this far (mm) below the canal trace's caudal end (phantom,
#: 2 mm slices: the trace stops 20 mm above the field of view's end in the sacrum, and the
#: sacral block it leaves, 15 mm, is shorter than the 18 mm that tell it from a pedicle).
SACRAL_EXTRAPOLATE_MM = 8.0
#: Lamina seeds reach this far from the midline (mm) and 6-16 mm behind the canal's centre: the lamina runs out to the facets at
#: ~15-20 mm, so the next vertebra's articular processes cannot flood it through a tight joint.
LAMINA_SEED_HALF_WIDTH_MM = 13.0
#: The disc profile is sampled this far in front of the canal's centre (mm), within 4 mm:
#: inside the small upper-thoracic bodies too (posterior wall ~8 mm, AP depth ~16 mm).
BODY_PROFILE_DEPTH_MM = 15.0
#: Around each disc's centre, +-this (mm along the canal) belongs to no vertebra unless it is
#: bright bone (> 250 HU): the 5 mm band lies well inside a lumbar disc (mean height 8.8 mm,
#: clinical-reference.md 7.2 [DH-METHODS]).
DISC_BAND_HALF_MM = 2.5
#: Disc planes across the body: a column's darkest point counts when both endplates are this much
#: brighter (HU); a plane needs this many columns; its tilt against the canal's normal plane is
#: clipped to DISC_PLANE_MAX_SLOPE (mm along the canal per mm across: ~17 deg). Thoracic discs
#: are wedge-shaped in the kyphosis and lumbar ones in the lordosis (clinical-reference.md 7.2
#: [DH-METHODS]: anterior and posterior heights differ), so the disc's mid-surface is not the
#: plane normal to the canal behind the body.
DISC_PLANE_MIN_DIP_HU = 25.0
DISC_PLANE_MIN_COLUMNS = 20
DISC_PLANE_MAX_SLOPE = 0.3
DISC_PLANE_MAX_OFFSET_MM = 3.0
#: A disc's dark band (HU below the darker of its two endplates) is too faint to place it
#: under DISC_FAINT_HU; bands of DISC_CLEAR_HU or more tell where this spine's discs sit.
DISC_FAINT_HU, DISC_CLEAR_HU = 10.0, 20.0
#: Voxels this close to the canal's centre line and darker than bone are canal contents
#: (the lumbar canal is ~15.6 mm AP [COOK21], its dural sac narrower).
CANAL_ZONE_MM = 7.0
#: A rib: bone that is not spine, reaches this far from the canal (mm) and is thin (largest
#: distance from its surface inward, mm); the lowest thoracic ribs (T12) reach ~70-100 mm.
RIB_REACH_MM = 65.0
RIB_MAX_HALF_THICKNESS_MM = 8.0
#: A rib's medial end lies this close to the canal (mm): its head and neck meet the vertebra.
RIB_HEAD_U_MM = (8.0, 55.0)
#: One rib in view is a few thousand 1 mm voxels; larger "rib" components are ribs merged with
#: cartilage or each other and say nothing about which vertebra carries them.
RIB_MAX_VOXELS_1MM = 20000
#: Bone more than this far (mm) lateral to a vertebral body's own half-width and more than this
#: far in front of the canal's centre is a rib's head or neck, not the vertebra.
RIB_NECK_MARGIN_MM = 3.0
RIB_NECK_MIN_V_MM = -3.0
#: Rib heads are split off at the joints outside this distance from the canal's midline (mm).
RIB_SPLIT_CORE_MM = 12.0
#: Joint spaces: a voxel this much darker (HU) than the 3 mm grey closing around it lies in a
#: dip between two cortices. At the bone's surface a dip of JOINT_GAP_CUT_HU is cut out of the
#: watershed; dips beyond JOINT_GAP_HU raise the flooding relief by 1 mm of depth per
#: JOINT_GAP_HU_PER_MM (trabecular texture inside bone stays well below JOINT_GAP_HU).
JOINT_GAP_CUT_HU = 50.0
JOINT_GAP_HU = 150.0
JOINT_GAP_HU_PER_MM = 25.0
#: Splitting a rib off at its joints, the flooding relief is -HU plus this many times the joint
#: dip (HU below the 3 mm grey closing): a joint space shows as a dip between two cortices, while
#: a transverse process's tip (trabecular, partial-volumed across thick slices) may be darker
#: than the joint in absolute HU but is no dip; weighted so, any joint dip outweighs the contrast
#: between cortex and trabecular bone and the floods meet in the joint, not in the process.
RIB_SPLIT_DIP_WEIGHT = 6.0


@dataclass
class VertebraTrace:
    """What the builtin route found for one vertebra (numbered from caudal)."""

    index: int
    pedicle_s_mm: float
    pedicle_strength: float  # fraction of lateral rays hitting bone at the peak, 0..1
    disc_below_s_mm: float | None
    disc_above_s_mm: float | None
    disc_above_contrast_hu: float | None = None  # endplate-to-disc drop of the disc above (quality)
    centre_world_mm: NDArray[np.float64] | None = None
    voxels: int = 0
    kind: str = "vertebra"  # "vertebra", "S1" or "sacrum" (the sacrum below S1)
    rib_left: bool = False  # a thin bone reaching >= 65 mm laterally articulates with it
    rib_right: bool = False
    touches_fov_edge: bool = False  # cut by the field of view: partly out of the CT


@dataclass
class BuiltinTrace:
    """Intermediate results and quality of the builtin route."""

    canal_world_mm: NDArray[np.float64]  # (N, 3) canal centre per mm of the working grid's k
    canal_coverage: float  # fraction of canal slices with an enclosed canal candidate
    vertebrae: list[VertebraTrace]  # caudal to cranial; a sacrum, if found, comes first
    sacrum_found: bool
    other_bone_label: int
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class BuiltinSegmentation:
    """Ordinal vertebra labels (1..N caudal to cranial) on the working grid, plus the trace."""

    labels: Volume  # is_label, uint8: 0 background, 1..N vertebrae, N+1 other bone (ribs...)
    trace: BuiltinTrace


# ------------------------------------------------------------------------------ helpers
def _lps_grid(volume: Volume, spacing_mm: float, lo: NDArray | None = None,
              hi: NDArray | None = None) -> tuple[tuple[int, int, int], NDArray[np.float64]]:
    corners = volume.corners_world_mm()
    lo = corners.min(axis=0) if lo is None else np.maximum(lo, corners.min(axis=0))
    hi = corners.max(axis=0) if hi is None else np.minimum(hi, corners.max(axis=0))
    shape = tuple(int(math.ceil((h - l) / spacing_mm)) + 1 for l, h in zip(lo, hi))
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = lo
    return shape, affine  # type: ignore[return-value]


def _ball(radius_mm: float, spacing: NDArray[np.float64]) -> NDArray[np.bool_]:
    r = [int(math.ceil(radius_mm / s)) for s in spacing]
    grids = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    return sum((g * s) ** 2 for g, s in zip(grids, spacing)) <= radius_mm**2


def _local_sd(a: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    m = ndi.uniform_filter(a, size)
    return np.sqrt(np.maximum(ndi.uniform_filter(a * a, size) - m * m, 0.0))


# ------------------------------------------------------------------------------ 1. canal
def _canal_candidates(grid: Volume) -> list[list[tuple[NDArray[np.float64], float]]]:
    """Per axial slice of an LPS grid: (centre (i, j) in mm from the grid origin, area mm^2)."""
    a = grid.array
    sp = grid.spacing_mm
    closed = ndi.binary_closing(a > CANAL_BONE_HU, structure=_ball(CANAL_CLOSE_MM, sp))
    out = []
    for k in range(a.shape[2]):
        b = closed[:, :, k]
        holes = ndi.binary_fill_holes(b) & ~b
        lbl, n = ndi.label(holes)
        if n == 0:
            out.append([])
            continue
        idx = np.arange(1, n + 1)
        areas = ndi.sum(holes, lbl, idx) * sp[0] * sp[1]
        means = ndi.mean(a[:, :, k], lbl, idx)
        centres = np.array(ndi.center_of_mass(holes, lbl, idx)).reshape(-1, 2) * sp[:2]
        keep = ((areas > CANAL_AREA_MM2[0]) & (areas < CANAL_AREA_MM2[1])
                & (means > CANAL_HU[0]) & (means < CANAL_HU[1]))
        out.append([(centres[i], float(areas[i])) for i in np.flatnonzero(keep)])
    return out


def _longest_chain(cands, dz_mm: float, *, max_gap_mm: float = 40.0) -> list[tuple[int, int]]:
    """Longest path through candidates in nearby slices: +1 per node, minus jumps and gaps.

    In the lumbar spine the canal is enclosed by bone only at the pedicles: open stretches of
    20-35 mm (interlaminar window, foramina; longer where scoliosis tilts the ring out of the
    axial plane) separate the enclosed ones, so links may skip up to one lumbar pitch; the canal drifts at most ~1.5 mm sideways per mm (56 deg: the sacral canal runs ~50 deg from vertical) along the spine.
    """
    max_skip = int(max_gap_mm / dz_mm)
    best: dict[tuple[int, int], float] = {}
    prev: dict[tuple[int, int], tuple[int, int] | None] = {}
    for k, c in enumerate(cands):
        for j, (p, _) in enumerate(c):
            best[(k, j)], prev[(k, j)] = 1.0, None
            for kk in range(max(0, k - max_skip), k):
                for jj, (pp, _) in enumerate(cands[kk]):
                    d = float(np.linalg.norm(p - pp))
                    if d <= 4.0 + 1.5 * (k - kk) * dz_mm:
                        score = best[(kk, jj)] + 1.0 - 0.15 * d / dz_mm - 0.1 * (k - kk - 1)
                        if score > best[(k, j)]:
                            best[(k, j)], prev[(k, j)] = score, (kk, jj)
    if not best:
        return []
    node: tuple[int, int] | None = max(best, key=best.__getitem__)
    chain = []
    while node is not None:
        chain.append(node)
        node = prev[node]
    return chain[::-1]


def trace_canal(ct: Volume) -> tuple[NDArray[np.float64], float]:
    """Canal centre points (M, 3) in LPS mm, one per coarse slice of the chain, and the share
    of the chain's slices that had an enclosed canal.

    Raises
    ------
    SpinenavError
        If no canal-like tube is found (no spine in view, or not a CT).
    """
    shape, affine = _lps_grid(ct, 2.0)
    coarse = resample_to_grid(ct, shape, affine)
    cands = _canal_candidates(coarse)
    chain = _longest_chain(cands, 2.0)
    z_span_mm = (chain[-1][0] - chain[0][0]) * 2.0 if chain else 0.0
    if len(chain) < 8 or z_span_mm < 30.0:
        raise SpinenavError(
            "no spinal canal found: no bone-enclosed low-density tube runs over >= 30 mm of the "
            f"CT (longest found: {z_span_mm:.0f} mm); is the spine in the field of view, and is "
            "this a CT in Hounsfield units?")
    pts = np.array([[*(cands[k][j][0] + affine[:2, 3]), k * 2.0 + affine[2, 3]] for k, j in chain])
    coverage = len(chain) / (chain[-1][0] - chain[0][0] + 1)
    return pts, float(coverage)


def _disc_between(lo_p: int, hi_p: int, profile: NDArray, ped_signal: NDArray, *,
                  upto: float = 0.5) -> tuple[float, float]:
    """The disc between the pedicle levels lo_p < hi_p (indices along the canal): just above
    the lower vertebra's pedicles, where a dark band lies between two bright endplates.
    `upto` is how far up the interval to look, as a fraction of it.
    Returns (position, contrast in HU: the darker of the two endplate-to-disc drops)."""
    nz = len(profile)
    pitch = hi_p - lo_p
    w = max(3, int(round(0.2 * pitch)))
    cand = np.arange(lo_p + 1, lo_p + int(upto * pitch) + 1)
    cand = cand[(cand - w >= 0) & (cand + w + 1 <= nz)]
    if len(cand) == 0:
        return float(lo_p + 0.4 * pitch), 0.0
    dark = np.array([min(profile[s - w:s].max(), profile[s + 1:s + w + 1].max()) - profile[s]
                     for s in cand])
    score = dark / (max(dark.max(), 0.0) + 1e-6) + (1.0 - ped_signal[cand])
    best = int(np.argmax(score))
    return float(cand[best]), float(dark[best])


def _vertebrae_from_peaks(peaks: list[int], ped_signal: NDArray, profile: NDArray
                          ) -> tuple[list[int], list[float], list[float], bool]:
    """Turn pedicle-signal peaks into one peak per vertebra, the discs between, and whether the
    caudal end is a sacrum.

    * A pitch under 0.7 x its neighbours' pitches means one of its two peaks is not a pedicle (an
      articular process, a sacral ala): drop the one whose removal leaves the stronger disc.
    * A pitch over 1.6 x its neighbours' means a missed vertebra: the best signal maximum in
      its middle is added.
    * A caudal run of continuous lateral bone (>= 18 mm above 0.9) is the sacral block; the
      peak above it joins it when no disc separates them (S1 is fused to the sacrum).
    """
    def discs_of(pk: list[int]) -> tuple[list[float], list[float]]:
        pairs = [_disc_between(a, b, profile, ped_signal) for a, b in zip(pk[:-1], pk[1:])]
        return [d for d, _ in pairs], [c for _, c in pairs]

    pk = sorted(peaks)
    # the sacral block: continuous lateral bone at the caudal end of the trace
    strong = ped_signal >= 0.9
    block_peak: int | None = None
    if pk and strong[pk[0]]:
        lo = hi = pk[0]
        while lo > 0 and strong[lo - 1]:
            lo -= 1
        while hi + 1 < len(strong) and strong[hi + 1]:
            hi += 1
        if hi - lo >= 18:
            block_peak = pk.pop(0)
    while len(pk) >= 3:
        pitches = np.diff(pk).astype(float)
        # each pitch against its neighbours' (vertebrae shrink from lumbar ~35 mm to cervical ~15)
        ratio = np.array([pitches[i] / np.median(np.r_[pitches[max(0, i - 2):i], pitches[i + 1:i + 3]])
                          for i in range(len(pitches))])
        i = int(np.argmin(ratio))
        if ratio[i] >= 0.7:
            break
        options = []
        for drop in (i, i + 1):
            trial = pk[:drop] + pk[drop + 1:]
            _, contrast = discs_of(trial)
            j = min(drop, len(trial) - 1)
            near = [contrast[m] for m in (j - 1, j) if 0 <= m < len(contrast)]
            options.append((min(near) if near else -np.inf, drop))
        pk.pop(max(options)[1])
    # a pitch over 1.6 x its neighbours' means a missed vertebra (a weak pedicle signal where
    # scoliosis tilts the pedicles out of the rays): take the best maximum in its middle
    tried: set[tuple[int, int]] = set()
    for _ in range(len(pk)):
        if len(pk) < 3:
            break
        pitches = np.diff(pk).astype(float)
        ratio = np.array([pitches[i] / np.median(np.r_[pitches[max(0, i - 2):i], pitches[i + 1:i + 3]])
                          for i in range(len(pitches))])
        ratio[[i for i in range(len(pk) - 1) if (pk[i], pk[i + 1]) in tried]] = 0.0
        i = int(np.argmax(ratio))
        if ratio[i] <= 1.6:
            break
        tried.add((pk[i], pk[i + 1]))
        lo, hi = pk[i] + int(0.2 * pitches[i]), pk[i + 1] - int(0.2 * pitches[i])
        inner = np.arange(lo, hi)
        local = inner[(ped_signal[inner] >= ped_signal[np.clip(inner - 1, 0, None)])
                      & (ped_signal[inner] >= ped_signal[np.clip(inner + 1, None, len(ped_signal) - 1)])]
        if len(local) == 0:
            continue
        new = int(local[np.argmax(ped_signal[local])])
        _, base_contrast = discs_of(pk)
        trial = sorted(pk + [new])
        _, trial_contrast = discs_of(trial)
        j = trial.index(new)
        new_contrast = min(trial_contrast[j - 1], trial_contrast[j])
        baseline = float(np.median(base_contrast))
        neighbour_pitch = float(np.median(np.r_[pitches[max(0, i - 2):i], pitches[i + 1:i + 3]]))
        if baseline >= 100.0:  # discs are visible: the new vertebra must have a disc each side
            accept = new_contrast >= 0.25 * baseline
        else:  # discs barely visible (osteoporotic bone): rely on a regular pitch
            accept = min(new - pk[i], pk[i + 1] - new) >= 0.6 * neighbour_pitch
        if accept:
            pk = trial
    sacrum = block_peak is not None
    if sacrum and pk:
        _, mobile_contrast = discs_of(pk)
        # the block's own peak lies deep in the sacrum: look for L5-S1 over the whole interval
        _, c_first = _disc_between(block_peak, pk[0], profile, ped_signal, upto=0.9)
        baseline = float(np.median(mobile_contrast)) if mobile_contrast else 0.0
        if c_first >= 0.25 * baseline:
            # a disc between the block and the first pedicles: that is L5; the block is S1 + sacrum
            pk = [block_peak] + pk
        # else: no disc, the first pedicles are S1's, fused to the block below them
    discs, contrast = discs_of(pk)
    if sacrum and block_peak is not None and pk and pk[0] == block_peak and len(pk) >= 2:
        discs[0], contrast[0] = _disc_between(pk[0], pk[1], profile, ped_signal, upto=0.9)
    return pk, discs, contrast, bool(sacrum)


# ------------------------------------------------------------------------------ main route
def _place_faint_discs(peaks: list[int], discs: list[float], contrast: list[float]) -> list[float]:
    """Discs whose dark band is too faint to locate (contrast < DISC_FAINT_HU: thin thoracic
    discs, noise) are put where this spine's clearly seen discs lie relative to the pedicles
    below and above them (median fraction of the pitch; 0.28 when none is clear)."""
    fracs = [(d - peaks[n]) / (peaks[n + 1] - peaks[n]) for n, (d, c) in enumerate(zip(discs, contrast))
             if c >= DISC_CLEAR_HU and n + 1 < len(peaks)]
    frac = float(np.median(fracs)) if fracs else 0.28
    out = list(discs)
    for n, (d, c) in enumerate(zip(discs, contrast)):
        if c < DISC_FAINT_HU and n + 1 < len(peaks):
            out[n] = float(peaks[n] + frac * (peaks[n + 1] - peaks[n]))
    return out


def _fit_disc_plane(sm: NDArray, centre: NDArray, t: NDArray, u: NDArray, v: NDArray,
                    half_window_mm: float) -> tuple[NDArray[np.float64], int]:
    """The disc's mid-surface across the body, as a plane: its offset along `t` (mm from
    `centre`) and its slopes along `u` and `v`, fitted to the darkest point of the profile
    along `t` in each column of the body in front of the canal (|u| <= 12 mm, v 8-36 mm).

    Columns count only where the dark band lies between two brighter endplates (>=
    DISC_PLANE_MIN_DIP_HU each side). Returns (a, b_u, b_v) with the surface at
    t = a + b_u u + b_v v, and how many columns supported it (0: too few; (0, 0, 0) returned).
    """
    ss = np.arange(-half_window_mm - 4.0, half_window_mm + 4.0 + 0.25, 0.5)
    uu, vv = np.meshgrid(np.arange(-12.0, 12.1, 2.0), np.arange(8.0, 36.1, 2.0), indexing="ij")
    uu, vv = uu.ravel(), vv.ravel()
    pts = (centre[None, None, :] + ss[None, :, None] * t + (uu[:, None, None] * u + vv[:, None, None] * v))
    prof = ndi.map_coordinates(sm, pts.reshape(-1, 3).T, order=1, mode="nearest").reshape(len(uu), len(ss))
    inner = np.flatnonzero(np.abs(ss) <= half_window_mm)
    rows = []
    for c in range(len(uu)):
        m = inner[int(np.argmin(prof[c, inner]))]
        below, above = prof[c, max(m - 8, 0):m], prof[c, m + 1:m + 9]
        if len(below) == 0 or len(above) == 0:
            continue
        dip = min(below.max(), above.max()) - prof[c, m]
        if dip >= DISC_PLANE_MIN_DIP_HU:
            rows.append((uu[c], vv[c], ss[m], dip))
    if len(rows) < DISC_PLANE_MIN_COLUMNS:
        return np.zeros(3), 0
    r = np.array(rows)
    A = np.column_stack([np.ones(len(r)), r[:, 0], r[:, 1]])
    keep = np.ones(len(r), bool)
    coef = np.zeros(3)
    for _ in range(3):  # least squares, dropping columns off the plane (a rib head, an osteophyte)
        if keep.sum() < DISC_PLANE_MIN_COLUMNS:
            return np.zeros(3), 0
        coef = np.linalg.lstsq(A[keep] * r[keep, 3:4], r[keep, 2] * r[keep, 3], rcond=None)[0]
        res = np.abs(A @ coef - r[:, 2])
        keep = res <= max(1.5, 2.0 * float(np.median(res[keep])))
    return coef, int(keep.sum())


def _fill_marrow(labels: NDArray, n_vert: int, cz: NDArray, canal_zone: NDArray, sm: NDArray) -> None:
    """Fill each vertebra's marrow, slice by slice, in place.

    The marrow is the hole inside the cortical ring; the ring is often open at the back, where
    the basivertebral veins leave the body, so the ring is first closed with a 3 mm disk (the
    foramen is a few mm wide). The hole that holds the canal's centre is never filled, nor
    voxels of the canal zone or darker than fat-free marrow can be (< -50 HU).
    """
    disk3 = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3.0
    objects = ndi.find_objects(labels)
    for n in range(1, n_vert + 1):
        if n - 1 >= len(objects) or objects[n - 1] is None:
            continue
        sl = tuple(slice(max(b.start - 3, 0), b.stop + 3) for b in objects[n - 1])
        sub = labels[sl]
        m = ndi.binary_closing(sub == n, iterations=1)
        for kk in range(m.shape[2]):
            kz = kk + sl[2].start
            ci, cj = int(round(cz[kz, 0])) - sl[0].start, int(round(cz[kz, 1])) - sl[1].start
            add = np.zeros(m.shape[:2], bool)
            for closed in (m[:, :, kk], ndi.binary_closing(m[:, :, kk], structure=disk3)):
                f = ndi.binary_fill_holes(closed) & ~closed
                hl, _ = ndi.label(f)
                if 0 <= ci < f.shape[0] and 0 <= cj < f.shape[1] and hl[ci, cj]:
                    f[hl == hl[ci, cj]] = False
                add |= f
            m[:, :, kk] |= add & (sm[sl][:, :, kk] > -50)
        # the marrow left open in every axial slice (a wide basivertebral foramen, a posterior
        # wall thinner than the grid) is still enclosed in 3D: by the endplates above and
        # below in sagittal and coronal planes
        for axis in (0, 1):
            closed = np.moveaxis(m, axis, 0)
            for ii in range(closed.shape[0]):
                f = ndi.binary_fill_holes(closed[ii]) & ~closed[ii]
                closed[ii] |= f
        sub[m & (sub == 0) & ~canal_zone[sl] & (sm[sl] > -50)] = n


def _keep_largest_piece(labels: NDArray, ids: list[int], other: int) -> None:
    """Give every piece of each vertebra in `ids` but its largest (26-connected) to "other",
    in place.

    A vertebra is one bone: pieces the watershed and the hole filling leave apart from it are
    something else: a contrast-filled vessel beside the body, a rib head cut off at its joint, a
    fragment of the neighbour across a disc (the sacrum, several fused pieces and the coccyx, is
    not passed here).
    """
    objects = ndi.find_objects(labels)
    for n in ids:
        if n - 1 >= len(objects) or objects[n - 1] is None:
            continue
        sub = labels[objects[n - 1]]
        comp, k = ndi.label(sub == n, structure=np.ones((3, 3, 3), bool))
        if k < 2:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        sub[(comp > 0) & (comp != int(sizes.argmax()))] = other


def _split_rib_heads(labels: NDArray, other: int, ribs: NDArray, sm: NDArray, u_img: NDArray,
                     rib_sides: list[list[bool]], *, v_img: NDArray | None = None) -> None:
    """Give a rib's head and neck back to the rib, in place, on the sides where a rib was found.

    The vertebra (from its part within RIB_SPLIT_CORE_MM of the midline) and the rib (its shaft,
    already "other") are flooded again over the vertebra's lateral bone, on the CT's intensity:
    bright bone floods first and the two floods meet in the darkest gap between them, the
    costovertebral and costotransverse joints. Darkest relative to the bone around it: the joint
    dips below the 3 mm grey closing, and that dip (weighted by RIB_SPLIT_DIP_WEIGHT) dominates
    the relief, so a transverse process's dim trabecular tip stays with the vertebra (on the
    chest CT, 2.5 mm slices, the rib's flood on HU alone took T4-T9's tips through the process).
    With `v_img`, only bone in front of the pedicles (the rib's head, at the body's side) is
    split off, never a transverse process.
    """
    for n, (left, right) in enumerate(rib_sides, start=1):
        if not (left or right):
            continue
        m = labels == n
        if not m.any():
            continue
        box = tuple(slice(max(b.start - 20, 0), b.stop + 20) for b in ndi.find_objects(m.astype(np.uint8))[0])
        mb, rb, ub = m[box], ribs[box], u_img[box]
        side_ok = ((ub < 0) & left) | ((ub > 0) & right)
        lateral = mb & side_ok & (np.abs(ub) >= RIB_SPLIT_CORE_MM)
        if v_img is not None:
            lateral &= v_img[box] > RIB_NECK_MIN_V_MM
        seeds = rb & side_ok & ~mb
        if not lateral.any() or not seeds.any():
            continue
        markers = np.zeros(mb.shape, np.int32)
        markers[mb & ~lateral] = 1
        markers[seeds] = 2
        smb = sm[box]
        dip = ndi.grey_closing(smb, size=(3, 3, 3)) - smb
        flood = watershed(-smb + RIB_SPLIT_DIP_WEIGHT * dip, markers, mask=mb | seeds)
        lb = labels[box]
        lb[lateral & (flood == 2)] = other


def _cut_rib_necks(labels: NDArray, n_vert: int, other: int, u_img: NDArray, v_img: NDArray, *,
                   sacral: int, sides: list[list[bool]] | None = None) -> None:
    """Give bone lateral to a vertebral body and in front of the pedicles to "other", in place.

    The watershed follows a rib's head and neck into the vertebra they touch (costovertebral
    and costotransverse joints are thinner than the working grid). No part of a vertebra
    lies there: the body ends at its own half-width (97th percentile of |u| at 12-35 mm in
    front of the canal's centre), the transverse processes leave from behind the pedicles.
    The sacrum (its alae lie exactly there) is left alone. `sides` (per vertebra, [left, right])
    limits the cut to those sides.
    """
    objects = ndi.find_objects(labels)
    for n in range(1 + sacral, n_vert + 1):
        if n - 1 >= len(objects) or objects[n - 1] is None:
            continue
        sl = objects[n - 1]
        m = labels[sl] == n
        u, v = u_img[sl], v_img[sl]
        mid = m & (v > 12) & (v < 35)
        if mid.sum() < 200:
            continue
        half_width = float(np.percentile(np.abs(u[mid]), 97))
        if sides is not None:
            # on the rib sides: the body's half-width slice by slice, and its median over the
            # body's height: a rib head joins the body over ~1 cm only (its two demifacets span
            # the disc), the body is 2-3 cm tall, so the median is the body's own width, not the
            # head's reach. (Not before the ribs are found: cutting more there merges the cut
            # pieces with the ribs and changes which ribs are found.)
            per_slice = [float(np.percentile(np.abs(u[:, :, k][mid[:, :, k]]), 97))
                         for k in range(m.shape[2]) if np.count_nonzero(mid[:, :, k]) >= 30]
            if per_slice:
                half_width = float(np.median(per_slice))
        cut = m & (v > RIB_NECK_MIN_V_MM) & (np.abs(u) > half_width + RIB_NECK_MARGIN_MM)
        if sides is not None:  # u < 0 is the patient's left
            cut &= ((u < 0) & sides[n - 1][0]) | ((u > 0) & sides[n - 1][1])
        labels[sl][cut] = other


def _flood_vertebrae(edt: NDArray, sm: NDArray, bone: NDArray, markers: NDArray,
                     mask: NDArray) -> NDArray[np.uint8]:
    """Seeded watershed of the bone `mask` on its negative distance transform `edt`, with joint
    spaces cut at the surface and flooded last.

    Joint spaces (facet joints, the overlapping laminae) are thinner than the working grid's
    blur: they show only as a dip between two cortices, a voxel darker (`sm`, HU) than the grey
    closing over 3 mm (the bright bone on both sides). At the bone's surface (within 2 mm) a
    dip of JOINT_GAP_CUT_HU or more is the partial-volume bridge across the joint and belongs
    to neither bone; deeper dips (over JOINT_GAP_HU) raise the flooding relief, so each
    vertebra's flood fills its own articular processes before the two meet in the joint. On
    the distance transform alone the flood that reaches a tight joint first crosses it (a
    superior articular process took the inferior one of the vertebra above, and its pars).
    `markers` is changed in place (no seed in a cut joint).
    """
    dip = ndi.grey_closing(sm, size=(3, 3, 3)) - sm
    gap = (dip > JOINT_GAP_CUT_HU) & (edt < 2.0) & bone
    mask = mask & ~gap
    markers[gap] = 0
    relief = -edt + np.clip(dip - JOINT_GAP_HU, 0.0, None) / JOINT_GAP_HU_PER_MM
    return watershed(relief, markers, mask=mask).astype(np.uint8)


def _peak_centre(signal: NDArray, k: int, valid: NDArray[np.bool_], *, half_window: int = 15) -> float:
    """Sub-sample centre of the signal's peak at index k: the middle of its span above half its
    height over the lowest value within `half_window` samples (linearly interpolated ends), at
    most one sample from k. k itself where that window leaves the `valid` samples (a peak at
    the end of the trace, whose span the cut-off would shorten)."""
    n = len(signal)
    if k - half_window < 0 or k + half_window + 1 > n or not valid[k - half_window:k + half_window + 1].all():
        return float(k)
    level = 0.5 * (signal[k] + signal[k - half_window:k + half_window + 1].min())
    lo = hi = k
    while lo > 0 and signal[lo - 1] > level:
        lo -= 1
    while hi < n - 1 and signal[hi + 1] > level:
        hi += 1
    left = lo - (signal[lo] - level) / max(signal[lo] - signal[lo - 1], 1e-6) if lo > 0 else float(lo)
    right = hi + (signal[hi] - level) / max(signal[hi] - signal[hi + 1], 1e-6) if hi < n - 1 else float(hi)
    return float(np.clip(0.5 * (left + right), k - 1.0, k + 1.0))


def segment_builtin(ct: Volume, *, progress: ProgressCallback | None = None) -> BuiltinSegmentation:
    """Segment the vertebrae of `ct` (HU) without model weights; see the module docstring.

    Returns
    -------
    BuiltinSegmentation
        Ordinal labels on a 1 mm LPS working grid around the spine and the trace of every stage.
    """
    import time

    report = progress or (lambda step, frac: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    warnings_: list[str] = []

    def tick(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 3)

    report("tracing the spinal canal", 0.0)
    canal_pts, coverage = trace_canal(ct)
    tick("canal")

    # 2. working grid around the canal
    report("resampling the spine region", 0.15)
    lo = np.array([canal_pts[:, 0].min() - 75, canal_pts[:, 1].min() - 80,
                   canal_pts[:, 2].min() - SACRAL_EXTRAPOLATE_MM - 4])
    hi = np.array([canal_pts[:, 0].max() + 75, canal_pts[:, 1].max() + 65, canal_pts[:, 2].max() + 8])
    shape, affine = _lps_grid(ct, WORK_SPACING_MM, lo, hi)
    work = resample_to_grid(ct, shape, affine)
    a = work.array.astype(np.float32)
    nz = shape[2]
    zs = affine[2, 3] + np.arange(nz) * WORK_SPACING_MM
    canal_w = np.column_stack([np.interp(zs, canal_pts[:, 2], canal_pts[:, 0]),
                               np.interp(zs, canal_pts[:, 2], canal_pts[:, 1]), zs])
    canal_w[:, :2] = ndi.gaussian_filter1d(canal_w[:, :2], 4.0, axis=0)
    cz = work.index_from_world(canal_w)  # (nz, 3) index coordinates, = mm on this grid
    inside_z = (zs >= canal_pts[:, 2].min() - 2) & (zs <= canal_pts[:, 2].max() + 2)
    tg = np.gradient(ndi.gaussian_filter1d(cz, 3.0, axis=0), axis=0)
    tg /= np.linalg.norm(tg, axis=1, keepdims=True)
    U = np.cross(tg, [0.0, 1.0, 0.0])
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    V = np.cross(tg, U)  # anterior (index j grows posterior on an LPS grid)
    tick("grid")

    # 3. bone mask
    report("bone mask", 0.3)
    sm = ndi.gaussian_filter(a, 0.6)
    sm1 = ndi.gaussian_filter(a, 1.0)
    # the canal's contents, for every voxel: within 7 mm of the traced centre line and darker
    # than bone; no hole filling may add them to a vertebra
    centre_line = np.zeros(shape, bool)
    cidx = np.clip(np.round(cz).astype(int), 0, np.array(shape) - 1)
    centre_line[cidx[inside_z, 0], cidx[inside_z, 1], cidx[inside_z, 2]] = True
    canal_zone_img = (ndi.distance_transform_edt(~centre_line) < CANAL_ZONE_MM) & (sm < 150)
    vessel = ndi.binary_opening((sm > 150) & (_local_sd(a, 3) < 35), iterations=2)
    vessel = ndi.binary_dilation(vessel, iterations=2)
    raw = apply_hysteresis_threshold(np.where(vessel, 0, sm1), BONE_WEAK_HU, BONE_STRONG_HU)
    disk2 = np.hypot(*np.mgrid[-2:3, -2:3]) <= 2
    bone = raw.copy()
    interior = np.zeros_like(raw)
    enclosed = np.zeros_like(raw)
    for k in range(nz):
        b = ndi.binary_closing(raw[:, :, k], structure=disk2)
        enclosed[:, :, k] = ndi.binary_fill_holes(b)
        holes = enclosed[:, :, k] & ~raw[:, :, k]
        hl, _ = ndi.label(holes)
        ci, cj = np.round(cz[k, :2]).astype(int)
        if 0 <= ci < shape[0] and 0 <= cj < shape[1] and hl[ci, cj]:
            holes[hl == hl[ci, cj]] = False
        holes &= (sm1[:, :, k] > -60) & ~canal_zone_img[:, :, k]
        bone[:, :, k] |= holes
        interior[:, :, k] = holes
    vessel_zone = ndi.binary_dilation(
        ndi.binary_opening((sm > 150) & (_local_sd(a, 5) < VESSEL_SD_HU), iterations=2), iterations=4)
    # what the cortex encloses is marrow, never a vessel: in a noisy CT (or one resampled with
    # interpolation, which lowers the noise) the marrow is as homogeneous as a vessel, and only
    # part of it is taken out of `raw` above and filled back as a hole; the rest would be cut
    # here (phantom, 60 HU noise: the sacral alae were lost to the pelvis so)
    bone &= ~(vessel_zone & (sm < 450) & ~enclosed)
    sm05 = ndi.gaussian_filter(a, 0.5)
    # the outer surface at the local half-maximum between the nearby cortex and soft tissue
    local_max = ndi.maximum_filter(sm05, size=5)
    surface_hu = np.clip(0.5 * (local_max + SOFT_TISSUE_HU), SURFACE_HU_RANGE[0], SURFACE_HU_RANGE[1])
    bone &= (sm05 > surface_hu) | ndi.binary_erosion(bone, iterations=2) | interior
    tick("bone")

    # canal frame for every bone voxel
    report("canal frame", 0.45)
    ijk = np.argwhere(bone).astype(np.float32)
    tree = cKDTree(cz)
    _, near = tree.query(ijk, workers=-1)
    rel = ijk - cz[near]
    s_b = near + np.einsum("ij,ij->i", rel, tg[near])
    u_b = np.einsum("ij,ij->i", rel, U[near])
    v_b = np.einsum("ij,ij->i", rel, V[near])
    tick("frame")

    # 4. pedicles
    report("pedicles and discs", 0.55)
    theta = np.linspace(-PEDICLE_SPREAD_RAD, PEDICLE_SPREAD_RAD, 7)
    radii = np.arange(4.0, PEDICLE_RAY_MM, 0.5)
    lateral = np.zeros(nz)
    for k in range(nz):
        hits = []
        for side in (1.0, -1.0):
            dirs = side * (np.cos(theta)[:, None] * U[k] + np.sin(theta)[:, None] * V[k])
            pts = cz[k] + radii[None, :, None] * dirs[:, None, :]
            vals = ndi.map_coordinates(sm, pts.reshape(-1, 3).T, order=1).reshape(len(theta), len(radii))
            hits.append((vals > PEDICLE_HU).any(axis=1).mean())
        lateral[k] = min(hits)
    # below the trace's caudal end the canal is taken as straight on: the sacral canal is often
    # too flat to be traced as an enclosed hole to its end, and a sacral block cut short by the
    # trace would read as a pedicle
    sampled_z = ((zs >= canal_pts[:, 2].min() - SACRAL_EXTRAPOLATE_MM)
                 & (zs <= canal_pts[:, 2].max() + 2))
    lateral[~sampled_z] = 0.0
    ped_signal = ndi.gaussian_filter1d(lateral, 1.0)
    peaks, _ = find_peaks(ped_signal, distance=10, prominence=0.2)
    if len(peaks) < 1:
        raise SpinenavError("no vertebra found along the spinal canal (no pedicles detected)")

    # 5. discs: body-axis profile at a fixed depth in front of the canal
    body_axis = cz + V * BODY_PROFILE_DEPTH_MM
    th2 = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    rr2 = np.array([0.0, 2.0, 4.0])
    profile = np.array([
        ndi.map_coordinates(sm, (body_axis[k] + (rr2[:, None, None] * (
            np.cos(th2)[None, :, None] * U[k] + np.sin(th2)[None, :, None] * V[k])).reshape(-1, 3)).T,
            order=1).mean() for k in range(nz)])
    peaks, discs, disc_contrast, sacrum = _vertebrae_from_peaks(list(peaks), ped_signal, profile)
    discs = _place_faint_discs(peaks, discs, disc_contrast)
    tick("levels")

    # 6. seeds and watershed
    report("separating vertebrae", 0.7)
    n_vert = len(peaks)
    other = n_vert + 1
    edt = ndi.distance_transform_edt(bone)
    edt_b = edt[bone]
    seed_b = np.zeros(len(s_b), np.int32)
    for n, p in enumerate(peaks):
        below = discs[n - 1] if n > 0 else -np.inf
        above = discs[n] if n < len(discs) else np.inf
        pitch = (peaks[n] - peaks[n - 1]) if n > 0 else (peaks[1] - peaks[0] if n_vert > 1 else 25.0)
        body = ((s_b > below + 2.5) & (s_b < above - 2.5) & (np.abs(u_b) < 20) & (v_b > 5)
                & (v_b < 60) & (edt_b >= 1.5))
        ped = (np.abs(s_b - p) <= 2) & (np.abs(u_b) > 7) & (np.abs(u_b) < 25) & (v_b > -6) & (v_b < 10)
        lam = ((s_b > p - 0.6 * pitch) & (s_b < p - 0.1 * pitch) & (np.abs(u_b) < LAMINA_SEED_HALF_WIDTH_MM) & (v_b > -16)
               & (v_b < -6) & (edt_b >= 1))
        seed_b[body | ped | lam] = n + 1
    far = ((np.abs(u_b) > OTHER_BONE_LATERAL_MM) | (v_b > OTHER_BONE_ANTERIOR_MM)
           | (v_b < -OTHER_BONE_POSTERIOR_MM))
    seed_b[far & (seed_b == 0) & (edt_b >= 1.5)] = other
    markers = np.zeros(shape, np.int32)
    markers[bone] = seed_b
    # the disc bands are not bone of either neighbour
    mask = bone.copy()
    disc_band = np.zeros(len(s_b), bool)
    for d in discs:
        disc_band |= (np.abs(s_b - d) < DISC_BAND_HALF_MM) & (np.abs(u_b) < 22) & (v_b > 6) & (v_b < 60)
    canal_zone = (np.hypot(u_b, v_b) < 6)
    drop = (disc_band & (sm[bone] < 250)) | (canal_zone & (sm[bone] < 150))
    mask_b = ~drop
    mask[bone] = mask_b
    markers[~mask] = 0
    labels = _flood_vertebrae(edt, sm, bone, markers, mask)
    # the body's part next to each disc: split by the disc's own (tilted) mid-surface, fitted where
    # the disc shows in enough columns of the body (chest CT, 2.5 mm slices: 6 of 15 discs, tilted
    # 0.03-0.17 mm per mm forward), else this spine's median tilt (chest median Dice 0.843 -> 0.849,
    # T4-T11 +0.004-0.019; phantom unchanged)
    lab_b = labels[bone]
    sm_b = sm[bone]
    fits = []
    for n, d in enumerate(discs):
        pitch = float(peaks[n + 1] - peaks[n])
        di = int(np.clip(round(d), 0, nz - 1))
        centre = cz[di] + (d - di) * tg[di]
        coef, support = _fit_disc_plane(sm1, centre, tg[di], U[di], V[di], min(6.0, 0.25 * pitch))
        ok = (support > 0 and not (sacrum and n == 0) and abs(coef[0]) <= DISC_PLANE_MAX_OFFSET_MM
              and np.abs(coef[1:]).max() <= DISC_PLANE_MAX_SLOPE)
        fits.append((centre, di, pitch, coef, ok))
    # discs too faint to fit take this spine's median forward tilt, pivoting on the body's axis
    # where they were found
    tilts = [f[3][2] for f in fits if f[4]]
    tilt = float(np.median(tilts)) if len(tilts) >= 3 else 0.0
    for n, (centre, di, pitch, coef, ok) in enumerate(fits):
        if sacrum and n == 0:
            continue
        if not ok:
            coef = np.array([-tilt * BODY_PROFILE_DEPTH_MM, 0.0, tilt])
        lo_id, hi_id = n + 1, n + 2
        b_u, b_v = coef[1:]
        normal = tg[di] - b_u * U[di] - b_v * V[di]
        normal /= np.linalg.norm(normal)
        dist = (ijk - (centre + coef[0] * tg[di])) @ normal
        zone = ((np.abs(dist) < 0.4 * pitch) & (v_b > 4.0) & (np.abs(u_b) < 25.0)
                & ((lab_b == lo_id) | (lab_b == hi_id)))
        lab_b[zone] = np.where(dist[zone] > 0, hi_id, lo_id)
        lab_b[zone & (np.abs(dist) < DISC_BAND_HALF_MM) & (sm_b < 250)] = 0
    labels[bone] = lab_b
    tick("watershed")

    # 7. clean-up per vertebra
    report("cleaning up", 0.9)
    u_img = np.zeros(shape, np.float32)
    u_img[bone] = u_b
    v_img = np.zeros(shape, np.float32)
    v_img[bone] = v_b
    _cut_rib_necks(labels, n_vert, other, u_img, v_img, sacral=1 if sacrum else 0)
    _fill_marrow(labels, n_vert, cz, canal_zone_img, sm1)
    tick("cleanup")

    # the sacrum: split S1 (above the S1/S2 plane: perpendicular to S1's axis, one L5 pitch below
    # the L5-S1 disc) from the rest
    kinds = ["vertebra"] * n_vert
    if sacrum and n_vert >= 2:
        # the lumbar pitch as arc length along the canal (the peaks are axial slice indices,
        # shorter than the pitch where the lumbosacral canal leans forward): the median of the
        # lowest (up to three) mobile pitches, L5-L4 upwards. L5's own pitch alone is lengthened
        # by a slipped L4 (phantom, 8 mm L4 slip: S1 Dice 0.897 so, 0.985 with the median)
        p_lo, p_hi = (peaks[1], peaks[2]) if n_vert >= 3 else (peaks[0], peaks[1])
        first = 1 if n_vert >= 3 else 0
        # (between the peaks' sub-millimetre centres: the pedicle signal saturates over a plateau
        # 5-10 mm long whose integer middle is up to 0.5 mm off; phantom T10-S1, 60 HU noise,
        # seed 1: pitch 34.1 -> 33.6 mm (S1 inferior endplate 32.7 mm below the disc), S1 Dice
        # 0.949 -> 0.956; no sacral variant lower by more than 0.004)
        cum = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(cz, axis=0), axis=1))]
        pk_f = [_peak_centre(ped_signal, int(k), sampled_z) for k in peaks]
        arc = [float(np.interp(b, np.arange(nz), cum) - np.interp(a, np.arange(nz), cum))
               for a, b in zip(pk_f[first:first + 3], pk_f[first + 1:first + 4])]
        l5_pitch_mm = float(np.median(arc))
        # from the L5-S1 disc's middle to the S1/S2 junction: half that disc, S1's body (about
        # as tall as L5's: 30 mm anteriorly [L4L5-ANAT]) and half the rudimentary S1/S2 disc,
        # i.e. about one L5 pitch (body + disc)
        d = int(np.clip(round(discs[0]), 0, nz - 1))
        # the S1/S2 junction is S1's inferior endplate: perpendicular to S1's own long axis, not
        # to the canal at the disc (which bends there by the lumbosacral angle). The canal runs
        # along S1's posterior wall, so its chord through S1's upper half (the disc down to half
        # a pitch below it) is S1's axis; lower down the sacral canal curves back with the
        # sacral kyphosis
        d_mid = int(np.clip(round(discs[0] - 0.5 * (p_hi - p_lo)), 0, nz - 1))
        s1_axis = cz[d] - cz[d_mid]
        s1_axis = s1_axis / np.linalg.norm(s1_axis) if np.linalg.norm(s1_axis) > 0 else tg[d]
        # a plane through the disc on the body's axis
        disc_point = cz[d] + V[d] * BODY_PROFILE_DEPTH_MM
        sac = labels == 1
        sac_idx = np.argwhere(sac)
        below = (sac_idx - disc_point) @ s1_axis < -l5_pitch_mm
        rest = np.zeros(shape, bool)
        rest[tuple(sac_idx[below].T)] = True
        labels[rest] = 0  # temporarily
        labels[labels >= 1] += 1  # make room: 1 = sacrum below S1, 2 = S1, 3.. = L5 upwards
        labels[rest] = 1
        other += 1
        n_vert += 1
        kinds = ["sacrum", "S1"] + ["vertebra"] * (n_vert - 2)
        peaks = [peaks[0]] + list(peaks)
        discs = [None] + list(discs)  # type: ignore[list-item]
        disc_contrast = [None] + list(disc_contrast)  # type: ignore[list-item]

    # ribs: thin "other" bone reaching far laterally that touches a vertebra at its side
    other_mask = labels == other
    comp, n_comp = ndi.label(other_mask)
    rib_comp = np.zeros(n_comp + 1, bool)
    split_comp = np.zeros(n_comp + 1, bool)
    if n_comp:
        idx = np.arange(1, n_comp + 1)
        reach = ndi.maximum(np.abs(u_img), comp, idx)
        thick = ndi.maximum(edt, comp, idx)
        size = ndi.sum(other_mask, comp, idx)
        rib_comp[1:] = (reach >= RIB_REACH_MM) & (thick <= RIB_MAX_HALF_THICKNESS_MM) & (size >= 300)
        # a pair of ribs joined in front through the sternum (the first ribs with the manubrium
        # and the clavicles, by calcified cartilage): thick, and far out on both sides; no use
        # for naming, but their heads are split off all the same
        both_sides = ((ndi.minimum(u_img, comp, idx) <= -RIB_REACH_MM)
                      & (ndi.maximum(u_img, comp, idx) >= RIB_REACH_MM))
        split_comp[1:] = rib_comp[1:] | (both_sides & (size >= 300))
    # each rib belongs to the vertebra at its medial end (a rib passing a transverse process
    # further along its shaft does not make that vertebra rib-bearing)
    rib_sides = [[False, False] for _ in range(n_vert)]
    # where a rib's head or neck is split off: every side a rib touches, including ribs merged
    # with their neighbours or the scapula across thick slices (no use for naming, but a rib all
    # the same: thin, long, lateral)
    split_sides = [[False, False] for _ in range(n_vert)]
    merged_sides = [[False, False] for _ in range(n_vert)]  # touched by ribs joined in front only
    boxes = ndi.find_objects(comp)
    for c in np.flatnonzero(split_comp):
        box = tuple(slice(max(sl.start - 6, 0), sl.stop + 6) for sl in boxes[c - 1])
        comp_c, u_c, lab_c = comp[box] == c, u_img[box], labels[box]
        for side, sign in ((0, -1.0), (1, 1.0)):  # 0 = patient left (u < 0), 1 = right
            part = comp_c & (u_c * sign > 0)
            if part.sum() < 50:
                continue
            near = (ndi.binary_dilation(part, iterations=3) & (lab_c >= 1) & (lab_c <= n_vert)
                    & (np.abs(u_c) >= RIB_SPLIT_CORE_MM))
            for owner in np.flatnonzero(np.bincount(lab_c[near], minlength=n_vert + 1) >= 5):
                if owner >= 1:
                    (split_sides if rib_comp[c] else merged_sides)[owner - 1][side] = True
            if not rib_comp[c]:
                continue
            medial_u = np.abs(u_c[part]).min()
            crosses_midline = bool(np.any(comp_c & (u_c * sign < -3.0)))
            if not (RIB_HEAD_U_MM[0] <= medial_u <= RIB_HEAD_U_MM[1]) or crosses_midline \
                    or part.sum() > RIB_MAX_VOXELS_1MM:
                continue  # a rib shaft passing by, merged cartilage, or not a rib at all
            end = part & (np.abs(u_c) <= medial_u + 8.0)
            touch = ndi.binary_dilation(end, iterations=3) & (lab_c >= 1) & (lab_c <= n_vert)
            if touch.sum() >= 5:
                owner = int(np.bincount(lab_c[touch]).argmax())
                rib_sides[owner - 1][side] = True

    # again on the rib sides, after the hole filling (it closes the gap between a body and a rib
    # head): only in front of the pedicles, as for every vertebra. The thoracic transverse
    # processes leave from beside the canal's centre; the rib's neck, reaching back to them, is
    # split off at the costotransverse joint by intensity (_split_rib_heads)
    _cut_rib_necks(labels, n_vert, other, u_img, v_img, sacral=2 if kinds[0] == "sacrum" else 0,
                   sides=rib_sides)
    _split_rib_heads(labels, other, np.isin(comp, np.flatnonzero(rib_comp)), sm, u_img,
                     [[a or b for a, b in zip(r, t)] for r, t in zip(rib_sides, split_sides)])
    # ribs joined through the sternum: across thick slices their flood also takes transverse
    # processes at the costotransverse joints, so only their heads, in front of the pedicles
    _split_rib_heads(labels, other, np.isin(comp, np.flatnonzero(split_comp & ~rib_comp)), sm, u_img,
                     merged_sides, v_img=v_img)
    _keep_largest_piece(labels, [n + 1 for n in range(n_vert) if kinds[n] != "sacrum"], other)
    verts = []
    counts = np.bincount(labels.ravel(), minlength=other + 1)
    # voxels of the working grid outside the CT (or on the grid's border) mark a cut vertebra
    corners_idx = ct.index_from_world(work.world_from_index(np.argwhere(np.ones((2, 2, 2))) * (np.array(shape) - 1)))
    outside_ct = np.zeros(shape, bool)
    if np.any(corners_idx < -0.5) or np.any(corners_idx > np.array(ct.shape) - 0.5):
        ijk_all = np.indices(shape, dtype=np.float32).reshape(3, -1).T
        idx = ct.index_from_world(work.world_from_index(ijk_all))
        outside_ct = np.any((idx < -0.5) | (idx > np.array(ct.shape) - 0.5), axis=1).reshape(shape)
        outside_ct = ndi.binary_dilation(outside_ct, iterations=2)
    outside_ct[[0, -1], :, :] = outside_ct[:, [0, -1], :] = outside_ct[:, :, [0, -1]] = True
    vboxes = ndi.find_objects(labels)
    for n in range(n_vert):
        box = vboxes[n] if n < len(vboxes) else None
        m = (labels[box] == n + 1) if box is not None else None
        centre = (work.world_from_index(np.array(ndi.center_of_mass(m)) + [b.start for b in box])
                  if box is not None and counts[n + 1] else None)
        p = peaks[n]
        verts.append(VertebraTrace(
            index=n + 1, pedicle_s_mm=float(p), pedicle_strength=float(ped_signal[p]),
            disc_below_s_mm=discs[n - 1] if n > 0 else None,
            disc_above_s_mm=discs[n] if n < len(discs) else None,
            disc_above_contrast_hu=disc_contrast[n] if n < len(disc_contrast) else None,
            centre_world_mm=centre, voxels=int(counts[n + 1]), kind=kinds[n],
            rib_left=rib_sides[n][0], rib_right=rib_sides[n][1],
            touches_fov_edge=bool(box is not None and np.any(m & outside_ct[box]))))
    tick("evidence")
    if coverage < 0.3:  # lumbar canals are enclosed ~40% of their length (pedicles only)
        warnings_.append(f"the spinal canal was enclosed by bone on only {coverage:.0%} of its "
                         "length: the spine trace is uncertain")
    trace = BuiltinTrace(canal_world_mm=canal_w[inside_z], canal_coverage=coverage,
                         vertebrae=verts, sacrum_found=bool(sacrum and kinds[0] == "sacrum"), other_bone_label=other, warnings=warnings_,
                         timings_s=timings)
    report("done", 1.0)
    return BuiltinSegmentation(labels=Volume(labels, affine, modality="SEG", is_label=True,
                                             meta={"units": "label"}), trace=trace)
