"""C-arm geometry: closed-form pinhole, decomposition and DICOM round trips over random poses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from pydicom.dataset import Dataset

from spinenav.fluoro.carm import (CarmGeometry, CarmGeometryError, CarmPose, angles_from_direction, beam_direction,
                                  camera_centre_world_mm, decompose_projection, geometry_from_dicom,
                                  geometry_to_dicom, pixel_world_mm, project_points, projection_matrix,
                                  read_sidecar, sidecar_dict, source_world_mm)

finite = dict(allow_nan=False, allow_infinity=False)
angles = st.floats(-math.pi + 1e-3, math.pi, **finite)
tilts = st.floats(-1.4, 1.4, **finite)
coords = st.floats(-300.0, 300.0, **finite)
geometries = st.builds(
    CarmGeometry,
    sdd_mm=st.floats(800.0, 1300.0, **finite), sod_mm=st.floats(400.0, 750.0, **finite),
    rows=st.integers(16, 1024), cols=st.integers(16, 1024),
    pixel_spacing_mm=st.tuples(st.floats(0.1, 2.0, **finite), st.floats(0.1, 2.0, **finite)),
    principal_offset_px=st.tuples(st.floats(-20, 20, **finite), st.floats(-20, 20, **finite)))
poses = st.builds(CarmPose, primary_rad=angles, secondary_rad=tilts,
                  isocentre_world_mm=st.tuples(coords, coords, coords),
                  table_translation_world_mm=st.tuples(coords, coords, coords),
                  patient_position=st.sampled_from(["prone", "supine"]))


def _pinhole(g: CarmGeometry, pose: CarmPose, X: np.ndarray) -> np.ndarray:
    """Closed form, written independently of carm.py: similar triangles on the detector plane."""
    p, s = pose.primary_rad, pose.secondary_rad
    d = np.array([math.sin(p) * math.cos(s), -math.cos(p) * math.cos(s), math.sin(s)])  # DICOM C.8.7.5
    iso = np.asarray(pose.isocentre_world_mm) - np.asarray(pose.table_translation_world_mm)
    src = iso - g.sod_mm * d
    up = np.array([0.0, 0.0, 1.0]) if abs(d[2]) <= math.cos(math.radians(10)) else np.array([0.0, -1.0, 0.0])
    v_axis = -(up - (up @ d) * d)
    v_axis /= np.linalg.norm(v_axis)
    u_axis = np.cross(v_axis, d)
    rel = X - src
    depth = rel @ d
    x_mm = g.sdd_mm * (rel @ u_axis) / depth  # on the detector plane
    y_mm = g.sdd_mm * (rel @ v_axis) / depth
    return np.stack([(g.cols - 1) / 2 + g.principal_offset_px[0] + x_mm / g.pixel_spacing_mm[1],
                     (g.rows - 1) / 2 + g.principal_offset_px[1] + y_mm / g.pixel_spacing_mm[0]], axis=-1)


@settings(max_examples=150, deadline=None)
@given(g=geometries, pose=poses, offsets=st.lists(st.tuples(coords, coords, coords), min_size=1, max_size=5))
def test_projection_matches_closed_form_pinhole(g, pose, offsets):
    # points within 300 mm of the isocentre: always between the source and the detector side
    X = pose.effective_isocentre_world_mm + 0.5 * np.asarray(offsets)
    uv = project_points(projection_matrix(g, pose), X)
    assert_allclose(uv, _pinhole(g, pose, X), atol=1e-6, rtol=0)


@settings(max_examples=150, deadline=None)
@given(g=geometries, pose=poses)
def test_decomposition_round_trip(g, pose):
    P = projection_matrix(g, pose)
    K, R, t = decompose_projection(P)
    assert_allclose(K, g.K, rtol=1e-9, atol=1e-7)
    assert_allclose(R @ R.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert_allclose(K @ np.hstack([R, t[:, None]]), P, rtol=1e-9, atol=1e-6)
    assert_allclose(camera_centre_world_mm(P), source_world_mm(g, pose), atol=1e-6)
    # a scaled, sign-flipped P decomposes to the same camera
    K2, R2, t2 = decompose_projection(-3.7 * P)
    assert_allclose(K2, K, rtol=1e-9, atol=1e-7)
    assert_allclose(R2, R, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(g=geometries, pose=poses, uv=st.tuples(st.floats(0, 1000, **finite), st.floats(0, 1000, **finite)))
def test_detector_points_project_back_to_their_pixel(g, pose, uv):
    X = pixel_world_mm(g, pose, np.array(uv))
    assert_allclose(project_points(projection_matrix(g, pose), X), uv, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(p=angles, s=tilts)
def test_angles_round_trip_through_direction(p, s):
    p2, s2 = angles_from_direction(beam_direction(p, s))
    assert s2 == pytest.approx(s, abs=1e-9)
    assert math.remainder(p2 - p, 2 * math.pi) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(g=geometries, pose=poses)
def test_dicom_header_round_trip(g, pose):
    ds = geometry_to_dicom(Dataset(), g, pose)
    g2, pose2 = geometry_from_dicom(ds, isocentre_world_mm=pose.isocentre_world_mm)
    assert g2.sdd_mm == pytest.approx(g.sdd_mm, rel=1e-5)
    assert g2.sod_mm == pytest.approx(g.sod_mm, rel=1e-5)
    assert_allclose(g2.pixel_spacing_mm, g.pixel_spacing_mm, rtol=1e-7)
    assert (g2.rows, g2.cols) == (g.rows, g.cols)
    assert math.remainder(pose2.primary_rad - pose.primary_rad, 2 * math.pi) == pytest.approx(0, abs=1e-7)
    assert pose2.secondary_rad == pytest.approx(pose.secondary_rad, abs=1e-7)
    assert pose2.patient_position == pose.patient_position


def test_sidecar_round_trip(tmp_path):
    g = CarmGeometry(sdd_mm=1020.0, sod_mm=610.0, rows=300, cols=200, pixel_spacing_mm=(0.5, 0.6),
                     principal_offset_px=(3.0, -2.0))
    pose = CarmPose(math.radians(30.0), math.radians(-12.0), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), "supine")
    path = tmp_path / "shot.json"
    import json
    path.write_text(json.dumps(sidecar_dict(g, pose)))
    g2, pose2, _ = read_sidecar(path)
    assert_allclose(projection_matrix(g2, pose2), projection_matrix(g, pose), atol=1e-9)


def test_sign_conventions_documented():
    # LAO +90: detector at the patient's left (+x); cranial +: detector towards the head (+z)
    assert_allclose(beam_direction(math.pi / 2, 0.0), [1, 0, 0], atol=1e-12)
    assert_allclose(beam_direction(0.0, math.pi / 2), [0, 0, 1], atol=1e-12)
    # prone AP (tube under the table, detector on the back): patient's left on the image's right, head up
    g = CarmGeometry.square(128)
    P = projection_matrix(g, CarmPose(math.pi, 0.0, (0, 0, 0), patient_position="prone"))
    centre, left, head = project_points(P, [[0, 0, 0], [50, 0, 0], [0, 0, 50]])
    assert left[0] > centre[0] and head[1] < centre[1]
    # lateral with the detector at the left: anterior (-y) on the image's right
    P = projection_matrix(g, CarmPose(math.pi / 2, 0.0, (0, 0, 0)))
    centre, anterior = project_points(P, [[0, 0, 0], [0, -50, 0]])
    assert anterior[0] > centre[0]


def test_table_translation_moves_the_image_of_a_fixed_point():
    g = CarmGeometry.square(256)
    pose = CarmPose(math.pi, 0.0, (0.0, 0.0, 0.0))
    X = np.array([[0.0, 0.0, 0.0]])
    moved = pose.with_table_move((0.0, 0.0, 10.0))  # patient 10 mm towards the head
    uv0 = project_points(projection_matrix(g, pose), X)[0]
    uv1 = project_points(projection_matrix(g, moved), X)[0]
    # the point is now 10 mm cranial of the isocentre: up in the image by 10 * SID/SOD / pitch
    assert uv0[1] - uv1[1] == pytest.approx(10.0 * g.magnification / g.pixel_spacing_mm[0], rel=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sdd_mm=500.0, sod_mm=600.0), "sod_mm < sdd_mm"),
    (dict(pixel_spacing_mm=(0.0, 1.0)), "pixel_spacing_mm"),
    (dict(rows=0), "positive integers"),
])
def test_bad_geometry_is_refused(kwargs, match):
    with pytest.raises(CarmGeometryError, match=match):
        CarmGeometry(**kwargs)


def test_dicom_without_sid_is_refused():
    ds = Dataset()
    ds.ImagerPixelSpacing = [0.2, 0.2]
    with pytest.raises(CarmGeometryError, match="DistanceSourceToDetector"):
        geometry_from_dicom(ds, source="x.dcm")


def test_points_behind_the_source_have_no_image():
    g = CarmGeometry.square(64)
    pose = CarmPose(0.0, 0.0, (0.0, 0.0, 0.0))
    behind = source_world_mm(g, pose) - 10.0 * beam_direction(0.0, 0.0)
    assert np.isnan(project_points(projection_matrix(g, pose), behind)).all()
