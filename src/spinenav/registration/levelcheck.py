"""Level check: which vertebra is under the instrument tip on a C-arm shot?

Method (after LevelCheck, Otake et al. 2012, and Ketcha et al. 2017 [KETCHA17]: register the
CT to the shot, then read the labels under the marker). Hypotheses: the nominal start and the
nominal start shifted by +-1 vertebral spacing along the spine (the classic wrong-level error
is exactly such a shift). For each: (1) the CT's bone (HU >= ``bone_hu``, all levels) is
registered rigidly and locally (+-``search_mm``, less than half a level); (2) every vertebra
in view is then registered on its own from there (+-``level_search_mm``: the spine flexes
between the CT and the table, and a whole-CT rigid fit lets the central vertebra's motion
dominate: on the phantom, a 5 mm motion of L4 made a one-level-shifted rigid fit score
higher than the right one); (3) the hypothesis is scored by the gradient correlation of the
composite (the vertebrae's DRRs, each at its pose) over the whole detector, a score
comparable between hypotheses (each registration's own GC uses a pose-dependent region).
The best score wins; the vertebra whose projected footprint contains the marker is the answer.

Confidence and refusal: the margin between the winner's GC and the best hypothesis that puts a
*different* level under the marker (the runner-up). The check refuses (``ok=False``,
``ambiguous=True``) when the margin is below ``min_margin``, the winner's GC is below the
registration threshold, or the marker lies on no vertebra or on the border of two.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import binary_dilation

from spinenav.anatomy.labels import level_name, level_order
from spinenav.fluoro.carm import project_points, projection_matrix
from spinenav.fluoro.drr import Spectrum, prepare_attenuation, render_line_integrals
from spinenav.imaging.volume import Volume
from spinenav.registration.intensity import (DEFAULT_GC_THRESHOLD, IntensityResult, RegistrationError, ShotView,
                                             VertebraVolume, _downsample, moved_attenuation, prepare_vertebra,
                                             register_vertebra)
from spinenav.registration.incontext import PatientVolume
from spinenav.registration.similarity import gradient_correlation

#: GC margin between the winner and the runner-up below which the level check refuses: on the
#: phantom (benchmarks/bench_register.py) right answers had margins 0.054-0.23 with a 23 cm detector,
#: and one wrong answer (10 cm field, before the per-vertebra step) 0.050. Few trials: to recalibrate.
DEFAULT_MIN_MARGIN = 0.05


@dataclass(frozen=True)
class LevelCheckResult:
    """Result of :func:`check_level`.

    Attributes
    ----------
    level : str or None
        The level under the marker (None when refused).
    runner_up : str or None
        The level the next-best hypothesis puts under the marker.
    best_guess : str or None
        The winning hypothesis' level even when refused (never to be acted on when not ok).
    confidence : float
        GC margin winner - runner-up (0 when refused for another reason).
    ok : bool
    ambiguous : bool
    reason : str
    hypotheses : list of dict
        Per start: shift in levels, GC, level under the marker.
    T_world_from_ct : (4, 4) ndarray
        The winning hypothesis' whole-bone pose (before the per-vertebra refinement).
    level_poses : dict
        The winning hypothesis' per-vertebra T_world_from_ct.
    seconds : float
    """

    level: str | None
    runner_up: str | None
    best_guess: str | None
    confidence: float
    ok: bool
    ambiguous: bool
    reason: str
    hypotheses: list[dict[str, Any]]
    T_world_from_ct: NDArray[np.float64]
    level_poses: dict[str, NDArray[np.float64]]
    seconds: float
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "runner_up": self.runner_up, "best_guess": self.best_guess,
                "confidence_gc_margin": self.confidence, "ok": self.ok, "ambiguous": self.ambiguous,
                "reason": self.reason, "hypotheses": self.hypotheses, "T_world_from_ct": self.T_world_from_ct.tolist(),
                "level_poses_world_from_ct": {k: v.tolist() for k, v in self.level_poses.items()},
                "seconds": self.seconds, "notes": list(self.notes)}


@dataclass(frozen=True, eq=False)
class SpineVolume:
    """The CT's bone and its vertebrae, prepared once for any number of level checks."""

    bone: VertebraVolume
    vertebrae: dict[str, VertebraVolume]
    level_points_ct_mm: dict[str, NDArray[np.float64]]
    level_centroids_ct_mm: dict[str, NDArray[np.float64]]
    axis_cc_ct: NDArray[np.float64]
    spacing_mm: float


