"""Registration in the context of the whole patient (stage 1 whole CT, background subtracted,
vertebra locally) on the phantom, target shots rendered with other physics."""

from __future__ import annotations

import numpy as np
import pytest

from spinenav.anatomy.labels import ts_id
from spinenav.fluoro.drr import render_line_integrals
from spinenav.registration.evaluate import TargetPhysics, error_components_mm, mtre_mm, rigid_about
from spinenav.registration.incontext import (DEFAULT_GC_THRESHOLD_IN_CONTEXT, _not_in_ct, prepare_patient,
                                             register_levels_in_context, register_vertebra_in_context,
                                             subtract_background)
from spinenav.registration.intensity import RegistrationError, ShotView, moved_attenuation, prepare_vertebra

from reg_cases import l4_biplane_case


@pytest.fixture(scope="module")
def patient(phantom_l3l5):
    return prepare_patient(phantom_l3l5.ct)


@pytest.fixture(scope="module")
def case(l4, scene, ap_lateral):
    """L4 moved 4 mm / 4 deg from the CT (the rest in place); start 12 mm / 12 deg from the truth."""
    return l4_biplane_case(l4, scene, ap_lateral, [7.0, -6.0, 6.0], [-7.0, 6.0, 6.5], seed=10)


def test_background_subtraction_leaves_the_vertebra(l4, patient, case, ap_lateral):
    """With the patient at its true place (identity: only L4 moved), the remainder of the AP shot
    correlates with L4's own DRR at its true pose far better than the shot itself does."""
    T_true, _, shots = case
    rem, fits = subtract_background(shots[:1], l4, patient, np.eye(4))
    own = render_line_integrals(moved_attenuation(l4.excess, T_true), shots[0].geometry, shots[0].pose)
    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert corr(rem[0].image, own) > 0.8
    assert corr(rem[0].image, own) > corr(shots[0].image, own) + 0.2
    assert fits[0]["r2"] > 0.9 and 0.5 < fits[0]["soft_gain"] < 1.5  # 110 kVp targets vs the 100 kVp model


def test_biplane_in_context_recovers_pose(l4, patient, case):
    T_true, T_start, shots = case
    assert mtre_mm(l4.points_ct_mm, T_start, T_true) > 8.0
    r = register_vertebra_in_context(l4, patient, shots, T_init_world_from_ct=T_start, seed=1)
    assert r.ok, r.reason
    assert mtre_mm(l4.points_ct_mm, r.T_world_from_ct, T_true) < 1.0
    assert r.similarity >= DEFAULT_GC_THRESHOLD_IN_CONTEXT
    assert r.notes[0].startswith("stage 1") and "excess over the soft tissue" in r.notes[1]
    assert "background fit" in r.notes[2]


def test_monoplane_in_context_in_plane(l4, patient, case):
    T_true, T_start, shots = case
    r = register_vertebra_in_context(l4, patient, shots[:1], T_init_world_from_ct=T_start, seed=2)
    ip, _ = error_components_mm(l4.points_ct_mm, r.T_world_from_ct, T_true, shots[0].pose.detector_direction_world)
    assert r.ok, r.reason
    assert ip < 1.5, ip


def test_hidden_vertebra_in_context_is_not_ok(l4, patient, scene, case, ap_lateral):
    """Five titanium rods across L4: the result must not be reported ok unless it is right."""
    from spinenav.fluoro.drr import MetalCylinder

    T_true, T_start, _ = case
    g, ap, lat = ap_lateral
    c = T_true[:3, :3] @ l4.centroid_ct_mm + T_true[:3, 3]
    rods = tuple(MetalCylinder(tuple(c + [-45.0, 10.0, dz]), tuple(c + [45.0, -10.0, dz]), 6.0)
                 for dz in (-14.0, -7.0, 0.0, 7.0, 14.0))
    shots = [ShotView(scene.render(ts_id("L4"), T_true, g, p, physics=TargetPhysics(metal=rods), seed=20 + i), g, p)
             for i, p in enumerate((ap, lat))]
    r = register_vertebra_in_context(l4, patient, shots, T_init_world_from_ct=T_start, seed=3)
    if mtre_mm(l4.points_ct_mm, r.T_world_from_ct, T_true) >= 2.0:
        assert not r.ok and r.reason


