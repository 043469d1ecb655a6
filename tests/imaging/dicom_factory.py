"""Test-data factory for the DICOM reader: small synthetic CT series written with
``write_dicom_series``, then damaged file by file with pydicom to make each bad input.

Every series here is tiny (a few hundred voxels per slice) so a test writes and reads it in
milliseconds. Fake patient identifiers (``FAKE_PHI``) are only ever put in files under pytest's
``tmp_path``.
"""

from __future__ import annotations

import shutil
import struct
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pydicom
from nibabel.affines import from_matvec
from numpy.typing import ArrayLike
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from spinenav.imaging.deidentify import write_dicom_series
from spinenav.imaging.volume import Volume

#: Identifiers that must never show up in a message, a Volume or a de-identified file.
FAKE_PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-4711-XYZ",
    "PatientBirthDate": "19640229",
    "InstitutionName": "Saint Elsewhere Hospital",
    "ReferringPhysicianName": "Welby^Marcus",
    "AccessionNumber": "ACC-99821",
}


def ct_volume(shape: tuple[int, int, int] = (12, 10, 8), *,
              spacing_mm: ArrayLike = (0.8, 0.7, 2.0),
              origin_mm: ArrayLike = (-4.8, -3.5, 100.0),
              rotation: ArrayLike | None = None, seed: int = 0) -> Volume:
    """A CT Volume of random int16 HU in [-1024, 2000] on the grid rotation @ diag(spacing)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 2001, size=shape).astype(np.int16)
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    affine = from_matvec(rot @ np.diag(np.asarray(spacing_mm, dtype=np.float64)), origin_mm)
    return Volume(array, affine, modality="CT", meta={"patient_position": "HFS"})


def write_series(folder: Path, volume: Volume | None = None, **options: object) -> Path:
    """Write `volume` (default :func:`ct_volume`) as a DICOM series in `folder`."""
    return write_dicom_series(ct_volume() if volume is None else volume, folder, **options)


def series_files(folder: Path) -> list[Path]:
    """The ``slice_*.dcm`` files of a written series, in k order."""
    return sorted(Path(folder).glob("slice_*.dcm"))


def edit(files: Path | Iterable[Path], change: Callable[[Dataset], object]) -> None:
    """Read each file, apply ``change(ds)`` and save it back in place."""
    for path in [files] if isinstance(files, Path) else list(files):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)


def set_values(**values: object) -> Callable[[Dataset], None]:
    """A ``change`` for :func:`edit` that sets attributes by keyword."""
    def change(ds: Dataset) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    return change


def copy_as_new_instance(src: Path, dst: Path,
                         change: Callable[[Dataset], object] | None = None) -> Path:
    """Copy a file under a new SOPInstanceUID (a duplicate slice, a localizer...)."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if change is not None:
        change(ds)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def copy_series(src: Path, dst: Path) -> Path:
    """Copy a series folder (e.g. the read-only real data) into a writable folder."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(src).iterdir()):
        if path.is_file():
            shutil.copyfile(path, dst / path.name)
    return dst


def merge_series(dst: Path, *folders: Path) -> Path:
    """Move the files of several written series into one folder (names prefixed a_, b_, ...)."""
    dst.mkdir(parents=True, exist_ok=True)
    for prefix, folder in zip("abcdefgh", folders):
        for path in series_files(folder):
            path.rename(dst / f"{prefix}_{path.name}")
    return dst


def replace_short_text(path: Path, keyword: str, new_value: bytes) -> None:
    """Overwrite the raw value of a short explicit-VR element in a file, bypassing pydicom's
    validation (to make values pydicom would refuse to write, such as a DS of 'abc')."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    vr = pydicom.datadict.dictionary_VR(tag).encode()
    data = path.read_bytes()
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    at = data.index(head, 132)
    (length,) = struct.unpack("<H", data[at + 6:at + 8])
    if len(new_value) % 2:
        new_value += b" "
    patched = data[:at + 6] + struct.pack("<H", len(new_value)) + new_value + data[at + 8 + length:]
    path.write_bytes(patched)


def write_non_image(folder: Path, name: str, *, modality: str = "SR",
                    sop_class: str = "1.2.840.10008.5.1.4.1.1.88.11") -> Path:
    """A DICOM file without pixel data (a basic text SR by default)."""
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def sphere_volume(*, center_world_mm: ArrayLike, radius_mm: float, affine: ArrayLike,
                  shape: tuple[int, int, int]) -> Volume:
    """A CT of a bright sphere (1000 HU) in air (-1000 HU) on any grid, sheared ones included;
    the edge is smoothed over one mm so the centroid does not snap to voxels."""
    affine = np.asarray(affine, dtype=np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    dist = np.linalg.norm(world - np.asarray(center_world_mm, dtype=np.float64), axis=-1)
    inside = np.clip(radius_mm - dist + 0.5, 0.0, 1.0)
    hu = np.rint(-1000.0 + 2000.0 * inside).astype(np.int16)
    return Volume(hu, affine, modality="CT")


def bright_centroid_world_mm(volume: Volume) -> np.ndarray:
    """Centroid, in LPS mm, of the intensity above air (HU + 1000) of `volume`."""
    weight = np.clip(volume.array.astype(np.float64) + 1000.0, 0.0, None)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    centroid_index = (weight[..., None] * idx).sum(axis=(0, 1, 2)) / weight.sum()
    return volume.world_from_index(centroid_index)


def messages(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record]