def prepare_spine(ct: Volume, labels: Volume, *, bone_hu: float = 200.0, spectrum: Spectrum = Spectrum(),
                  n_points: int = 800) -> SpineVolume:
    """Bone attenuation volume + per-level points of a labelled CT (TotalSegmentator ids).

    Raises
    ------
    RegistrationError
        Fewer than two vertebrae in the label map, or grids differ.
    """
    if labels.shape != ct.shape or not np.allclose(labels.affine, ct.affine, atol=1e-4):
        raise RegistrationError(f"label map grid {labels.shape} does not match the CT grid {ct.shape}")
    lab = np.asarray(labels.array)
    rng = np.random.default_rng(0)
    pts: dict[str, NDArray[np.float64]] = {}
    cents: dict[str, NDArray[np.float64]] = {}
    for lid in np.unique(lab):
        name = level_name(int(lid)) if lid else None
        if name is None:
            continue
        idx = np.argwhere(lab == lid)
        sel = idx[rng.choice(len(idx), size=min(n_points, len(idx)), replace=False)]
        pts[name] = sel @ ct.affine[:3, :3].T + ct.affine[:3, 3]
        cents[name] = ct.affine[:3, :3] @ idx.mean(axis=0) + ct.affine[:3, 3]
    if len(pts) < 2:
        raise RegistrationError(f"the level check needs at least two labelled vertebrae, found {sorted(pts)}")
    order = sorted(cents, key=level_order)
    c = np.array([cents[n] for n in order])
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    axis = c[0] - c[-1]  # cranial: the first (highest) level minus the last
    axis /= np.linalg.norm(axis)
    keep = Volume((lab > 0).astype(np.uint8), ct.affine, is_label=True)
    att = prepare_attenuation(ct, spectrum=spectrum, labels=keep, keep_labels=[1], min_hu=bone_hu)
    allp = np.vstack(list(pts.values()))
    bone = VertebraVolume("spine", att, allp.mean(axis=0), allp[rng.choice(len(allp), min(3000, len(allp)),
                                                                           replace=False)])
    verts = {n: prepare_vertebra(ct, labels, n, spectrum=spectrum) for n in pts}
    return SpineVolume(bone, verts, pts, cents, axis, float(np.median(steps)))


def _composite_gc(spine: SpineVolume, poses: dict[str, NDArray[np.float64]], shot: ShotView,
                  pixel_mm: float) -> float:
    """GC of the sum of the vertebrae's DRRs (each at its pose) with the shot, whole detector."""
    iso_px = min(shot.geometry.pixel_spacing_mm) / shot.geometry.magnification
    lv = _downsample(shot, pixel_mm / iso_px)
    drr = np.zeros_like(lv.fixed)
    for name, T in poses.items():
        drr += render_line_integrals(moved_attenuation(spine.vertebrae[name].attenuation, T), lv.geometry, lv.pose)
    return gradient_correlation(drr, lv.fixed)


def _patient_gc(patient: PatientVolume, T: NDArray[np.float64], shot: ShotView, pixel_mm: float, *,
                bone: bool = True) -> float:
    """GC of the patient's bone above soft tissue (``bone``; else the whole CT) at ``T`` with the
    shot, whole detector."""
    iso_px = min(shot.geometry.pixel_spacing_mm) / shot.geometry.magnification
    lv = _downsample(shot, pixel_mm / iso_px)
    att = patient.bone if bone else patient.full
    return gradient_correlation(render_line_integrals(moved_attenuation(att, T), lv.geometry, lv.pose), lv.fixed)


