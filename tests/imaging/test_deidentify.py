"""De-identification (PS3.15 Basic Profile) and the de-identified CT series writer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

import dicom_factory as fx
from spinenav.imaging import deidentify as deid
from spinenav.imaging.deidentify import BASIC_PROFILE_ACTIONS, deidentify, new_uid, write_dicom_series
from spinenav.imaging.dicom import read_dicom_series
from spinenav.imaging.volume import Volume

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

#: Identifying attributes set on a slice before de-identification (keyword -> fake value).
FAKE_IDENTIFIERS = {
    **fx.FAKE_PHI,
    "OtherPatientIDs": "OTHER-ID-5551",
    "PatientAddress": "12 Harbour Road, Springfield",
    "PatientAge": "061Y",
    "PatientWeight": "71.5",
    "PatientComments": "allergic to iodine contrast",
    "StudyDate": "20240131",
    "StudyTime": "101530",
    "SeriesDate": "20240131",
    "ContentDate": "20240131",
    "AcquisitionDateTime": "20240131101602",
    "StudyDescription": "CT lumbar spine Jane",
    "StudyID": "STUDY-0042",
    "InstitutionAddress": "1 Hospital Way, Springfield",
    "InstitutionalDepartmentName": "Radiology West",
    "StationName": "CTSTATION7",
    "OperatorsName": "Tech^Tina",
    "PerformingPhysicianName": "House^Greg",
    "DeviceSerialNumber": "SN-998877",
    "ImageComments": "called Jane at home",
    "ProtocolName": "Doe lumbar protocol",
    "DateOfLastCalibration": "20231224",  # not in the table: removed by the date sweep
}


def identified_slice(path: Path) -> Dataset:
    """A written slice with fake identifiers, a private block and a nested UID reference."""
    ds = pydicom.dcmread(path)
    for keyword, value in FAKE_IDENTIFIERS.items():
        setattr(ds, keyword, value)
    block = ds.private_block(0x0009, "ACME SCANNER", create=True)
    block.add_new(0x01, "LO", "Doe^Jane private copy")
    reference = Dataset()
    reference.SeriesInstanceUID = ds.SeriesInstanceUID
    reference.ReferringPhysicianName = "Nested^Name"  # a PN inside a sequence not in the table
    ds.ReferencedSeriesSequence = Sequence([reference])
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    return ds


@pytest.fixture()
def series(tmp_path: Path) -> Path:
    return fx.write_series(tmp_path / "series")


def test_profile_attributes_lose_their_values(series: Path, tmp_path: Path) -> None:
    original = identified_slice(fx.series_files(series)[0])
    out = deidentify(original)
    for elem in original:
        action = BASIC_PROFILE_ACTIONS.get(int(elem.tag))
        if action is None or elem.VR == "SQ" or not elem.value:
            continue
        if action == "X":
            assert elem.tag not in out, elem.keyword
        elif action == "Z":
            assert not out[elem.tag].value, elem.keyword
        else:  # D or U: replaced
            assert out[elem.tag].value != elem.value, elem.keyword
    assert "DateOfLastCalibration" not in out
    assert not any(elem.tag.is_private for elem in out)
    assert str(out.ReferencedSeriesSequence[0].ReferringPhysicianName) == ""
    assert "SourceApplicationEntityTitle" not in out.file_meta
    path = tmp_path / "deidentified.dcm"
    out.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    for value in FAKE_IDENTIFIERS.values():
        assert value.encode() not in raw, value
    for word in (b"Doe", b"Jane", b"HOSPITAL_PACS", b"ACME"):
        assert word not in raw


def test_uids_are_replaced_consistently_across_a_series(series: Path) -> None:
    files = fx.series_files(series)
    before = [pydicom.dcmread(p) for p in files[:3]]
    after = [deidentify(ds) for ds in before]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(ds[keyword].value) for ds in after}) == 1, keyword
        assert after[0][keyword].value != before[0][keyword].value
    sop = [str(ds.SOPInstanceUID) for ds in after]
    assert len(set(sop)) == 3 and not set(sop) & {str(ds.SOPInstanceUID) for ds in before}
    for ds in after:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert uid.startswith("2.25.") and len(uid) <= 64 and UID_PATTERN.match(uid)
    nested = identified_slice(files[0])
    assert deidentify(nested).ReferencedSeriesSequence[0].SeriesInstanceUID == after[0].SeriesInstanceUID
    other_salt = deidentify(before[0], uid_salt="another project")
    assert other_salt.SeriesInstanceUID != after[0].SeriesInstanceUID


def test_deidentify_marks_the_dataset_and_leaves_the_input_alone(series: Path) -> None:
    original = identified_slice(fx.series_files(series)[0])
    out = deidentify(original)
    assert out.PatientIdentityRemoved == "YES"
    assert "Basic Application Level Confidentiality Profile" in out.DeidentificationMethod
    code = out.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert str(original.PatientName) == "Doe^Jane" and original.StudyDate == "20240131"
    assert any(elem.tag.is_private for elem in original)


def test_deidentified_series_is_still_one_series(series: Path, tmp_path: Path) -> None:
    out_folder = tmp_path / "deidentified"
    out_folder.mkdir()
    for path in fx.series_files(series):
        deidentify(identified_slice(path)).save_as(out_folder / path.name, enforce_file_format=True)
    original = read_dicom_series(series)
    vol = read_dicom_series(out_folder)
    assert_array_equal(vol.array, original.array)
    assert_allclose(vol.affine, original.affine)


def test_new_uid_is_deterministic_and_keeps_empty_uids_empty() -> None:
    assert new_uid("1.2.3") == new_uid("1.2.3") != new_uid("1.2.3.1")
    assert new_uid("") == ""
    assert UID_PATTERN.match(new_uid("1.2.840.113619.2.55"))


def test_profile_table_covers_the_core_identifiers() -> None:
    assert len(BASIC_PROFILE_ACTIONS) == 456  # PS3.15 Table E.1-1 rows, less the 3 group rules
    tags = {keyword: pydicom.datadict.tag_for_keyword(keyword) for keyword in (
        "PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
        "SOPInstanceUID", "DeviceSerialNumber", "StudyDate", "ImageComments")}
    actions = {keyword: BASIC_PROFILE_ACTIONS[tag] for keyword, tag in tags.items()}
    assert actions == {"PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z",
                       "InstitutionName": "X", "AccessionNumber": "Z", "SOPInstanceUID": "U",
                       "DeviceSerialNumber": "X", "StudyDate": "Z", "ImageComments": "X"}


# ------------------------------------------------------------------------------------ writer
def test_written_files_are_deidentified_explicit_vr_ct(series: Path) -> None:
    volume = fx.ct_volume()
    files = fx.series_files(series)
    assert [p.name for p in files] == [f"slice_{k:04d}.dcm" for k in range(1, 9)]
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert str(ds.PatientName) == "" and ds.PatientID == "" and ds.PatientBirthDate == ""
        assert ds.InstanceNumber == k + 1
        assert_allclose([float(v) for v in ds.ImagePositionPatient],
                        volume.world_from_index([0, 0, k]), atol=1e-9)
        assert_allclose([float(v) for v in ds.ImageOrientationPatient], [1, 0, 0, 0, 1, 0])
        assert_allclose([float(v) for v in ds.PixelSpacing], [0.7, 0.8])  # (row, column) spacing
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
        assert_array_equal(ds.pixel_array.T, volume.array[:, :, k])


def test_each_write_gets_fresh_uids(tmp_path: Path) -> None:
    first = pydicom.dcmread(fx.series_files(fx.write_series(tmp_path / "a"))[0])
    second = pydicom.dcmread(fx.series_files(fx.write_series(tmp_path / "b"))[0])
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        assert first[keyword].value != second[keyword].value


def test_float_volume_is_quantised_within_half_a_slope(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    volume = Volume(rng.uniform(-1000.0, 3000.0, (6, 5, 4)).astype(np.float32), np.eye(4))
    ds = pydicom.dcmread(fx.series_files(write_dicom_series(volume, tmp_path / "f"))[0])
    slope = float(ds.RescaleSlope)
    with pytest.warns(match="float32"):
        vol = read_dicom_series(tmp_path / "f")
    assert np.abs(vol.array - volume.array).max() <= slope / 2 + 1e-3


def test_writer_refuses_a_label_map(tmp_path: Path) -> None:
    labels = Volume(np.zeros((4, 4, 3), np.uint8), np.eye(4), modality="SEG", is_label=True)
    with pytest.raises(ValueError, match="writes CT intensities"):
        write_dicom_series(labels, tmp_path / "labels")


def test_writer_refuses_non_perpendicular_rows_and_columns(tmp_path: Path) -> None:
    affine = np.eye(4)
    affine[0, 1] = 0.2
    with pytest.raises(ValueError, match="not perpendicular"):
        write_dicom_series(Volume(np.zeros((4, 4, 3), np.int16), affine), tmp_path / "sheared")


def test_writer_refuses_a_non_empty_folder_unless_overwrite(series: Path) -> None:
    with pytest.raises(ValueError, match="not empty; choose another folder or pass overwrite=True"):
        write_dicom_series(fx.ct_volume(), series)
    write_dicom_series(fx.ct_volume((12, 10, 3)), series, overwrite=True)
    assert len(fx.series_files(series)) == 3
    assert [p.name for p in series.parent.iterdir()] == ["series"]  # no temporary folder left


def test_writer_leaves_nothing_behind_when_a_write_fails(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_write = pydicom.dcmwrite

    def failing_write(path, ds, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(path, ds, **kwargs)

    monkeypatch.setattr(deid.pydicom, "dcmwrite", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(fx.ct_volume(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
