"""Per-vertebra 2D/3D registration in the context of the whole patient (two stages).

Why: a vertebra's own DRR explains only part of a real shot. On the real chest CT
(``benchmarks/bench_register.py --case chest``) the ribs, heart, diaphragm and neighbouring
vertebrae overlapping T10-L1 carry most of the image's gradients; matched against them alone,
the masked vertebra's DRR found its best gradient correlation 2-30 mm from the truth in most
trials (2026-11-21), and the score could not tell those failures from successes.

Method
------
1. Whole patient: the whole CT, moved rigidly, is registered to the shot(s) from the start
   pose (global CMA-ES, the vertebra's neighbourhood as the region; :func:`register_vertebra`
   with the whole CT as the moving volume). Its pose places the rest of the patient.
2. Background subtraction: the DRR of everything but the vertebra (the whole CT's DRR minus the
   vertebra's, both at the stage-1 pose, line integrals being additive), split into its
   soft-tissue and bone parts, is fitted to each shot by least squares (a gain per material and
   an offset, over the pixels outside the vertebra's footprint, which the background alone
   must explain) and subtracted. What remains is the vertebra (plus what the background did
   not explain). "The vertebra" here is its attenuation ABOVE the soft tissue around it
   (``VertebraVolume.excess``, the margin without other labelled structures): a vertebra that
   moves inside the body displaces soft tissue, so the background keeps soft tissue in its
   place. (With the masked CT instead, the margin's outer surface and the neighbours' bone in
   it were edges in both the model and the remainder, the remainder's at the stage-1 pose:
   they pulled the result towards the rest of the spine; chest CT, T11/T12, 6 trials: mTRE
   0.45-1.56 mm with the masked CT, 0.09-0.29 mm with the excess; 2026-11-21.)
   Pixels where the shot holds much more attenuation than the CT explains (an instrument, a
   K-wire: :func:`_not_in_ct`) are left out of the comparison (``ShotView.ignore``); a
   vertebra mostly hidden by them is reported as such.
3. The vertebra alone is registered to the remainder, locally: +-``local_mm`` / ``local_rad``
   about the stage-1 pose (the vertebra's motion relative to the rest of the spine between
   the CT and the table; 8 mm / 8 deg by default, an assumption: inter-vertebral motion bounds
   are not in clinical-reference.md).

The background's own motion (its neighbours moved a little differently) is not modelled: the
remainder then carries their misfit as extra edges, which lowers the score rather than
moving the result (the level-check benchmark moves every vertebra by its own 3 mm / 3 deg).

Quality: ``ok`` as for :func:`register_vertebra`, with the threshold
``DEFAULT_GC_THRESHOLD_IN_CONTEXT`` on the remainder's gradient correlation (calibrated on the
failure set of ``benchmarks/bench_register.py``); the stage-1 result is reported in the notes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spinenav.fluoro.drr import (AttenuationVolume, Spectrum, prepare_attenuation, render_line_integrals,
                                 split_at_hu)
from spinenav.imaging.resample import resample_to_spacing
from spinenav.imaging.volume import Volume
from spinenav.registration.intensity import (IntensityResult, RegistrationError, ShotView, VertebraVolume,
                                             _valid_mask, moved_attenuation, register_vertebra)
from spinenav.registration.multilevel import MultiLevelResult

#: Gradient correlation of the background-subtracted shot below which the result is not trusted.
#: Calibrated with benchmarks/bench_register.py (2026-11-21, starts within 10 mm / 10 deg, target
#: shots from our renderer and from plastimatch, the failure set; 140 cases on the phantom and
#: the chest CT): the failures not caught by the other tests (coverage, a CT that holds only part
#: of the vertebra, the whole-CT level confirmation for starts on the neighbour) reached GC 0.57
#: (a 4.3 mm miss on a plastimatch target); successes went as low as 0.36 (plastimatch targets,
#: whose bone contrast differs most from ours, 0.50-0.77). 0.6 let none of the 29 failures
#: through and raised false alarms on ~20% of the successes (the benchmark prints both).
DEFAULT_GC_THRESHOLD_IN_CONTEXT = 0.6
#: Pixels where the vertebra's DRR exceeds this fraction of its maximum are its footprint (kept
#: out of the background fit).
FOOTPRINT_FRACTION = 0.02


@dataclass(frozen=True, eq=False)
class PatientVolume:
    """The whole CT as attenuation (the registration's physics): ``full`` on the CT's grid for
    the background, ``soft`` the same with every voxel's attenuation capped at that of
    ``SOFT_TISSUE_MAX_HU`` (its soft-tissue part; ``full - soft`` is the bone's excess), and
    ``coarse`` on a ``coarse_voxel_mm`` grid for stage 1 (fewer samples per ray; stage 1 only
    has to bring the vertebra within the local search of stage 3). ``bone`` and ``coarse_bone``:
    the attenuation above ``SOFT_TISSUE_MAX_HU`` (ribs, sternum, pelvis, vertebrae), what the
    level check scores: soft tissue moves between the CT and the table (breathing, position)."""

    full: AttenuationVolume
    soft: AttenuationVolume
    coarse: AttenuationVolume
    bone: AttenuationVolume
    coarse_bone: AttenuationVolume


#: HU above which a voxel's attenuation counts as bone in the two-material background fit (the
#: upper end of soft tissue; the energy dependence of bone and soft tissue differs, so a shot
#: taken at another spectrum scales the two differently).
SOFT_TISSUE_MAX_HU = 100.0


def _capped(att: AttenuationVolume, mu_max: float) -> AttenuationVolume:
    """A NEW attenuation volume with mu capped (not dataclasses.replace: that would share the
    renderer's padded copy of the original)."""
    return AttenuationVolume(np.ascontiguousarray(np.minimum(att.mu_per_mm, np.float32(mu_max))), att.affine.copy(),
                             att.spectrum, att.mu_water_per_mm, att.notes)


def _soft_mu(spectrum: Spectrum) -> float:
    from spinenav.fluoro.drr import hu_to_mu_per_mm

    return float(hu_to_mu_per_mm(np.array([SOFT_TISSUE_MAX_HU], np.float32), spectrum)[0])


#: Stage 1 stops at ~1.6 mm pixels: it only has to land within stage 3's local search. A second
#: global search (larger population) runs when the whole patient's GC stays below 0.75, the best
#: kept: on plastimatch's target shots (lower bone contrast than ours) a stage 1 that stopped 6
#: mm off at GC 0.655 made the phantom benchmark's one biplane miss (4.5 mm); the right patient
#: pose scored 0.76 there. Right stage-1 poses scored 0.73-0.98 on the benchmarks (2026-11-21).
STAGE1_SETTINGS: dict[str, Any] = {"coarse_pixel_mm": 2.4, "fine_pixel_mm": 1.6, "coarse_evaluations": 400,
                                   "fine_evaluations": 80, "powell_evaluations": 0, "restarts": 1,
                                   "gc_threshold": 0.75}


#: Stage 3 searches a box 2.5x smaller than a free registration's (8 mm / 8 deg about stage 1):
#: half the global evaluations, fewer Powell steps. Chest CT T10-L1, 12 biplane trials
#: (2026-11-21): median mTRE 0.175 mm vs 0.179 mm with the defaults (max 0.58 vs 0.57), median
#: CPU 2.25 s vs 2.41 s per vertebra.
STAGE3_SETTINGS: dict[str, Any] = {"coarse_evaluations": 300, "powell_evaluations": 60}


def prepare_patient(ct: Volume, *, spectrum: Spectrum = Spectrum(), coarse_voxel_mm: float = 2.0) -> PatientVolume:
    """The whole CT prepared for :func:`register_vertebra_in_context` (once per CT)."""
    spacing = np.linalg.norm(ct.affine[:3, :3], axis=0)
    target = np.maximum(spacing, coarse_voxel_mm)
    coarse_ct = resample_to_spacing(ct, target, order=1) if np.any(target > spacing + 1e-6) else ct
    full = prepare_attenuation(ct, spectrum=spectrum)
    coarse = prepare_attenuation(coarse_ct, spectrum=spectrum)
    soft, bone = split_at_hu(full, SOFT_TISSUE_MAX_HU)
    return PatientVolume(full, soft, coarse, bone, split_at_hu(coarse, SOFT_TISSUE_MAX_HU)[1])


def _background_parts(shots: Sequence[ShotView], vert: VertebraVolume, patient: PatientVolume,
                      T: NDArray[np.float64]) -> list[tuple[NDArray[np.float32], NDArray[np.float32],
                                                             NDArray[np.float32]]]:
    """Per shot the (soft, bone) line integrals of everything but ``vert`` and the vertebra's own
    line integral, the patient at ``T`` (line integrals add: background = patient - vertebra).

    The vertebra is its excess over the surrounding soft tissue (``vert.excess``; the masked CT
    when its margin holds no soft tissue): the background keeps soft tissue in its place."""
    own = _moving(vert)
    if vert.excess is not None:
        from spinenav.fluoro.drr import hu_to_mu_per_mm

        mu_here = float(hu_to_mu_per_mm(np.array([vert.soft_tissue_hu], np.float32), patient.full.spectrum)[0])
        own_soft = _capped(own, max(_soft_mu(patient.full.spectrum) - mu_here, 0.0))
    else:
        own_soft = _capped(own, _soft_mu(patient.full.spectrum))
    out = []
    for s in shots:
        def drr(att: AttenuationVolume) -> NDArray[np.float32]:
            return render_line_integrals(moved_attenuation(att, T), s.geometry, s.pose)
        L_vert = drr(own)
        soft = drr(patient.soft) - drr(own_soft)
        bone = drr(patient.full) - L_vert - soft
        out.append((soft, bone, L_vert))
    return out


def _moving(vert: VertebraVolume) -> AttenuationVolume:
    """What moves in stage 3: the vertebra's excess over soft tissue when known."""
    return vert.excess if vert.excess is not None else vert.attenuation


def subtract_background(shots: Sequence[ShotView], vert: VertebraVolume, patient: PatientVolume,
                        T_world_from_ct: ArrayLike) -> tuple[list[ShotView], list[dict[str, float]]]:
    """Each shot minus the fitted DRR of everything but ``vert``, the patient at ``T_world_from_ct``.

    The background is fitted as ``a * soft + b * bone + c`` (two materials: a shot's spectrum
    changes bone's contrast relative to soft tissue), by least squares over the valid pixels
    outside the vertebra's footprint. Returns the remainders (attenuation polarity, invalid
    pixels of the shot kept at 0) and per shot the fit: ``soft_gain``, ``bone_gain``,
    ``offset`` and ``r2`` (fraction of the shot's variance outside the footprint explained).
    """
    T = np.asarray(T_world_from_ct, dtype=np.float64)
    out, fits = [], []
    for s, (soft, bone, L_vert) in zip(shots, _background_parts(shots, vert, patient, T)):
        valid = _valid_mask(s.image)
        outside = valid & (L_vert <= FOOTPRINT_FRACTION * max(float(L_vert.max()), 1e-12))
        if outside.sum() < 100:
            raise RegistrationError("the vertebra fills the shot: no background left to fit")
        A = np.stack([soft[outside], bone[outside], np.ones(int(outside.sum()))], axis=1).astype(np.float64)
        y = s.image[outside].astype(np.float64)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        resid = y - A @ coef
        r2 = 1.0 - float(resid.var()) / max(float(y.var()), 1e-12)
        background = coef[0] * soft + coef[1] * bone + coef[2]
        rem = np.where(valid, s.image - background, 0.0).astype(np.float32)
        foreign = _not_in_ct(rem - coef[1] * L_vert, valid)
        if s.ignore is not None:
            foreign |= s.ignore
        out.append(ShotView(rem, s.geometry, s.pose, foreign))
        fits.append({"soft_gain": float(coef[0]), "bone_gain": float(coef[1]), "offset": float(coef[2]), "r2": r2,
                     "ignored_fraction": float(foreign[valid].mean()) if valid.any() else 0.0})
    return out, fits


#: A residual this many times the most negative one is taken for something the CT does not
#: hold (an instrument, a K-wire): see :func:`_not_in_ct`.
FOREIGN_RESIDUAL_RATIO = 1.5
#: ... and it must be this many standard deviations of the residual's noise (MAD) above 0.
FOREIGN_RESIDUAL_SIGMA = 6.0


def _not_in_ct(residual: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Pixels where the shot holds much more attenuation than the CT explains at the stage-1 pose.

    ``residual`` = shot - (background + the vertebra at the stage-1 pose). What the CT holds
    but the pose misplaces leaves residuals of both signs and similar size (the vertebra moved:
    where it came from is negative, where it went positive); an instrument or implant that
    is not in the CT adds attenuation only. So a pixel whose residual exceeds
    ``FOREIGN_RESIDUAL_RATIO`` times the largest negative residual (and ``FOREIGN_RESIDUAL_SIGMA``
    noise sigmas) is not compared; small specks (< 6 pixels) are kept.
    """
    from scipy.ndimage import label as cc_label

    r = residual[valid]
    if r.size == 0:
        return np.zeros(residual.shape, bool)
    sigma = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    neg = float(-np.percentile(r, 0.1))  # the most negative, robust to a few noisy pixels
    thr = max(FOREIGN_RESIDUAL_RATIO * max(neg, 0.0), FOREIGN_RESIDUAL_SIGMA * sigma)
    cand = valid & (residual > thr)
    if not cand.any():
        return cand
    lab, n = cc_label(cand)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= 6
    keep[0] = False
    return keep[lab]


def _register_patient(patient: PatientVolume, points_ct_mm: NDArray[np.float64], centre_ct_mm: NDArray[np.float64],
                      shots: Sequence[ShotView], T_init_world_from_ct: ArrayLike | None, search_mm: float,
                      search_rad: float, seed: int, kwargs: dict[str, Any]) -> tuple[IntensityResult, str]:
    """Stage 1: the whole patient (coarse copy), rotating about ``centre_ct_mm``, its region the
    box of ``points_ct_mm``; with the note that reports it."""
    whole = VertebraVolume("patient", patient.coarse, centre_ct_mm, points_ct_mm)
    r = register_vertebra(whole, shots, T_init_world_from_ct=T_init_world_from_ct, search_mm=search_mm,
                          search_rad=search_rad, seed=seed, compute_uncertainty=False, **{**STAGE1_SETTINGS, **kwargs})
    note = (f"stage 1 (whole patient): GC {r.similarity:.3f}, {r.n_evaluations} evaluations, {r.seconds:.1f} s"
            + (f"; {r.reason}" if r.reason else ""))
    return r, note


def register_vertebra_in_context(vert: VertebraVolume, patient: PatientVolume, shots: Sequence[ShotView], *,
                                 T_init_world_from_ct: ArrayLike | None = None, search_mm: float = 20.0,
                                 search_rad: float = math.radians(20.0), local_mm: float = 8.0,
                                 local_rad: float = math.radians(8.0),
                                 gc_threshold: float = DEFAULT_GC_THRESHOLD_IN_CONTEXT,
                                 patient_T_world_from_ct: ArrayLike | None = None, seed: int = 0,
                                 **kwargs: Any) -> IntensityResult:
    """Register one vertebra to one or two shots in the context of the whole patient.

    Parameters
    ----------
    vert : VertebraVolume
        From :func:`~spinenav.registration.intensity.prepare_vertebra` (same CT as ``patient``).
    patient : PatientVolume
        From :func:`prepare_patient`.
    shots : 1 or 2 ShotView
    T_init_world_from_ct : (4, 4), optional
        Start (default identity), searched +-``search_mm`` / ``search_rad`` by stage 1.
    local_mm, local_rad : float
        Stage 3's search about the patient's pose: the vertebra's own motion.
    patient_T_world_from_ct : (4, 4), optional
        The patient's pose when already known (e.g. shared by several vertebrae of one shot):
        stage 1 is skipped.
    kwargs
        Passed to both :func:`register_vertebra` calls (e.g. ``render_threads``).
    """
    t0 = time.perf_counter()
    if patient_T_world_from_ct is None:
        stage1, note1 = _register_patient(patient, vert.points_ct_mm, vert.centroid_ct_mm, shots,
                                          T_init_world_from_ct, search_mm, search_rad, seed, kwargs)
        T1, n1 = stage1.T_world_from_ct, stage1.n_evaluations
    else:
        T1 = np.asarray(patient_T_world_from_ct, dtype=np.float64)
        note1, n1 = "stage 1 skipped: the patient's pose was given", 0
    remainder, fits = subtract_background(shots, vert, patient, T1)
    r = register_vertebra(replace(vert, attenuation=_moving(vert)), remainder, T_init_world_from_ct=T1,
                          search_mm=local_mm, search_rad=local_rad, gc_threshold=gc_threshold, seed=seed,
                          **{**STAGE3_SETTINGS, **kwargs})
    moving = (f"the vertebra's excess over the soft tissue around it ({vert.soft_tissue_hu:.0f} HU) moves"
              if vert.excess is not None else "no soft tissue in the vertebra's margin: its masked CT moves")
    notes = (note1, moving, "background fit per shot (soft gain, bone gain, offset, r2, fraction not compared as "
             "not in the CT): " + "; ".join(f"{f['soft_gain']:.3f}, {f['bone_gain']:.3f}, {f['offset']:.3f}, "
                                            f"{f['r2']:.2f}, {f['ignored_fraction']:.3f}" for f in fits)) + r.notes
    return replace(r, seconds=time.perf_counter() - t0, n_evaluations=r.n_evaluations + n1, notes=notes)


def register_levels_in_context(verts: Sequence[VertebraVolume], patient: PatientVolume, shots: Sequence[ShotView],
                               *, T_init_world_from_ct: ArrayLike | None = None, search_mm: float = 20.0,
                               search_rad: float = math.radians(20.0), local_mm: float = 8.0,
                               local_rad: float = math.radians(8.0), max_relative_mm: float | None = None,
                               max_relative_deg: float | None = None, seed: int = 0,
                               **kwargs: Any) -> MultiLevelResult:
    """Several vertebrae of one shot (or biplane pair): one whole-patient stage 1 for all, then
    each vertebra against the shot minus its own background (the other levels included, at the
    patient's pose), locally; the relative motion of adjacent levels is reported and checked
    against the bounds of :mod:`spinenav.registration.multilevel`.

    Each level's local search (+-``local_mm`` / ``local_rad`` about the patient's pose) already
    bounds its motion; the pairwise check catches what the local searches let through (two
    neighbours each moved up to the limit in opposite directions).
    """
    from spinenav.anatomy.labels import level_order
    from spinenav.fluoro.carm import T_camera_from_world
    from spinenav.registration.multilevel import (DEFAULT_MAX_RELATIVE_DEG, DEFAULT_MAX_RELATIVE_MM,
                                                  RelativeMotion, relative_motion)

    t0 = time.perf_counter()
    if not verts:
        raise RegistrationError("no vertebra to register")
    max_mm = DEFAULT_MAX_RELATIVE_MM if max_relative_mm is None else float(max_relative_mm)
    max_deg = DEFAULT_MAX_RELATIVE_DEG if max_relative_deg is None else float(max_relative_deg)
    order = sorted(verts, key=lambda v: level_order(v.level))
    pts = np.vstack([v.points_ct_mm for v in order])
    stage1, note1 = _register_patient(patient, pts, pts.mean(axis=0), shots, T_init_world_from_ct, search_mm,
                                      search_rad, seed, kwargs)
    T1 = stage1.T_world_from_ct
    results = {}
    for v in order:
        results[v.level] = register_vertebra_in_context(v, patient, shots, patient_T_world_from_ct=T1,
                                                        local_mm=local_mm, local_rad=local_rad, seed=seed, **kwargs)
    Ra = T_camera_from_world(shots[0].geometry, shots[0].pose)[:3, :3]
    motions = []
    for a, b in zip(order[:-1], order[1:]):
        ang, disp, rv, d = relative_motion(a, b, results[a.level].T_world_from_ct, results[b.level].T_world_from_ct,
                                           Ra)
        motions.append(RelativeMotion(a.level, b.level, ang, disp, tuple(float(x) for x in rv),
                                      tuple(float(x) for x in d), ang <= max_deg and disp <= max_mm))
    reasons = [f"{n}: {r.reason}" for n, r in results.items() if not r.ok]
    reasons += [f"{m.cranial}-{m.caudal} moved {m.translation_mm:.1f} mm / {m.rotation_deg:.1f} deg relative to each "
                f"other (bounds {max_mm:g} mm / {max_deg:g} deg)" for m in motions if not m.within_bounds]
    notes = (note1.replace("stage 1 (whole patient)", "stage 1 (whole patient, shared)"),)
    return MultiLevelResult(tuple(v.level for v in order), results, tuple(motions), max_mm, max_deg,
                            ok=not reasons, reason="; ".join(reasons), seconds=time.perf_counter() - t0, notes=notes)