def _level_at(spine: SpineVolume, poses: dict[str, NDArray[np.float64]], shot: ShotView,
              marker_px: NDArray[np.float64], footprint_px: float) -> tuple[str | None, str, list[str]]:
    """Level whose projected footprint contains the marker; (level, why-not, all containing)."""
    P = projection_matrix(shot.geometry, shot.pose)
    containing = []
    dists = {}
    for name, T_world_from_ct in poses.items():
        p = spine.level_points_ct_mm[name]
        uv = project_points(P, p @ T_world_from_ct[:3, :3].T + T_world_from_ct[:3, 3])
        d = np.linalg.norm(uv - marker_px, axis=1)
        if np.nanmin(d) <= footprint_px:
            containing.append(name)
            cen = spine.level_centroids_ct_mm[name]
            dists[name] = float(np.linalg.norm(project_points(P, T_world_from_ct[:3, :3] @ cen + T_world_from_ct[:3, 3])
                                               - marker_px))
    if not containing:
        return None, "the marker is on no vertebra", containing
    containing.sort(key=lambda n: dists[n])
    if len(containing) > 1 and dists[containing[0]] > 0.8 * dists[containing[1]]:
        return None, (f"the marker is on the border of {containing[0]} and {containing[1]}"), containing
    return containing[0], "", containing


