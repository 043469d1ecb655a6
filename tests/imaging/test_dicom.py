"""DICOM series reading: geometry against SimpleITK on real data, round trips through the writer,
and one test per bad input (one ``pytest.raises`` or ``pytest.warns`` each)."""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.affines import from_matvec
from numpy.testing import assert_allclose, assert_array_equal
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import MRImageStorage, RLELossless, generate_uid
from scipy.spatial.transform import Rotation

import dicom_factory as fx
from spinenav.errors import DicomSeriesError, DicomWarning
from spinenav.imaging import dicom
from spinenav.imaging.dicom import list_series, read_dicom_series
from spinenav.imaging.io import read_volume
from spinenav.imaging.volume import Volume

POSITION_TOL_MM = 1e-6  # DS strings keep 14 significant digits: ~1e-11 mm on positions < 1 m
CENTROID_TOL_MM = 0.5  # resampling moves the sphere ~0.01 mm; ignoring the tilt, 7.5 mm


def read_quietly(folder: Path, **options: object):
    """Read, failing the test on any DicomWarning (for inputs that should read cleanly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomWarning)
        return read_dicom_series(folder, **options)


@pytest.fixture()
def series(tmp_path: Path) -> Path:
    """A clean 12 x 10 x 8 synthetic CT series (axial, HFS)."""
    return fx.write_series(tmp_path / "series")


# ------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_series_geometry_matches_simpleitk(abdomen_series_dir: Path) -> None:
    vol = read_quietly(abdomen_series_dir)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(abdomen_series_dir.iterdir())]
    lowest = min(headers, key=lambda ds: float(ds.ImagePositionPatient[2]))  # k runs feet -> head
    assert vol.shape == (512, 512, 20)
    assert_allclose(vol.spacing_mm, [0.9765625, 0.9765625, 2.0])
    assert_allclose(vol.origin_world_mm, [float(v) for v in lowest.ImagePositionPatient])
    assert_allclose(vol.origin_world_mm, [-249.51171875, -437.51171875, -804.5])
    assert vol.axcodes == ("L", "P", "S")
    assert vol.array.dtype == np.int16
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(abdomen_series_dir)))
    img = reader.Execute()
    assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), vol.array)
    sitk_affine = from_matvec(np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing()),
                              img.GetOrigin())
    assert_allclose(vol.affine, sitk_affine, atol=POSITION_TOL_MM)
    assert vol.meta["patient_position"] == "HFS" and vol.meta["gantry_tilt_deg"] == 0.0
    assert vol.meta["units"] == "HU" and vol.meta["kvp_kv"] == 120.0


@pytest.mark.realdata
def test_real_series_air_in_front_of_the_patient_is_about_minus_1000_hu(
        abdomen_series_dir: Path) -> None:
    vol = read_quietly(abdomen_series_dir)
    air = vol.array[236:276, 20:60, :]  # centre columns, the rows in front of the abdomen
    assert -1030 < float(np.median(air)) < -970
    assert vol.array.min() >= -1024 and 800 < vol.array.max() < 3000  # bone, no metal


@pytest.mark.realdata
def test_real_series_truncated_jpeg2000_file_is_named(abdomen_series_dir: Path, tmp_path: Path) -> None:
    folder = fx.copy_series(abdomen_series_dir, tmp_path / "series")
    victim = sorted(folder.iterdir())[7]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DicomSeriesError, match=rf"{victim.name} is truncated"):
        read_dicom_series(folder)


# ------------------------------------------------------------------------------ round trips
def test_round_trip_keeps_array_affine_and_landmark(series: Path) -> None:
    original = fx.ct_volume()
    vol = read_quietly(series)
    assert_array_equal(vol.array, original.array)
    assert_allclose(vol.affine, original.affine, atol=POSITION_TOL_MM)
    landmark = (7, 3, 5)
    assert vol.array[landmark] == original.array[landmark]
    assert_allclose(vol.world_from_index(landmark), original.world_from_index(landmark),
                    atol=POSITION_TOL_MM)


def test_round_trip_oblique_volume(tmp_path: Path) -> None:
    rotation = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
    original = fx.ct_volume(rotation=rotation, origin_mm=(12.5, -40.25, 310.0))
    vol = read_quietly(fx.write_series(tmp_path / "oblique", original))
    assert vol.is_oblique
    assert_array_equal(vol.array, original.array)
    assert_allclose(vol.affine, original.affine, atol=POSITION_TOL_MM)


def test_round_trip_with_k_towards_the_feet_keeps_world_positions(tmp_path: Path) -> None:
    """The reader orders slices along +normal (like ITK), so a volume whose k axis points to the
    feet comes back with k flipped: same voxels at the same world positions."""
    original = fx.ct_volume(spacing_mm=(0.8, 0.7, -2.0))
    assert original.axcodes == ("L", "P", "I")
    vol = read_quietly(fx.write_series(tmp_path / "feet", original))
    assert vol.axcodes == ("L", "P", "S")
    assert_array_equal(vol.array, original.array[:, :, ::-1])
    landmark = np.array([7, 3, 1])
    flipped = np.array([7, 3, original.shape[2] - 1 - 1])
    assert vol.array[tuple(flipped)] == original.array[tuple(landmark)]
    assert_allclose(vol.world_from_index(flipped), original.world_from_index(landmark),
                    atol=POSITION_TOL_MM)


@settings(max_examples=30, deadline=None)
@given(
    rotation_seed=st.integers(0, 2**31 - 1),
    spacing_mm=st.tuples(*[st.floats(0.3, 3.0)] * 3),
    origin_mm=st.tuples(*[st.floats(-500.0, 500.0)] * 3),
    shape=st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(2, 6)),
    k_to_feet=st.booleans(),
)
def test_round_trip_property(rotation_seed: int, spacing_mm: tuple[float, float, float],
                             origin_mm: tuple[float, float, float], shape: tuple[int, int, int],
                             k_to_feet: bool) -> None:
    rotation = Rotation.random(random_state=rotation_seed).as_matrix()
    sign = -1.0 if k_to_feet else 1.0
    original = fx.ct_volume(shape, spacing_mm=(spacing_mm[0], spacing_mm[1], sign * spacing_mm[2]),
                            origin_mm=origin_mm, rotation=rotation, seed=rotation_seed % 1000)
    with tempfile.TemporaryDirectory() as tmp:
        vol = read_quietly(fx.write_series(Path(tmp) / "s", original))
    expected_affine = original.affine.copy()
    if k_to_feet:  # k comes back along +normal, starting from the last slice written
        expected_affine[:3, 3] = original.world_from_index([0, 0, shape[2] - 1])
        expected_affine[:3, 2] *= -1.0
    assert_array_equal(vol.array, original.array[:, :, ::-1] if k_to_feet else original.array)
    assert_allclose(vol.affine, expected_affine, atol=POSITION_TOL_MM)
    corner = np.array([shape[0] - 1, shape[1] - 1, shape[2] - 1])  # a landmark voxel
    source = corner.copy()
    source[2] = 0 if k_to_feet else shape[2] - 1
    assert vol.array[tuple(corner)] == original.array[tuple(source)]
    assert_allclose(vol.world_from_index(corner), original.world_from_index(source),
                    atol=POSITION_TOL_MM)


def test_rle_compressed_series_reads_back_identical(series: Path) -> None:
    fx.edit(fx.series_files(series), lambda ds: ds.compress(RLELossless))
    assert pydicom.dcmread(fx.series_files(series)[0]).file_meta.TransferSyntaxUID == RLELossless
    vol = read_quietly(series)
    assert_array_equal(vol.array, fx.ct_volume().array)


def test_read_volume_dispatches_a_folder_with_options(tmp_path: Path) -> None:
    folder = fx.write_series(tmp_path / "s")
    fx.series_files(folder)[3].unlink()
    with pytest.warns(DicomWarning, match="allow_gaps"):
        vol = read_volume(folder, allow_gaps=True)
    assert vol.shape == (12, 10, 8)


# ------------------------------------------------------------------------------- gantry tilt
def test_gantry_tilt_is_resampled_and_a_sphere_stays_put(tmp_path: Path) -> None:
    tilt_deg, dz_mm = 15.0, 2.0
    affine = np.eye(4)
    affine[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 1.0, math.tan(math.radians(tilt_deg)) * dz_mm],
                      [0.0, 0.0, dz_mm]]  # each slice's IPP shifted in y by tan(tilt) * z
    affine[:3, 3] = [-24.0, -30.0, -20.0]
    center_world_mm = np.array([1.3, 2.7, 8.1])
    tilted = fx.sphere_volume(center_world_mm=center_world_mm, radius_mm=8.0, affine=affine,
                              shape=(48, 48, 26))
    folder = fx.write_series(tmp_path / "tilted", tilted)
    with pytest.warns(DicomWarning, match=r"gantry tilt of 15\.00 deg"):
        vol = read_dicom_series(folder)
    assert vol.is_orthogonal
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(tilt_deg, abs=1e-6)
    assert any("gantry tilt" in note for note in vol.meta["reader_notes"])
    error_mm = np.linalg.norm(fx.bright_centroid_world_mm(vol) - center_world_mm)
    assert error_mm < CENTROID_TOL_MM, f"sphere moved {error_mm:.2f} mm"


def test_gantry_tilt_in_strict_mode_is_an_error(tmp_path: Path) -> None:
    affine = np.diag([0.8, 0.7, 2.0, 1.0])
    affine[1, 2] = 0.5  # 14 deg
    folder = fx.write_series(tmp_path / "tilted", Volume(fx.ct_volume().array, affine))
    with pytest.raises(DicomSeriesError, match=r"gantry tilt of 14\.04 deg.*strict mode"):
        read_dicom_series(folder, strict=True)


# ------------------------------------------------------------------------------ slice positions
def test_missing_slice_is_an_error_naming_both_neighbours(series: Path) -> None:
    fx.series_files(series)[3].unlink()
    with pytest.raises(DicomSeriesError, match=r"4\.000 mm between slice_0003\.dcm and "
                       r"slice_0005\.dcm, 2\.000 mm elsewhere, about 1 slice\(s\) missing.*allow_gaps"):
        read_dicom_series(series)


def test_allow_gaps_interpolates_the_missing_slice(tmp_path: Path) -> None:
    i, j, k = np.meshgrid(np.arange(12), np.arange(10), np.arange(8), indexing="ij")
    linear = fx.ct_volume().with_array((100 * k + 3 * i - 2 * j - 500).astype(np.int16))
    folder = fx.write_series(tmp_path / "gap", linear)
    for path in [fx.series_files(folder)[n] for n in (2, 3, 5)]:  # slices k = 2, 3 and 5
        path.unlink()
    with pytest.warns(DicomWarning, match=r"resampled 5 slices onto a regular grid of 8 slices"):
        vol = read_dicom_series(folder, allow_gaps=True)
    assert_array_equal(vol.array, linear.array)  # linear in k: interpolation is exact
    assert_allclose(vol.affine, linear.affine, atol=POSITION_TOL_MM)


def test_duplicate_slice_is_an_error(series: Path) -> None:
    fx.copy_as_new_instance(fx.series_files(series)[2], series / "copy_of_3.dcm")
    with pytest.raises(DicomSeriesError, match=r"copy_of_3\.dcm and slice_0003\.dcm lie at the same "
                       r"position|slice_0003\.dcm and copy_of_3\.dcm lie at the same position"):
        read_dicom_series(series)


def test_slices_off_a_straight_line_are_an_error(series: Path) -> None:
    fx.edit(fx.series_files(series)[4], lambda ds: setattr(
        ds, "ImagePositionPatient", [float(ds.ImagePositionPatient[0]) + 5.0,
                                     *map(float, ds.ImagePositionPatient[1:])]))
    with pytest.raises(DicomSeriesError, match=r"slice_0005\.dcm is 5\.00 mm off the line"):
        read_dicom_series(series)


def test_sorting_ignores_instance_numbers(series: Path) -> None:
    files = fx.series_files(series)
    for n, path in enumerate(files):
        fx.edit(path, fx.set_values(InstanceNumber=(n * 5) % 8 + 1))  # shuffled numbering
    assert_array_equal(read_quietly(series).array, fx.ct_volume().array)


# ------------------------------------------------------------------------- slice consistency
def test_orientation_mismatch_is_an_error_with_both_files(series: Path) -> None:
    c, s = math.cos(math.radians(5.0)), math.sin(math.radians(5.0))
    fx.edit(fx.series_files(series)[4], fx.set_values(ImageOrientationPatient=[c, s, 0, -s, c, 0]))
    with pytest.raises(DicomSeriesError, match=r"ImageOrientationPatient differs between "
                       r"slice_0001\.dcm \(\[1, 0, 0, 0, 1, 0\]\) and slice_0005\.dcm .* by 5\.00 deg"):
        read_dicom_series(series)


def test_pixel_spacing_mismatch_is_an_error_with_both_files(series: Path) -> None:
    fx.edit(fx.series_files(series)[1], fx.set_values(PixelSpacing=[0.9, 0.9]))
    with pytest.raises(DicomSeriesError, match=r"PixelSpacing differs between slice_0001\.dcm "
                       r"\(\[0\.7, 0\.8\] mm\) and slice_0002\.dcm \(\[0\.9, 0\.9\] mm\)"):
        read_dicom_series(series)


def test_matrix_size_mismatch_is_an_error(series: Path) -> None:
    def shrink(ds: pydicom.Dataset) -> None:
        ds.Rows = 5
        ds.PixelData = ds.PixelData[: 5 * ds.Columns * 2]
    fx.edit(fx.series_files(series)[6], shrink)
    with pytest.raises(DicomSeriesError, match=r"matrix size differs .* slice_0007\.dcm \(5 x 12\)"):
        read_dicom_series(series)


def test_mixed_frames_of_reference_are_an_error(series: Path) -> None:
    fx.edit(fx.series_files(series)[5], fx.set_values(FrameOfReferenceUID=generate_uid()))
    with pytest.raises(DicomSeriesError, match=r"mixes frames of reference: slice_0001\.dcm .* "
                       r"slice_0006\.dcm"):
        read_dicom_series(series)


def test_missing_position_is_an_error(series: Path) -> None:
    fx.edit(fx.series_files(series)[2], lambda ds: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(DicomSeriesError, match=r"slice_0003\.dcm has no ImagePositionPatient"):
        read_dicom_series(series)


# --------------------------------------------------------------------------------- rescale
def test_missing_slope_warns_and_assumes_one(series: Path) -> None:
    fx.edit(fx.series_files(series), lambda ds: delattr(ds, "RescaleSlope"))
    with pytest.warns(DicomWarning, match=r"RescaleSlope absent in 8 of 8 files; assumed 1"):
        vol = read_dicom_series(series)
    assert_array_equal(vol.array, fx.ct_volume().array)


def test_strict_mode_turns_the_missing_slope_warning_into_an_error(series: Path) -> None:
    fx.edit(fx.series_files(series), lambda ds: delattr(ds, "RescaleSlope"))
    with pytest.raises(DicomSeriesError, match=r"RescaleSlope absent.*strict mode"):
        read_dicom_series(series, strict=True)


def test_zero_slope_is_an_error(series: Path) -> None:
    fx.edit(fx.series_files(series)[3], fx.set_values(RescaleSlope="0"))
    with pytest.raises(DicomSeriesError, match=r"slice_0004\.dcm: RescaleSlope is 0"):
        read_dicom_series(series)


def test_non_numeric_slope_is_an_error(series: Path) -> None:
    fx.replace_short_text(fx.series_files(series)[2], "RescaleSlope", b"abc")
    with pytest.raises(DicomSeriesError, match=r"slice_0003\.dcm: RescaleSlope is 'abc', not a number"):
        read_dicom_series(series)


def test_slope_and_intercept_are_applied_per_slice(series: Path) -> None:
    fx.edit(fx.series_files(series)[4], fx.set_values(RescaleSlope="2", RescaleIntercept="-100"))
    vol = read_quietly(series)
    expected = fx.ct_volume().array.astype(np.int32)
    expected[:, :, 4] = 2 * expected[:, :, 4] - 100
    assert vol.array.dtype == np.int16
    assert_array_equal(vol.array, expected)


def test_fractional_slope_gives_float32_with_a_warning(series: Path) -> None:
    fx.edit(fx.series_files(series), fx.set_values(RescaleSlope="0.5"))
    with pytest.warns(DicomWarning, match=r"0\.5/0 give non-integer values; the volume is float32"):
        vol = read_dicom_series(series)
    assert vol.array.dtype == np.float32
    assert_array_equal(vol.array, fx.ct_volume().array.astype(np.float32) * 0.5)


# --------------------------------------------------------------------------- what the folder holds
def test_not_a_folder_is_an_error(series: Path) -> None:
    with pytest.raises(DicomSeriesError, match=r"slice_0001\.dcm: is a file, not a folder"):
        read_dicom_series(fx.series_files(series)[0])


def test_folder_without_dicom_is_an_error_naming_the_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("scan protocol notes\n")
    (tmp_path / "series").mkdir()
    with pytest.raises(DicomSeriesError, match=r"holds no DICOM file \(1 file\(s\), none of them "
                       r"DICOM: notes\.txt \(20 bytes\)\); it has 1 subfolder"):
        read_dicom_series(tmp_path)


def test_non_dicom_file_among_the_slices_is_skipped_with_a_warning(series: Path) -> None:
    (series / "readme.txt").write_text("exported by the PACS\n")
    (series / "DICOMDIR").write_bytes(b"not read at all")  # ignored silently
    (series / ".DS_Store").write_bytes(b"\0" * 10)  # hidden: ignored silently
    with pytest.warns(DicomWarning, match=r"skipped 1 of 9 files that are not DICOM .*readme\.txt"):
        vol = read_dicom_series(series)
    assert vol.shape == (12, 10, 8)


def test_truncated_file_is_an_error_naming_it(series: Path) -> None:
    victim = fx.series_files(series)[5]
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(DicomSeriesError, match=r"slice_0006\.dcm is truncated"):
        read_dicom_series(series)


def test_corrupt_compressed_pixel_data_is_an_error_naming_the_file(series: Path) -> None:
    fx.edit(fx.series_files(series), lambda ds: ds.compress(RLELossless))

    def garble(ds: pydicom.Dataset) -> None:
        fragment = next(generate_fragments(ds.PixelData))
        ds.PixelData = encapsulate([b"\xff" * 64 + fragment[64:]])
    fx.edit(fx.series_files(series)[2], garble)
    with pytest.raises(DicomSeriesError, match=r"cannot decode the pixel data of slice_0003\.dcm "
                       r"\(RLE Lossless\)"):
        read_dicom_series(series)


def test_missing_codec_names_the_transfer_syntax_and_the_package(
        series: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fx.edit(fx.series_files(series), lambda ds: ds.compress(RLELossless))
    monkeypatch.setattr(dicom, "_decoder_available", lambda uid: False)
    with pytest.raises(DicomSeriesError, match=r"compressed as RLE Lossless "
                       r"\(1\.2\.840\.10008\.1\.2\.5\) and no decoder for it is installed; "
                       r"install pylibjpeg and pylibjpeg-rle"):
        read_dicom_series(series)


def test_transfer_syntax_without_any_decoder_is_an_error(series: Path) -> None:
    fx.edit(fx.series_files(series), lambda ds: ds.compress(RLELossless))
    fx.edit(fx.series_files(series), lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                                                        "1.2.840.10008.1.2.4.100"))
    with pytest.raises(DicomSeriesError, match=r"MPEG2 .* which pydicom cannot decode"):
        read_dicom_series(series)


def test_only_non_image_files_is_an_error(tmp_path: Path) -> None:
    for n in range(3):
        fx.write_non_image(tmp_path, f"report_{n}.dcm")
    with pytest.raises(DicomSeriesError, match=r"3 DICOM file\(s\) but none holds an image "
                       r"\(found SR x3"):
        read_dicom_series(tmp_path)


def test_mr_only_folder_is_an_error_saying_mr(series: Path) -> None:
    def to_mr(ds: pydicom.Dataset) -> None:
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    fx.edit(fx.series_files(series), to_mr)
    with pytest.raises(DicomSeriesError, match=r"holds no CT image series \(found MR only: series 1 "
                       r"'spinenav export' \(MR, 8 images\)\)"):
        read_dicom_series(series)


def test_seg_only_folder_is_an_error_saying_seg(series: Path) -> None:
    seg = "1.2.840.10008.5.1.4.1.1.66.4"

    def to_seg(ds: pydicom.Dataset) -> None:
        ds.Modality = "SEG"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = seg
    fx.edit(fx.series_files(series), to_seg)
    with pytest.raises(DicomSeriesError, match=r"found SEG only"):
        read_dicom_series(series)


def test_multiframe_file_is_refused(series: Path) -> None:
    def two_frames(ds: pydicom.Dataset) -> None:
        ds.NumberOfFrames = 2
        ds.PixelData = ds.PixelData * 2
    fx.edit(fx.series_files(series)[0], two_frames)
    with pytest.raises(DicomSeriesError, match=r"slice_0001\.dcm is a multi-frame image \(2 frames\)"
                       r".*dcm2niix"):
        read_dicom_series(series)


def test_localizer_mixed_in_is_skipped_with_a_warning(series: Path) -> None:
    fx.copy_as_new_instance(fx.series_files(series)[0], series / "scout.dcm", fx.set_values(
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], ImageOrientationPatient=[0, 1, 0, 0, 0, -1]))
    with pytest.warns(DicomWarning, match=r"skipped 1 localizer \(scout\) image\(s\) mixed into the "
                      r"series: scout\.dcm; read the 8 other slices"):
        vol = read_dicom_series(series)
    assert_array_equal(vol.array, fx.ct_volume().array)


def test_two_ct_series_pick_the_larger_and_warn(tmp_path: Path) -> None:
    big = fx.write_series(tmp_path / "big", series_description="CT 1mm", series_number=3)
    small = fx.write_series(tmp_path / "small", fx.ct_volume((12, 10, 5), seed=1),
                            series_description="CT 5mm", series_number=2)
    folder = fx.merge_series(tmp_path / "study", big, small)
    with pytest.warns(DicomWarning, match=r"holds 2 image series; read series 3 'CT 1mm' \(CT, 8 "
                      r"images\), .* left series 2 'CT 5mm' \(CT, 5 images\); pass series_uid="):
        vol = read_dicom_series(folder)
    assert vol.shape == (12, 10, 8)


def test_ct_is_picked_over_a_larger_mr_series(tmp_path: Path) -> None:
    ct = fx.write_series(tmp_path / "ct", fx.ct_volume((12, 10, 5)), series_number=2)
    mr = fx.write_series(tmp_path / "mr", series_description="T2 axial", series_number=7)
    fx.edit(fx.series_files(mr), fx.set_values(Modality="MR", SOPClassUID=MRImageStorage))
    folder = fx.merge_series(tmp_path / "study", ct, mr)
    with pytest.warns(DicomWarning, match=r"left series 7 'T2 axial' \(MR, 8 images\)"):
        vol = read_dicom_series(folder)
    assert vol.shape == (12, 10, 5)


def test_series_uid_selects_a_series(tmp_path: Path) -> None:
    big = fx.write_series(tmp_path / "big", series_number=3)
    small = fx.write_series(tmp_path / "small", fx.ct_volume((12, 10, 5), seed=1), series_number=2)
    folder = fx.merge_series(tmp_path / "study", big, small)
    summaries = list_series(folder)
    assert [(s.series_number, s.n_images) for s in summaries] == [(2, 5), (3, 8)]
    vol = read_quietly(folder, series_uid=summaries[0].series_uid)
    assert_array_equal(vol.array, fx.ct_volume((12, 10, 5), seed=1).array)


def test_unknown_series_uid_is_an_error_listing_the_series(series: Path) -> None:
    with pytest.raises(DicomSeriesError, match=r"no image series with SeriesInstanceUID '1\.2\.3'; "
                       r"the image series here are: series 1 'spinenav export' \(CT, 8 images\) uid="):
        read_dicom_series(series, series_uid="1.2.3")


# ------------------------------------------------------------------------------- identifiers
def test_messages_and_meta_never_carry_patient_identifiers(tmp_path: Path) -> None:
    big = fx.write_series(tmp_path / "big", series_number=3)
    small = fx.write_series(tmp_path / "small", fx.ct_volume((12, 10, 5)), series_number=2)
    base = fx.merge_series(tmp_path / "study", big, small)
    files = sorted(base.glob("a_*.dcm"))  # the larger series, the one read
    fx.edit(sorted(base.glob("*.dcm")), fx.set_values(**fx.FAKE_PHI))
    fx.edit(files[1], lambda ds: delattr(ds, "RescaleSlope"))
    fx.copy_as_new_instance(files[0], base / "scout.dcm", fx.set_values(ImageType=["LOCALIZER"]))
    (base / "notes.txt").write_text("x")
    texts: list[str] = []
    damages = {  # three or four warnings each time, then nothing or one fatal error
        "none": lambda folder: None,
        "gap": lambda folder: (folder / files[3].name).unlink(),
        "duplicate": lambda folder: fx.copy_as_new_instance(folder / files[2].name, folder / "dup.dcm"),
        "orientation": lambda folder: fx.edit(folder / files[5].name, fx.set_values(
            ImageOrientationPatient=[0, 1, 0, 0, 0, 1])),
    }
    for name, damage in damages.items():
        folder = shutil.copytree(base, tmp_path / name)
        damage(folder)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                vol = read_dicom_series(folder)
                texts += [repr(vol.meta), repr(list_series(folder))]
            except DicomSeriesError as exc:
                texts.append(str(exc))
        texts += fx.messages(record)
        assert len(record) >= 3, name
    assert len(texts) >= 4 * 3 + 2 + 3
    for text in texts:
        for value in fx.FAKE_PHI.values():
            assert value not in text and value.split("^")[0] not in text


def test_list_series_summarises_without_identifiers(tmp_path: Path) -> None:
    folder = fx.write_series(tmp_path / "s")
    fx.edit(fx.series_files(folder), fx.set_values(**fx.FAKE_PHI))
    fx.write_non_image(folder, "dose_report.dcm")
    summaries = list_series(folder)
    assert [(s.modality, s.n_files, s.n_images) for s in summaries] == [("CT", 8, 8), ("SR", 1, 0)]
    assert summaries[0].describe() == "series 1 'spinenav export' (CT, 8 images)"
    assert not any(v in repr(summaries) for v in fx.FAKE_PHI.values())


def test_progress_is_reported_and_monotonic(series: Path) -> None:
    calls: list[tuple[int, int]] = []
    read_quietly(series, progress=lambda done, total: calls.append((done, total)))
    done = [c[0] for c in calls]
    assert done == sorted(done) and calls[-1] == (16, 16)
    assert all(d <= t for d, t in calls)


def test_no_identifier_reaches_the_volume(tmp_path, abdomen_series_dir):
    """A folder named after the patient and a free-text description naming them: neither may
    enter the Volume's meta (which can travel into files)."""
    import shutil

    import pydicom

    folder = tmp_path / "DOE_JANE_19700101"
    shutil.copytree(abdomen_series_dir, folder)
    files = sorted(folder.iterdir())
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "CT Doe^Jane abdomen"
        ds.PatientName = "Doe^Jane"
        ds.save_as(f)
    files[0].unlink()  # a warning-free series would not exercise the notes: drop an end slice
    (folder / "notes.txt").write_text("not dicom")
    with pytest.warns(Warning):
        volume = read_dicom_series(folder)
    text = repr(volume.meta)
    assert "Doe" not in text and "DOE" not in text and "JANE" not in text
    assert any("the series folder" in n for n in volume.meta["reader_notes"])