def test_levels_in_context_report_relative_motion(phantom_l3l5, patient, scene, ap_lateral):
    """L3 fixed, L4 moved 3 mm / 3 deg: both found, relative motion within 1 mm / 1.5 deg of the truth."""
    from spinenav.registration.multilevel import relative_motion

    g, ap, lat = ap_lateral
    l3 = prepare_vertebra(phantom_l3l5.ct, phantom_l3l5.labels, "L3")
    l4 = prepare_vertebra(phantom_l3l5.ct, phantom_l3l5.labels, "L4")
    T4 = rigid_about(l4.centroid_ct_mm, np.radians([0.0, 3.0, 0.0]), [2.0, 0.0, -2.0])
    shots = [ShotView(scene.render(ts_id("L4"), T4, g, p, seed=30 + i), g, p) for i, p in enumerate((ap, lat))]
    start = rigid_about(l4.centroid_ct_mm, np.radians([4.0, 0.0, -4.0]), [6.0, -5.0, 4.0])
    r = register_levels_in_context([l4, l3], patient, shots, T_init_world_from_ct=start, seed=4)
    assert r.levels == ("L3", "L4")
    assert mtre_mm(l3.points_ct_mm, r.results["L3"].T_world_from_ct, np.eye(4)) < 1.5
    assert mtre_mm(l4.points_ct_mm, r.results["L4"].T_world_from_ct, T4) < 1.5
    ang, disp, _, _ = relative_motion(l3, l4, np.eye(4), T4)
    m = r.relative_motion[0]
    assert abs(m.translation_mm - disp) < 1.0 and abs(m.rotation_deg - ang) < 1.5
    assert m.within_bounds


def test_vertebra_filling_the_shot_is_refused(l4, patient, ap_lateral):
    """A detector so small that the vertebra covers it: nothing to fit the background on."""
    from spinenav.fluoro.carm import CarmGeometry

    _, ap, _ = ap_lateral
    g = CarmGeometry.square(16, detector_mm=20.0)
    shot = ShotView(render_line_integrals(l4.attenuation, g, ap), g, ap)
    with pytest.raises(RegistrationError, match="fills the shot"):
        subtract_background([shot], l4, patient, np.eye(4))


def test_what_moves_is_the_vertebra_above_its_soft_tissue(phantom_l3l5, l4):
    """The moving volume in context: the vertebra's excess over the soft tissue around it, its
    margin without other labelled structures; the masked CT (vertebra alone) keeps them."""
    ct, lab = phantom_l3l5.ct, np.asarray(phantom_l3l5.labels.array)
    assert -150.0 <= l4.soft_tissue_hu <= 150.0
    ex, att = l4.excess, l4.attenuation
    assert ex.mu_per_mm.shape == att.mu_per_mm.shape and np.allclose(ex.affine, att.affine)
    lo = np.rint(np.linalg.solve(ct.affine, att.affine[:, 3])[:3]).astype(int)
    box = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, att.mu_per_mm.shape))
    own = lab[box] == ts_id("L4")
    other = (lab[box] != 0) & ~own
    assert np.all(ex.mu_per_mm[other] == 0.0)
    assert np.all(ex.mu_per_mm >= 0.0) and np.all(ex.mu_per_mm <= att.mu_per_mm + 1e-7)
    # soft tissue in the margin (at or below the level found) moves as nothing
    soft = (lab[box] == 0) & (np.asarray(ct.array)[box] <= l4.soft_tissue_hu) & (att.mu_per_mm > 0)
    assert soft.sum() > 100 and np.all(ex.mu_per_mm[soft] == 0.0)
    # bone of the vertebra moves with its full excess
    assert float(ex.mu_per_mm[own].max()) > 0.5 * float(att.mu_per_mm[own].max())