def check_level(spine: SpineVolume, shot: ShotView, marker_px: ArrayLike, *,
                T_init_world_from_ct: ArrayLike | None = None, shifts: Sequence[int] = (-1, 0, 1),
                search_mm: float = 12.0, search_rad: float = math.radians(10.0),
                gc_threshold: float = DEFAULT_GC_THRESHOLD, min_margin: float = DEFAULT_MIN_MARGIN,
                level_search_mm: float = 5.0, level_search_rad: float = math.radians(5.0),
                coarse_pixel_mm: float = 3.0, fine_pixel_mm: float = 1.5, seed: int = 0,
                patient: PatientVolume | None = None) -> LevelCheckResult:
    """Identify the vertebral level under ``marker_px`` = (u, v) pixels on ``shot``.

    ``T_init_world_from_ct``: the nominal pose of the CT in the shot's world frame (default
    identity); ``shifts``: the starting hypotheses, in vertebral spacings along the spine.
    ``patient`` (:func:`~spinenav.registration.incontext.prepare_patient`): register and score
    each hypothesis with ALL the CT's bone above soft tissue (ribs, sternum, pelvis: what makes
    one level's surroundings unlike its neighbours') instead of the spine's bone and each
    vertebra alone; the vertebrae then keep the patient's pose (no per-vertebra step). Soft
    tissue is left out: it moves between the CT and the table.
    """
    t0 = time.perf_counter()
    m = np.asarray(marker_px, dtype=np.float64).reshape(-1)
    if m.shape != (2,) or not np.all(np.isfinite(m)):
        raise RegistrationError(f"marker must be 2 finite pixel coordinates (u, v), got {marker_px!r}")
    g = shot.geometry
    if not (0 <= m[0] <= g.cols - 1 and 0 <= m[1] <= g.rows - 1):
        raise RegistrationError(f"marker ({m[0]:.1f}, {m[1]:.1f}) px is outside the {g.cols} x {g.rows} image")
    T0 = np.eye(4) if T_init_world_from_ct is None else np.asarray(T_init_world_from_ct, dtype=np.float64)
    axis_w = T0[:3, :3] @ spine.axis_cc_ct
    # footprint tolerance: 2 mm at the isocentre
    footprint_px = 2.0 * g.magnification / min(g.pixel_spacing_mm)
    # step 1 moves the spine's bone, or all the patient's bone above soft tissue (soft tissue moves
    # between the CT and the table: chest CT, soft tissue moved 10 mm head-wards in the target
    # shots, the whole CT named 16 of 24 levels right and 1 wrong, its bone 23 right, 1 refused;
    # benchmarks/bench_register.py --soft-tissue-shift-mm 10, 2026-11-21)
    moving = spine.bone if patient is None else VertebraVolume(
        "patient", patient.coarse_bone, spine.bone.centroid_ct_mm, spine.bone.points_ct_mm)
    hyps = []
    for k in shifts:
        Tk = np.eye(4)
        Tk[:3, 3] = k * spine.spacing_mm * axis_w
        # 1. rigidly, from this hypothesis' start
        r = register_vertebra(moving, [shot], T_init_world_from_ct=Tk @ T0, search_mm=search_mm,
                              search_rad=search_rad, gc_threshold=gc_threshold, seed=seed + 17 * (k + 5),
                              coarse_evaluations=150, fine_evaluations=40, restarts=0,
                              monoplane_depth_weight=0.05, compute_uncertainty=False, powell_evaluations=30,
                              coarse_pixel_mm=coarse_pixel_mm, fine_pixel_mm=fine_pixel_mm)
        # 2. each vertebra in view on its own (the spine flexes between CT and table), locally
        poses: dict[str, NDArray[np.float64]] = {}
        per_level_gc: dict[str, float] = {}
        for name, vert in spine.vertebrae.items():
            c_w = r.T_world_from_ct[:3, :3] @ vert.centroid_ct_mm + r.T_world_from_ct[:3, 3]
            uv = project_points(projection_matrix(g, shot.pose), c_w)
            if not (np.all(np.isfinite(uv)) and 0 <= uv[0] < g.cols and 0 <= uv[1] < g.rows):
                continue
            if patient is not None:
                poses[name] = r.T_world_from_ct
                continue
            rv = register_vertebra(vert, [shot], T_init_world_from_ct=r.T_world_from_ct,
                                   search_mm=level_search_mm, search_rad=level_search_rad,
                                   gc_threshold=gc_threshold, seed=seed + 31 * (k + 5), coarse_evaluations=120,
                                   fine_evaluations=40, restarts=0, monoplane_depth_weight=0.05,
                                   compute_uncertainty=False, powell_evaluations=30,
                                   coarse_pixel_mm=coarse_pixel_mm, fine_pixel_mm=fine_pixel_mm)
            poses[name] = rv.T_world_from_ct
            per_level_gc[name] = rv.similarity
        # 3. one score on a common footing: the composite of the vertebrae at their poses,
        # whole detector (the registrations' own GCs use pose-dependent regions)
        if patient is not None:
            gc_common = _patient_gc(patient, r.T_world_from_ct, shot, fine_pixel_mm)
        else:
            gc_common = _composite_gc(spine, poses, shot, fine_pixel_mm) if poses else -1.0
        lvl, why, cont = _level_at(spine, poses, shot, m, footprint_px)
        hyps.append({"shift_levels": int(k), "gradient_correlation": gc_common,
                     "gradient_correlation_per_level": per_level_gc, "level": lvl,
                     "why_no_level": why, "containing": cont, "_T": r.T_world_from_ct, "_poses": poses})
    hyps.sort(key=lambda h: -h["gradient_correlation"])
    best = hyps[0]
    # the runner-up: the best hypothesis that gives another answer (another level, or none)
    others = [h for h in hyps[1:] if h["level"] != best["level"]]
    runner = others[0] if others else None
    named = [h for h in others if h["level"] is not None]
    runner_name = named[0]["level"] if named else None
    margin = best["gradient_correlation"] - (runner["gradient_correlation"] if runner else 0.0)
    reasons = []
    if best["gradient_correlation"] < gc_threshold:
        reasons.append(f"registration failed (GC {best['gradient_correlation']:.3f} < {gc_threshold:.2f})")
    if best["level"] is None:
        reasons.append(best["why_no_level"])
    if runner is not None and margin < min_margin:
        reasons.append(f"{best['level']} and {runner['level'] or 'no vertebra'} fit almost equally well (GC margin "
                       f"{margin:.3f} < {min_margin:.3f})")
    T_best = best["_T"]
    out_h = [{k: v for k, v in h.items() if not k.startswith("_")} for h in hyps]
    ok = not reasons
    return LevelCheckResult(level=best["level"] if ok else None,
                            runner_up=runner_name, best_guess=best["level"],
                            confidence=float(margin) if ok else 0.0, ok=ok, ambiguous=not ok,
                            reason="; ".join(reasons), hypotheses=out_h, T_world_from_ct=T_best,
                            level_poses=best["_poses"],
                            seconds=time.perf_counter() - t0)


