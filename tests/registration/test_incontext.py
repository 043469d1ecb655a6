"""Registration in the context of the whole patient (stage 1 whole CT, background subtracted,
vertebra locally) on the phantom, target shots rendered with other physics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinenav.anatomy.labels import ts_id
from spinenav.fluoro.drr import render_line_integrals
from spinenav.registration.evaluate import TargetPhysics, error_components_mm, mtre_mm, rigid_about
from spinenav.registration.incontext import (DEFAULT_GC_THRESHOLD_IN_CONTEXT, prepare_patient,
                                             register_levels_in_context, register_vertebra_in_context,
                                             subtract_background)
from spinenav.registration.intensity import RegistrationError, ShotView, moved_attenuation, prepare_vertebra


@pytest.fixture(scope="module")
def patient(phantom_l3l5):
    return prepare_patient(phantom_l3l5.ct)


@pytest.fixture(scope="module")
def case(l4, scene, ap_lateral):
    """L4 moved 4 mm / 4 deg from the CT (the rest in place); start 12 mm / 12 deg from the truth."""
    g, ap, lat = ap_lateral
    c = l4.centroid_ct_mm
    T_true = rigid_about(c, np.radians([2.0, -3.0, 1.5]), [3.0, -2.0, 1.5])
    c_true = T_true[:3, :3] @ c + T_true[:3, 3]
    T_start = rigid_about(c_true, np.radians([7.0, -6.0, 6.0]), [-7.0, 6.0, 6.5]) @ T_true
    imgs = [scene.render(ts_id("L4"), T_true, g, p, seed=10 + i) for i, p in enumerate((ap, lat))]
    return T_true, T_start, [ShotView(imgs[0], g, ap), ShotView(imgs[1], g, lat)]


def test_background_subtraction_leaves_the_vertebra(l4, patient, case, ap_lateral):
    """With the patient at its true place (identity: only L4 moved), the remainder of the AP shot
    correlates with L4's own DRR at its true pose far better than the shot itself does."""
    T_true, _, shots = case
    rem, fits = subtract_background(shots[:1], l4, patient, np.eye(4))
    own = render_line_integrals(moved_attenuation(l4.attenuation, T_true), shots[0].geometry, shots[0].pose)
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
    assert r.notes[0].startswith("stage 1") and "background fit" in r.notes[1]


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
