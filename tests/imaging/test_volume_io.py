"""Volume geometry, file round trips and resampling: a landmark must keep its world position."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nibabel.affines import apply_affine, from_matvec
from numpy.testing import assert_allclose
from scipy import ndimage
from scipy.spatial.transform import Rotation

from spinenav.atomic import atomic_output
from spinenav.errors import ImageReadError, SpinenavWarning
from spinenav.imaging import (
    Volume,
    check_ct_intensities,
    crop_to_box,
    read_volume,
    reorient_to_lps,
    resample_like,
    resample_to_grid,
    resample_to_orthogonal,
    resample_to_spacing,
    window,
    write_nifti,
    write_nrrd,
)
from spinenav.imaging.io import T_LPS_FROM_RAS, volume_from_sitk

SHAPE = (9, 11, 7)
POSITION_TOL_MM = 1e-4  # float32 storage of NIfTI/ITK headers: ~1e-5 relative on ~300 mm


def _random_affine(rotvec, spacing, origin, flip) -> np.ndarray:
    R = Rotation.from_rotvec(rotvec).as_matrix() @ np.diag(flip)
    return from_matvec(R * np.asarray(spacing), origin)


affines = st.builds(
    _random_affine,
    st.lists(st.floats(-np.pi, np.pi), min_size=3, max_size=3),
    st.lists(st.floats(0.3, 3.0), min_size=3, max_size=3),
    st.lists(st.floats(-300, 300), min_size=3, max_size=3),
    st.sampled_from([(1, 1, 1), (-1, 1, 1), (1, -1, 1), (1, 1, -1), (-1, -1, -1)]),
)
landmarks = st.tuples(st.integers(1, SHAPE[0] - 2), st.integers(1, SHAPE[1] - 2),
                      st.integers(1, SHAPE[2] - 2))


def _landmark_volume(affine: np.ndarray, ijk: tuple[int, int, int]) -> Volume:
    a = np.full(SHAPE, -1000, np.int16)
    a[ijk] = 1500
    return Volume(a, affine)


def _landmark_world(v: Volume) -> np.ndarray:
    return v.world_from_index(np.unravel_index(np.argmax(v.array), v.shape))


# ---------------------------------------------------------------------------- Volume itself
def test_volume_geometry_properties():
    v = Volume(np.zeros((4, 5, 6), np.int16), from_matvec(np.diag([-0.5, 0.8, 2.0]), [10, 20, 30]))
    assert v.axcodes == ("R", "P", "S")
    assert_allclose(v.spacing_mm, [0.5, 0.8, 2.0])
    assert_allclose(v.origin_world_mm, [10, 20, 30])
    assert_allclose(v.world_from_index([1, 1, 1]), [9.5, 20.8, 32.0])
    assert_allclose(v.index_from_world(v.world_from_index([2.5, 3, 4])), [2.5, 3, 4])
    assert not v.is_oblique and v.is_orthogonal
    assert_allclose(v.center_world_mm, v.world_from_index([1.5, 2, 2.5]))


@pytest.mark.parametrize("bad, match", [
    (dict(array=np.zeros((3, 3))), "3D"),
    (dict(affine=np.eye(3)), "4x4"),
    (dict(affine=np.diag([1.0, 0.0, 1.0, 1.0])), "singular"),
    (dict(affine=np.vstack([np.eye(4)[:3], [1, 0, 0, 1]])), "last row"),
    (dict(meta={"patient_name": "Doe^Jane"}), "not allowed"),
])
def test_volume_rejects_bad_construction(bad, match):
    kwargs = dict(array=np.zeros((2, 2, 2)), affine=np.eye(4)) | bad
    with pytest.raises(ValueError, match=match):
        Volume(**kwargs)


def test_oblique_and_sheared_flags():
    R = Rotation.from_euler("x", 20, degrees=True).as_matrix()
    assert Volume(np.zeros((2, 2, 2)), from_matvec(R)).is_oblique
    shear = np.eye(4)
    shear[1, 2] = np.tan(np.radians(15))  # k steps 15 deg off the normal: gantry tilt
    v = Volume(np.zeros((2, 2, 2)), shear)
    assert_allclose(v.shear_deg, 15.0, atol=1e-6)
    assert not v.is_orthogonal


# ---------------------------------------------------------------------------- file round trips
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(affine=affines, ijk=landmarks, suffix=st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"]))
def test_round_trip_keeps_landmark_world_position(tmp_path, affine, ijk, suffix):
    v = _landmark_volume(affine, ijk)
    path = tmp_path / f"v{suffix}"
    (write_nifti if "nii" in suffix else write_nrrd)(v, path)
    back = read_volume(path)
    assert back.array.dtype == np.int16
    assert_allclose(_landmark_world(back), _landmark_world(v), atol=POSITION_TOL_MM)
    assert_allclose(back.affine, v.affine, atol=POSITION_TOL_MM)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(affine=affines, ijk=landmarks)
def test_nifti_holds_ras_and_simpleitk_agrees(tmp_path, affine, ijk):
    """An independent reader (ITK converts RAS to LPS itself) sees the same world landmark."""
    v = _landmark_volume(affine, ijk)
    path = write_nifti(v, tmp_path / "v.nii.gz")
    ras = nib.load(path).affine
    assert_allclose(ras, T_LPS_FROM_RAS @ v.affine, atol=POSITION_TOL_MM)
    itk = volume_from_sitk(sitk.ReadImage(str(path)))
    assert_allclose(_landmark_world(itk), _landmark_world(v), atol=POSITION_TOL_MM)


def test_label_maps_are_written_as_unsigned_integers(tmp_path):
    labels = Volume(np.array([[[0, 1], [27, 250]]] * 2, dtype=np.int64), np.eye(4), is_label=True)
    back = nib.load(write_nifti(labels, tmp_path / "l.nii.gz"))
    assert back.get_data_dtype() == np.uint8
    with pytest.raises(ValueError, match="negative"):
        write_nifti(labels.with_array(-labels.array), tmp_path / "bad.nii.gz")


def test_sheared_volume_nifti_keeps_shear_but_nrrd_refuses(tmp_path):
    shear = np.eye(4)
    shear[1, 2] = 0.3
    v = _landmark_volume(shear, (3, 4, 5))
    back = read_volume(write_nifti(v, tmp_path / "s.nii.gz"))
    assert_allclose(back.affine, shear, atol=1e-6)
    with pytest.raises(ValueError, match="resample_to_orthogonal"):
        write_nrrd(v, tmp_path / "s.nrrd")
    assert not (tmp_path / "s.nrrd").exists()


def test_nifti_without_orientation_warns(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.int16) - 1000, np.eye(4))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    nib.save(img, tmp_path / "noorient.nii")
    with pytest.warns(SpinenavWarning, match="orientation is unknown"):
        v = read_volume(tmp_path / "noorient.nii")
    assert any("orientation is unknown" in n for n in v.meta["reader_notes"])


def test_truncated_nifti_names_the_file(tmp_path):
    good = write_nifti(_landmark_volume(np.eye(4), (2, 2, 2)), tmp_path / "g.nii")
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(gzip.compress(good.read_bytes()[:400]))
    with pytest.raises(ImageReadError, match="truncated.nii.gz"):
        read_volume(bad)


@pytest.mark.parametrize("name, content, match", [
    ("missing.nii.gz", None, "no such file"),
    ("notes.txt", b"hello", "unknown image format"),
    ("broken.nrrd", b"NRRD0004\ntype: garbage\n", "cannot read as NRRD"),
])
def test_bad_files_are_refused_with_their_name(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=match) as info:
        read_volume(tmp_path / name)
    assert name in str(info.value)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- resampling
def _sphere_volume(affine: np.ndarray, centre_world_mm, radius_mm=6.0, shape=(40, 44, 36)) -> Volume:
    v = Volume(np.zeros(shape, np.int16), affine)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    d = np.linalg.norm(v.world_from_index(ijk) - centre_world_mm, axis=-1)
    return v.with_array(np.where(d <= radius_mm, 1000, -1000).astype(np.int16))


def _centroid_world(v: Volume, threshold=0) -> np.ndarray:
    w = np.clip(v.array.astype(float) - threshold, 0, None)
    return v.world_from_index(np.array(ndimage.center_of_mass(w)))


CENTROID_TOL_MM = 0.15  # centroid of a 6 mm sphere sampled at ~1 mm: partial-volume error


def test_resample_to_spacing_keeps_world_positions():
    affine = from_matvec(Rotation.from_euler("zy", [25, -10], degrees=True).as_matrix()
                         * [0.8, 0.9, 1.1], [-20, 15, 40])
    centre = affine[:3, :3] @ [20, 22, 18] + affine[:3, 3] + [0.3, -0.2, 0.4]
    v = _sphere_volume(affine, centre)
    r = resample_to_spacing(v, [0.6, 0.7, 1.5])
    assert_allclose(r.spacing_mm, [0.6, 0.7, 1.5])
    assert_allclose(r.direction, v.direction, atol=1e-12)
    assert_allclose(_centroid_world(r), centre, atol=CENTROID_TOL_MM)
    assert r.array.dtype == np.int16


def test_resample_like_rotated_grid_and_labels_stay_integer():
    v = _sphere_volume(np.diag([1.0, 1.0, 1.0, 1.0]), [20.0, 21.0, 17.0])
    R = Rotation.from_euler("x", 30, degrees=True).as_matrix()
    ref_affine = from_matvec(R * 0.9, np.array([20.0, 21.0, 17.0]) - R @ (0.9 * np.array([23, 23, 20])))
    ref = Volume(np.zeros((46, 46, 40), np.int16), ref_affine)
    r = resample_like(v, ref)
    assert_allclose(_centroid_world(r), [20.0, 21.0, 17.0], atol=CENTROID_TOL_MM)
    labels = v.with_array((v.array > 0).astype(np.uint8) * 7, is_label=True)
    rl = resample_like(labels, ref)
    assert rl.array.dtype == np.uint8 and set(np.unique(rl.array)) == {0, 7}
    with pytest.raises(ValueError, match="order=0"):
        resample_to_grid(labels, ref.shape, ref.affine, order=1)


def test_resample_to_orthogonal_undoes_gantry_tilt():
    tilt = np.radians(20)
    sheared = np.array([[0.9, 0, 0, 0], [0, 0.9, np.tan(tilt) * 2.0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    centre = np.array([18.0, 25.0, 30.0])
    v = _sphere_volume(sheared, centre, radius_mm=7.0, shape=(40, 60, 30))
    o = resample_to_orthogonal(v)
    assert o.is_orthogonal
    assert_allclose(o.spacing_mm, [0.9, 0.9, 2.0], atol=1e-9)
    assert_allclose(_centroid_world(o), centre, atol=0.3)  # 2 mm slices: coarser partial volume


def test_crop_keeps_world_positions_and_refuses_outside_box():
    v = _sphere_volume(np.diag([1.0, 1.0, 1.0, 1.0]), [20.0, 21.0, 17.0])
    c = crop_to_box(v, [10, 10, 5], [30, 32, 30])
    assert c.shape == (21, 23, 26)
    assert_allclose(c.origin_world_mm, [10, 10, 5])
    assert_allclose(_centroid_world(c), _centroid_world(v), atol=1e-9)
    with pytest.raises(ValueError, match="does not overlap"):
        crop_to_box(v, [500, 500, 500], [600, 600, 600])


def test_reorient_to_lps_flips_axes_without_moving_anatomy():
    affine = np.array([[0, 0, -2.0, 50], [-1.0, 0, 0, 30], [0, 1.5, 0, -20], [0, 0, 0, 1]])
    v = _sphere_volume(affine, apply_affine(affine, [20, 22, 18]))
    r = reorient_to_lps(v)
    assert r.axcodes == ("L", "P", "S")
    assert_allclose(_centroid_world(r), _centroid_world(v), atol=1e-9)


def test_window_maps_level_and_width():
    assert window([-1000, 400, 1300], level=400, width=1800).tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="width"):
        window([0], level=0, width=0)


def test_ct_intensity_check_flags_mr_like_values():
    assert check_ct_intensities(Volume(np.array([[[-1024, 40], [700, 1200]]] * 2, np.int16), np.eye(4))) == []
    doubts = check_ct_intensities(Volume(np.array([[[0, 400], [800, 1500]]] * 2, np.int16), np.eye(4)))
    assert doubts and "MR" in doubts[0]


# ---------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_chest_ct_geometry_matches_readme_and_simpleitk(chest_ct_path: Path):
    v = read_volume(chest_ct_path)
    assert v.shape == (512, 512, 133)
    assert_allclose(v.spacing_mm, [0.703125, 0.703125, 2.5], atol=1e-6)
    assert v.axcodes == ("L", "A", "S")  # the data README: LAS
    img = sitk.ReadImage(str(chest_ct_path))
    assert_allclose(v.origin_world_mm, img.GetOrigin(), atol=1e-4)
    assert_allclose(v.direction.ravel(), img.GetDirection(), atol=1e-6)
    assert np.array_equal(v.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))
    assert v.array.dtype == np.int16 and v.value_range[0] <= -1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_ct_intensities(v) == []


def test_resampling_an_oblique_volume_onto_itself_keeps_its_border():
    """Rounding put the outermost voxel centres ~1e-14 voxel outside the source: they must keep
    their values (a volume covers its voxels edge to edge), not become fill."""
    affine = from_matvec(Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
                         * [0.8, 0.9, 1.2], [5, -3, 10])
    v = Volume(np.full((20, 22, 18), -1000, np.int16), affine)
    assert np.array_equal(resample_like(v, v).array, v.array)
    assert np.array_equal(resample_to_spacing(v, v.spacing_mm).array, v.array)
    far = resample_to_grid(v, (4, 4, 4), from_matvec(np.eye(3), [500.0, 500.0, 500.0]))
    assert np.all(far.array == -1024)  # truly outside: air


@pytest.mark.parametrize("name", ["UP.NII.GZ", "UP.MHA"])
def test_upper_case_extensions_write_atomically(tmp_path, name):
    v = _landmark_volume(np.eye(4), (2, 2, 2))
    (write_nifti if "NII" in name else write_nrrd)(v, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert read_volume(tmp_path / name).shape == SHAPE