def marker_footprint(spine: SpineVolume, level: str, T_world_from_ct: NDArray[np.float64],
                     shot: ShotView) -> NDArray[np.bool_]:
    """Binary mask of the detector pixels covered by ``level``'s projection (for pictures and tests)."""
    P = projection_matrix(shot.geometry, shot.pose)
    uv = np.round(project_points(P, spine.level_points_ct_mm[level] @ T_world_from_ct[:3, :3].T
                                 + T_world_from_ct[:3, 3])).astype(int)
    g = shot.geometry
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < g.cols) & (uv[:, 1] >= 0) & (uv[:, 1] < g.rows)
    mask = np.zeros((g.rows, g.cols), bool)
    mask[uv[ok, 1], uv[ok, 0]] = True
    return binary_dilation(mask, iterations=2)


#: GC margin by which the registered level's neighbour context must beat the context shifted
#: by one level (``confirm_level``). Calibrated on few phantom cases only (tests and
#: benchmarks/bench_register.py print the margins): to recalibrate on more data.
DEFAULT_CONTEXT_MARGIN = 0.02
#: The same with the whole CT as the context (``confirm_level(patient=...)``). Measured
#: 2026-11-21 on target shots of our renderer (110 kVp, noise, blur, an instrument in every third)
#: with the vertebra's pose within 0.5 mm / 0.5 deg of the truth (right) or one level off (wrong),
#: monoplane and biplane: chest CT T10-L1 24 right margins 0.17-0.77, phantom L3-L5 18 right
#: 0.20-0.62; all 84 wrong ones negative. 0.05 keeps a wide gap on both sides.
DEFAULT_PATIENT_CONTEXT_MARGIN = 0.05


def _level_to_level(spine: SpineVolume, moving: str, fixed: str) -> NDArray[np.float64]:
    """CT-frame rigid map of level ``moving`` onto level ``fixed`` (ICP of their points, started
    from the centroid shift); identity for the same level."""
    from spinenav.registration.points import icp_register

    if moving == fixed:
        return np.eye(4)
    key = (moving, fixed)
    cache = _LEVEL_MAPS.setdefault(spine, {})
    if key not in cache:
        S = np.eye(4)
        S[:3, 3] = spine.level_centroids_ct_mm[fixed] - spine.level_centroids_ct_mm[moving]
        r = icp_register(spine.level_points_ct_mm[moving], spine.level_points_ct_mm[fixed], T_init=S,
                         max_iterations=50, max_rms_mm=5.0)
        cache[key] = r.T_fixed_from_moving
    return cache[key]


#: per spine (weakly held): (moving, fixed) -> the level-to-level map
_LEVEL_MAPS: weakref.WeakKeyDictionary[SpineVolume, dict[tuple[str, str], NDArray[np.float64]]] = \
    weakref.WeakKeyDictionary()


