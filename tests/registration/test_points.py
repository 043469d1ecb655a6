"""Paired-point and ICP registration recover known poses (tolerances in mm, with reasons)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from spinenav.registration.points import (PointRegistrationError, apply_transform, icp_register, predicted_tre_mm,
                                          register_paired_points, surface_points_from_mask)


def _pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


FIDUCIALS = np.array(list(itertools.product([-40.0, 40.0], repeat=3)))  # (8, 3) mm


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3), st.lists(st.floats(-300, 300), min_size=3, max_size=3))
def test_paired_points_exact_for_any_pose(rotvec, t):
    T = _pose(np.array(rotvec), np.array(t))
    r = register_paired_points(FIDUCIALS, apply_transform(T, FIDUCIALS))
    assert r.ok
    np.testing.assert_allclose(r.T_fixed_from_moving, T, atol=1e-8)
    assert np.linalg.det(r.T_fixed_from_moving[:3, :3]) > 0
    assert r.fre_mm < 1e-8


def test_paired_points_under_noise_tre_at_target_and_fitzpatrick_prediction():
    """0.5 mm FLE: TRE at a pedicle-tip-like target outside the fiducials matches the predicted
    RMS TRE within 15% over 400 trials (the formula is a first-order expectation)."""
    rng = np.random.default_rng(7031)
    T = _pose(np.radians([12.0, -7.0, 30.0]), [40.0, -15.0, 210.0])
    target = np.array([0.0, 30.0, 90.0])
    fle_per_axis = 0.5 / np.sqrt(3.0)  # 3D RMS FLE 0.5 mm
    tres = []
    for _ in range(400):
        fixed = apply_transform(T, FIDUCIALS) + rng.normal(0, fle_per_axis, FIDUCIALS.shape)
        r = register_paired_points(FIDUCIALS, fixed)
        tres.append(np.linalg.norm(apply_transform(r.T_fixed_from_moving, target) - apply_transform(T, target)))
    rms = float(np.sqrt(np.mean(np.square(tres))))
    pred = float(predicted_tre_mm(FIDUCIALS, target, 0.5))
    assert abs(rms - pred) / pred < 0.15, (rms, pred)
    assert max(tres) < 1.5  # each trial: well under 3 x the prediction


def test_fle_estimate_from_fre():
    """<FRE^2> = (1 - 2/N) FLE^2: the estimate recovers the FLE on average (within 10%)."""
    rng = np.random.default_rng(3)
    est = []
    for _ in range(300):
        fixed = FIDUCIALS + rng.normal(0, 1.0 / np.sqrt(3), FIDUCIALS.shape)
        est.append(register_paired_points(FIDUCIALS, fixed).fle_estimate_mm ** 2)
    assert abs(np.sqrt(np.mean(est)) - 1.0) < 0.1


def test_tre_prediction_grows_away_from_the_centroid():
    near, far = predicted_tre_mm(FIDUCIALS, [[0, 0, 0], [0, 0, 200]], 1.0)
    assert near == pytest.approx(1.0 / np.sqrt(8))  # at the centroid: FLE / sqrt(N)
    assert far > 2 * near


def test_reflection_is_not_returned_for_planar_points():
    """Coplanar noisy points: a naive SVD can return a reflection; ours is a proper rotation."""
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-30, 30, (6, 2)), np.zeros(6)]
    T = _pose(np.radians([0, 0, 170.0]), [1, 2, 3])
    r = register_paired_points(pts, apply_transform(T, pts) + rng.normal(0, 0.05, (6, 3)))
    assert np.linalg.det(r.T_fixed_from_moving[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(r.T_fixed_from_moving[:3, :3], T[:3, :3], atol=0.01)


def test_mismatched_pair_is_flagged():
    fixed = FIDUCIALS.copy()
    fixed[[0, 1]] = fixed[[1, 0]]  # two swapped points
    r = register_paired_points(FIDUCIALS, fixed)
    assert not r.ok and "FRE" in r.reason


@pytest.mark.parametrize("moving, fixed, msg", [
    (np.zeros((2, 3)), np.zeros((2, 3)), "at least 3"),
    (FIDUCIALS, FIDUCIALS[:7], "paired"),
    (np.c_[np.arange(5.0), np.zeros(5), np.zeros(5)], np.zeros((5, 3)), "collinear"),
    (np.full((4, 3), np.nan), np.zeros((4, 3)), "NaN"),
    (np.zeros((4, 2)), np.zeros((4, 2)), r"\(N, 3\)"),
])
def test_paired_points_bad_input(moving, fixed, msg):
    with pytest.raises(PointRegistrationError, match=msg):
        register_paired_points(moving, fixed)


@pytest.fixture(scope="module")
def l4_surface(phantom_l3l5):
    from spinenav.anatomy.labels import ts_id

    lab = np.asarray(phantom_l3l5.labels.array)
    return surface_points_from_mask(lab == ts_id("L4"), phantom_l3l5.labels.affine)


ICP_TOL_MM = 0.5  # 0.3 mm digitiser noise, 1 mm grid surface: 0.23 mm mean error on the inliers here


def test_icp_recovers_pose_from_noisy_digitised_points_with_outliers(l4_surface, phantom_l3l5):
    rng = np.random.default_rng(11)
    # digitise the posterior half (what an open or MIS exposure reaches) of the L4 surface
    c = l4_surface[0].mean(axis=0)
    posterior = l4_surface[0][l4_surface[0][:, 1] > c[1] + 5]
    pts_ct = posterior[rng.choice(len(posterior), 60, replace=False)]
    T_tracker_from_ct = _pose(np.radians([4.0, -6.0, 5.0]), [3.0, -4.0, 2.5])
    pts_tracker = apply_transform(T_tracker_from_ct, pts_ct) + rng.normal(0, 0.3, pts_ct.shape)
    pts_tracker[:6] += rng.normal(0, 8.0, (6, 3))  # 10% gross outliers (pointer off the bone)
    # the usual workflow: a paired-point fit on 4 landmarks touched with the pointer (1.5 mm
    # FLE) starts the ICP (which is local: from the raw 10 mm offset it stalls at ~1.2 mm)
    tr = phantom_l3l5.truth.vertebra("L4")
    lm_ct = np.array([tr.spinous_tip_world_mm, tr.transverse_process_tips_world_mm["left"],
                      tr.transverse_process_tips_world_mm["right"], tr.pedicles["left"].chord_entry_world_mm])
    lm_tracker = apply_transform(T_tracker_from_ct, lm_ct) + rng.normal(0, 1.5 / np.sqrt(3), lm_ct.shape)
    init = register_paired_points(lm_tracker, lm_ct)
    r = icp_register(pts_tracker, l4_surface[0], surface_normals=l4_surface[1], T_init=init.T_fixed_from_moving)
    assert r.ok, r.reason
    T_ct_from_tracker_true = np.linalg.inv(T_tracker_from_ct)
    err = np.linalg.norm(apply_transform(r.T_fixed_from_moving, pts_tracker[6:])
                         - apply_transform(T_ct_from_tracker_true, pts_tracker[6:]), axis=1).mean()
    assert err < ICP_TOL_MM, err
    assert 0.8 <= r.inlier_fraction <= 0.95  # the 6 outliers rejected, most inliers kept
    assert r.rms_mm < 0.6


def test_icp_on_the_wrong_surface_is_not_ok(l4_surface):
    rng = np.random.default_rng(2)
    blob = rng.normal(0, 25.0, (80, 3)) + l4_surface[0].mean(axis=0)  # points that lie on no surface
    r = icp_register(blob, l4_surface[0], surface_normals=l4_surface[1])
    assert not r.ok and r.reason
