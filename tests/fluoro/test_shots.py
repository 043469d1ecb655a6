"""Real X-ray images in: DICOM XA/RF/DX/CR and PNG/TIFF + sidecar, built here with known geometry."""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest
from numpy.testing import assert_allclose
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from spinenav.fluoro.carm import CarmGeometry, CarmPose, geometry_to_dicom, projection_matrix
from spinenav.fluoro.shots import ShotReadError, read_shot, write_shot_png

SOP_CLASS = {"XA": "1.2.840.10008.5.1.4.1.1.12.1", "RF": "1.2.840.10008.5.1.4.1.1.12.2",
             "DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}


def _xray_file(path, modality, pixels, geometry=None, pose=None, photometric="MONOCHROME2", **extra):
    """A minimal valid X-ray DICOM file with the given pixels (uint16, (rows, cols) or (frames, rows, cols))."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASS[modality], ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Test^Shot"
    pixels = np.asarray(pixels, dtype=np.uint16)
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    if geometry is not None:
        geometry_to_dicom(ds, geometry, pose)
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def known():
    g = CarmGeometry(sdd_mm=1010.0, sod_mm=640.0, rows=48, cols=64, pixel_spacing_mm=(0.3, 0.31))
    pose = CarmPose(math.radians(-32.5), math.radians(14.0), patient_position="prone")
    pixels = (np.arange(48 * 64).reshape(48, 64) % 4000).astype(np.uint16)
    return g, pose, pixels


@pytest.mark.parametrize("modality", ["XA", "RF", "DX", "CR"])
def test_dicom_xray_geometry_and_pixels(tmp_path, known, modality):
    g, pose, pixels = known
    path = _xray_file(tmp_path / "shot.dcm", modality, pixels, g, pose, KVP="85", ExposureInmAs=3.2)
    shot = read_shot(path)
    assert shot.modality == modality and shot.has_geometry
    assert_allclose(shot.image, pixels)
    assert_allclose(shot.projection_matrix(), projection_matrix(g, pose), rtol=1e-6, atol=1e-6)
    assert shot.known["kvp"] == 85.0 and shot.known["exposure_mas"] == 3.2
    assert shot.pose.patient_position == "prone"
    assert shot.source == "shot.dcm"


def test_monochrome1_multiframe_and_flip(tmp_path, known):
    g, pose, pixels = known
    frames = np.stack([pixels, pixels + 1, pixels + 2])
    path = _xray_file(tmp_path / "rf.dcm", "RF", frames, g, pose, photometric="MONOCHROME1")
    shot = read_shot(path, frame=2, flip_lr=True)
    expected = (frames[2].max() + frames[2].min() - frames[2].astype(np.float32))[:, ::-1]
    assert_allclose(shot.image, expected)
    assert any("MONOCHROME1" in n for n in shot.notes) and any("frame 2 of 3" in n for n in shot.notes)
    with pytest.raises(ShotReadError, match="frame 5 out of range"):
        read_shot(path, frame=5)


def test_missing_geometry_is_said_not_invented(tmp_path, known):
    _, _, pixels = known
    path = _xray_file(tmp_path / "cr.dcm", "CR", pixels)  # no SID, no pixel spacing
    shot = read_shot(path)
    assert not shot.has_geometry and any("no C-arm geometry" in n for n in shot.notes)
    with pytest.raises(ShotReadError, match="no C-arm geometry"):
        shot.projection_matrix()
    with pytest.raises(ShotReadError, match="DistanceSourceToDetector"):
        read_shot(path, require_geometry=True)


def test_sod_from_magnification_and_defaults_noted(tmp_path, known):
    g, pose, pixels = known
    path = _xray_file(tmp_path / "dx.dcm", "DX", pixels, g, pose)
    ds = pydicom.dcmread(path)
    del ds.DistanceSourceToPatient
    del ds.PositionerPrimaryAngle
    ds.save_as(path)
    shot = read_shot(path)
    assert shot.geometry.sod_mm == pytest.approx(g.sod_mm, rel=1e-5)  # SID / magnification
    assert any("Positioner" in n for n in shot.notes)


def test_not_an_xray(tmp_path, known):
    _, _, pixels = known
    path = _xray_file(tmp_path / "ct.dcm", "XA", pixels)
    ds = pydicom.dcmread(path)
    ds.Modality = "CT"
    ds.save_as(path)
    with pytest.raises(ShotReadError, match="modality CT"):
        read_shot(path)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ShotReadError, match="not a readable DICOM"):
        read_shot(tmp_path / "junk.dcm")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_image_with_sidecar_round_trip(tmp_path, known, suffix):
    g, pose, pixels = known
    u8 = (pixels % 256).astype(np.uint8)
    png, side = write_shot_png(tmp_path / "drr.png", u8, g, pose, known={"kvp": 90.0})
    if suffix == ".tif":
        from skimage.io import imsave
        imsave(tmp_path / "drr.tif", u8, check_contrast=False)
        (tmp_path / "drr.json").write_text(side.read_text())
    shot = read_shot(tmp_path / f"drr{suffix}")
    assert_allclose(shot.image, u8)
    assert_allclose(shot.projection_matrix(), projection_matrix(g, pose), atol=1e-6)
    assert shot.known["kvp"] == 90.0 and shot.modality == "DRR"


def test_image_sidecar_problems(tmp_path, known):
    g, pose, pixels = known
    u8 = (pixels % 256).astype(np.uint8)
    png, side = write_shot_png(tmp_path / "a.png", u8, g, pose)
    doc = json.loads(side.read_text())
    doc["geometry"]["rows"] = 10
    side.write_text(json.dumps(doc))
    with pytest.raises(ShotReadError, match="do not match|but a.png is"):
        read_shot(png)
    doc["schema"] = "other/1"
    side.write_text(json.dumps(doc))
    with pytest.raises(ShotReadError, match="schema"):
        read_shot(png)
    side.unlink()
    assert not read_shot(png).has_geometry
    with pytest.raises(ShotReadError, match="no geometry sidecar"):
        read_shot(png, require_geometry=True)