def confirm_level(result: IntensityResult, spine: SpineVolume, shots: Sequence[ShotView], *,
                  context_levels: int = 2, min_margin: float | None = None,
                  pixel_mm: float = 1.5, patient: PatientVolume | None = None) -> IntensityResult:
    """Wrong-level detector for a single-vertebra registration: do the neighbours agree?

    A vertebra registered onto its neighbour matches it about as well as its own image (the
    vertebrae look alike: ``result.similarity`` cannot tell), but its neighbours then sit one
    level off. With ``T`` the registered pose of level V (index i in the spine), the
    hypothesis "the structure V was registered on is really level i+k" puts the CT at
    ``T_k = T @ A_k``, ``A_k`` the rigid map of level i+k onto V in the CT (ICP of their
    points from the centroid shift: it carries the spine's curvature, so that under the right
    hypothesis the whole context falls back in place, not rotated by the lordosis). For
    k = -1, 0, +1 the levels i-``context_levels``..i+``context_levels`` that the CT has are
    rendered together at ``T_k`` and scored by the gradient correlation with each shot over
    the whole detector (binned to ``pixel_mm``), averaged over the shots. The registration is
    confirmed when the k = 0 context beats both shifted ones by ``min_margin``; otherwise the
    result is returned with ``ok=False`` and the reason (the level is ambiguous or wrong:
    check it with :func:`check_level` or register the neighbours too,
    :func:`spinenav.registration.multilevel.register_levels`).

    With ``patient`` (:func:`~spinenav.registration.incontext.prepare_patient`) the context is
    the whole CT (ribs, organs, pelvis) rather than the neighbouring vertebrae (its bone alone
    gave smaller margins: chest 0.065, phantom one right result refused, 2026-11-21), and the margin
    ``DEFAULT_PATIENT_CONTEXT_MARGIN``: on the chest CT the vertebrae alone could not tell T10
    from T11 (as for :func:`check_level`).

    The context scores are added to ``result.notes``. Assumes the neighbours moved little
    relative to V (a few mm / degrees): their own motion lowers every hypothesis' score alike.
    """
    if min_margin is None:
        min_margin = DEFAULT_CONTEXT_MARGIN if patient is None else DEFAULT_PATIENT_CONTEXT_MARGIN
    if result.level not in spine.vertebrae:
        raise RegistrationError(f"level {result.level!r} is not in the spine (has {sorted(spine.vertebrae)})")
    order = sorted(spine.vertebrae, key=level_order)
    i = order.index(result.level)
    scores: dict[int, float] = {}
    for k in (-1, 0, 1):
        if not 0 <= i + k < len(order):
            continue
        T_k = result.T_world_from_ct @ _level_to_level(spine, order[i + k], result.level)
        if patient is not None:
            scores[k] = float(np.mean([_patient_gc(patient, T_k, s, pixel_mm, bone=False) for s in shots]))
            continue
        names = [order[j] for j in range(max(i + k - context_levels, 0), min(i + k + context_levels + 1, len(order)))]
        scores[k] = float(np.mean([_composite_gc(spine, {n: T_k for n in names}, s, pixel_mm) for s in shots]))
    others = {k: v for k, v in scores.items() if k != 0}
    what = "neighbour" if patient is None else "whole-CT"
    note = f"{what} context GC (shift in levels: GC) " + ", ".join(f"{k:+d}: {v:.3f}"
                                                                for k, v in sorted(scores.items()))
    if not others:
        return replace(result, notes=result.notes + (note + "; no neighbour in the CT to check the level",))
    k_best = max(others, key=lambda k: others[k])
    margin = scores[0] - others[k_best]
    if margin >= min_margin:
        return replace(result, notes=result.notes + (f"{note}; level confirmed (margin {margin:.3f})",))
    where = "cranial" if k_best < 0 else "caudal"
    why = (f"wrong level suspected: the neighbours fit better (or as well) if the vertebra found is "
           f"{order[i + k_best]}, one level {where} (context GC {others[k_best]:.3f} vs {scores[0]:.3f}, "
           f"margin {margin:.3f} < {min_margin:.3f})")
    return replace(result, ok=False, reason="; ".join(x for x in (result.reason, why) if x),
                   notes=result.notes + (note,))