def test_target_scene_unmoved_is_the_ct(phantom_l3l5, scene, ap_lateral):
    """The target scene's parts add up: the vertebra's place holds soft tissue, the vertebra its
    excess over it, so at rest the scene is the CT itself."""
    from spinenav.fluoro.drr import Spectrum, prepare_attenuation

    g, ap, _ = ap_lateral
    lid = ts_id("L4")
    L_scene = (render_line_integrals(scene.rest([lid]), g, ap, method="trilinear")
               + render_line_integrals(scene.vertebra(lid), g, ap, method="trilinear"))
    L_ct = render_line_integrals(prepare_attenuation(phantom_l3l5.ct, spectrum=Spectrum(kvp=110.0)), g, ap,
                                 method="trilinear")
    np.testing.assert_allclose(L_scene, L_ct, atol=2e-3 * float(L_ct.max()))
    assert -200.0 <= scene.fill_hu(lid) <= 200.0
    # the soft-tissue / bone split for moving the soft tissue adds up as well; a shift moves the body's edge
    clean = TargetPhysics(photons_per_pixel=None, blur_sigma_px=0.0)
    still = scene.render(lid, np.eye(4), g, ap, physics=clean)
    np.testing.assert_allclose(scene.render(lid, np.eye(4), g, ap, physics=clean, soft_tissue_shift_mm=[0, 0, 0]),
                               still, atol=1e-4 * float(still.max()))
    shifted = scene.render(lid, np.eye(4), g, ap, physics=clean, soft_tissue_shift_mm=[8.0, 0, 0])
    assert float(np.abs(shifted - still).max()) > 0.05 * float(still.max())


def test_not_in_ct_flags_added_attenuation_not_misplacement():
    """A vertebra misplaced leaves residuals of both signs; an instrument only adds: only it is flagged."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:100, 0:100]
    blob = lambda cx: np.exp(-((xx - cx) ** 2 + (yy - 50) ** 2) / 60.0)  # noqa: E731
    resid = (blob(48) - blob(52) + rng.normal(0, 0.01, (100, 100))).astype(np.float32)
    valid = np.ones((100, 100), bool)
    assert not _not_in_ct(resid, valid).any()
    rod = (np.abs(yy - 20) <= 2) & (xx > 10) & (xx < 90)
    flagged = _not_in_ct(resid + 3.0 * rod.astype(np.float32), valid)
    assert flagged[rod].mean() > 0.95 and not flagged[~rod].any()


def test_instrument_in_view_is_left_out_and_the_pose_found(l4, patient, scene, case, ap_lateral):
    """A titanium rod across L4 (not in the CT): its pixels are left out of the comparison, the
    pose is found and trusted."""
    from spinenav.fluoro.drr import MetalCylinder
    from spinenav.fluoro.carm import project_points, projection_matrix

    T_true, T_start, _ = case
    g, ap, lat = ap_lateral
    c = T_true[:3, :3] @ l4.centroid_ct_mm + T_true[:3, 3]
    rod = MetalCylinder(tuple(c + [-30.0, -60.0, 8.0]), tuple(c + [10.0, 40.0, 2.0]), 4.0)
    shots = [ShotView(scene.render(ts_id("L4"), T_true, g, p, physics=TargetPhysics(metal=(rod,)), seed=40 + i),
                      g, p) for i, p in enumerate((ap, lat))]
    rem, fits = subtract_background(shots, l4, patient, np.eye(4))
    for s, f in zip(rem, fits):
        assert s.ignore is not None and 0.002 < f["ignored_fraction"] < 0.2
        mid = project_points(projection_matrix(g, s.pose), 0.5 * (np.array(rod.start_world_mm) + rod.end_world_mm))
        assert s.ignore[int(round(mid[1])), int(round(mid[0]))]  # the rod's middle is left out
    r = register_vertebra_in_context(l4, patient, shots, T_init_world_from_ct=T_start, seed=5)
    assert r.ok, r.reason
    assert mtre_mm(l4.points_ct_mm, r.T_world_from_ct, T_true) < 1.0
