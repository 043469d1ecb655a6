"""Read and write image volumes: NIfTI (nibabel), NRRD and MHA (SimpleITK), DICOM series (pydicom).

This is the only module where RAS exists: NIfTI stores RAS+ affines, and
``T_lps_from_ras`` converts them at this boundary. Every Volume that leaves a reader is in LPS.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from spinenav.atomic import atomic_output
from spinenav.errors import ImageReadError, SpinenavWarning
from spinenav.imaging.volume import Volume

#: Flip x and y: RAS+ <-> LPS+ (its own inverse).
T_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
T_RAS_FROM_LPS = T_LPS_FROM_RAS

_NIFTI = (".nii", ".nii.gz")
_ITK = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}


def image_format(path: str | os.PathLike[str]) -> str:
    """'dicom', 'nifti', 'nrrd' or 'mha' from the path (a folder is a DICOM series)."""
    p = Path(path)
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    if name.endswith(_NIFTI):
        return "nifti"
    for ext, fmt in _ITK.items():
        if name.endswith(ext):
            return fmt
    if name.endswith(".dcm") or _has_dicom_preamble(p):
        return "dicom-file"
    raise ImageReadError(
        f"{p}: unknown image format; expected a DICOM series folder, .nii/.nii.gz, .nrrd/.nhdr "
        "or .mha/.mhd")


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_volume(path: str | os.PathLike[str], **dicom_options: object) -> Volume:
    """Read a CT (or label map) from a DICOM series folder, NIfTI, NRRD or MHA file.

    Parameters
    ----------
    path : path-like
        A folder of DICOM files, or an image file.
    **dicom_options
        Passed to :func:`spinenav.imaging.dicom.read_dicom_series` for folders.

    Returns
    -------
    Volume
        In LPS mm. For formats without a modality (NIfTI, NRRD, MHA) ``modality`` is "CT" with
        ``meta['modality_source'] == 'assumed'``; use :func:`check_ct_intensities` to test it.

    Raises
    ------
    ImageReadError
        Missing path, unknown format, corrupt file; DicomSeriesError for bad series.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file or folder")
    fmt = image_format(p)
    if fmt == "dicom":
        from spinenav.imaging.dicom import read_dicom_series

        return read_dicom_series(p, **dicom_options)  # type: ignore[arg-type]
    if fmt == "dicom-file":
        raise ImageReadError(
            f"{p}: is a single DICOM file; pass the folder that holds the whole series")
    if dicom_options:
        raise ValueError(f"DICOM options {sorted(dicom_options)} do not apply to a {fmt} file")
    if fmt == "nifti":
        return _read_nifti(p)
    return _read_itk(p, fmt)


def _read_nifti(path: Path) -> Volume:
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt or truncated files
        raise ImageReadError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageReadError(f"{path}: expected a 3D volume, got shape {data.shape}")
    hdr = img.header
    notes: list[str] = []
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform_code == 0 and qform_code == 0:
        msg = (f"{path.name}: the NIfTI header has neither sform nor qform, so the patient "
               "orientation is unknown; assumed the old Analyze convention (i towards the "
               "patient's right, centred origin): left and right may be swapped")
        warnings.warn(msg, SpinenavWarning, stacklevel=3)
        notes.append(msg)
    if np.iscomplexobj(data) or not np.issubdtype(data.dtype, np.number):
        raise ImageReadError(f"{path}: voxels are {data.dtype}, not real numbers: not a CT")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise ImageReadError(f"{path}: {int(np.count_nonzero(~np.isfinite(data)))} voxels are NaN "
                             "or infinite: the file is damaged or not an image in HU")
    affine = T_LPS_FROM_RAS @ img.affine
    data = _integral_to_int(data)
    try:
        return Volume(data, affine, modality="CT",
                      meta={"source_format": "nifti", "modality_source": "assumed",
                            "units": "HU", "reader_notes": tuple(notes)})
    except ValueError as exc:  # a zero voxel size, a NaN affine
        raise ImageReadError(f"{path}: unusable geometry in the header ({exc})") from exc


def _integral_to_int(data: np.ndarray) -> np.ndarray:
    """Scaled NIfTI data come back as float; keep int16 when every value is an integer in range."""
    if np.issubdtype(data.dtype, np.floating):
        if np.all(np.isfinite(data)) and np.all(data == np.round(data)):
            lo, hi = data.min(), data.max()
            if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
                return data.astype(np.int16)
    return np.asarray(data)


def _read_itk(path: Path, fmt: str) -> Volume:
    try:  # name the reader: ITK picks it by a case-sensitive extension (".MHA" is not known)
        img = sitk.ReadImage(str(path), imageIO="NrrdImageIO" if fmt == "nrrd" else "MetaImageIO")
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise ImageReadError(f"{path}: cannot read as {fmt.upper()} ({first})") from exc
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: expected a 3D scalar volume, got {img.GetDimension()}D "
                             f"with {img.GetNumberOfComponentsPerPixel()} components")
    try:
        return volume_from_sitk(img, source_format=fmt)
    except ValueError as exc:
        raise ImageReadError(f"{path}: unusable geometry in the header ({exc})") from exc


def volume_from_sitk(img: sitk.Image, *, source_format: str = "sitk", is_label: bool = False) -> Volume:
    """A Volume from a SimpleITK image (ITK is LPS already; its array is [k, j, i])."""
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    return Volume(np.ascontiguousarray(array), affine, modality="SEG" if is_label else "CT",
                  is_label=is_label,
                  meta={"source_format": source_format, "modality_source": "assumed",
                        "units": "label" if is_label else "HU"})


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image of `volume`. ITK needs orthonormal axes: a sheared (gantry-tilted)
    grid must be resampled first (``resample_to_orthogonal``)."""
    if not volume.is_orthogonal:
        raise ValueError(f"grid axes are sheared by {volume.shear_deg:.2f} deg; NRRD/MHA (ITK) need "
                         "orthogonal axes: resample_to_orthogonal(volume) first")
    img = sitk.GetImageFromArray(np.ascontiguousarray(_writable_dtype(volume).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in volume.spacing_mm])
    img.SetOrigin([float(o) for o in volume.origin_world_mm])
    img.SetDirection([float(d) for d in volume.direction.ravel()])
    return img


def _writable_dtype(volume: Volume) -> np.ndarray:
    """Labels as the smallest unsigned integer type that holds them; intensities unchanged."""
    a = volume.array
    if not volume.is_label:
        return a
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(a == np.round(a)):
            raise ValueError("label map has non-integer values")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise ValueError(f"label map has negative ids (min {lo})")
    return a.astype(np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.uint32)


def write_nifti(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write `volume` as NIfTI-1 (.nii or .nii.gz) with its affine in RAS (sform and qform,
    code 1 'scanner'). Label maps are written as unsigned integers. Atomic."""
    path = Path(path)
    if not path.name.lower().endswith(_NIFTI):
        raise ValueError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    img = nib.Nifti1Image(_writable_dtype(volume), T_RAS_FROM_LPS @ volume.affine)
    img.set_sform(img.affine, code=1)
    if volume.is_orthogonal:
        img.set_qform(img.affine, code=1)
    else:  # a quaternion cannot hold a shear: leave the qform unset rather than wrong
        img.set_qform(None, code=0)
    img.header.set_xyzt_units("mm")
    with atomic_output(path) as tmp:
        nib.save(img, str(tmp))
    return path


def write_nrrd(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write `volume` as NRRD (.nrrd) or MetaImage (.mha), compressed, LPS. Atomic."""
    path = Path(path)
    if path.suffix.lower() not in (".nrrd", ".mha"):
        raise ValueError(f"{path}: expected a .nrrd or .mha file name")
    img = volume_to_sitk(volume)
    with atomic_output(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
    return path


def write_volume(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write NIfTI or NRRD/MHA, chosen by the file name."""
    name = Path(path).name.lower()
    if name.endswith(_NIFTI):
        return write_nifti(volume, path)
    return write_nrrd(volume, path)


def check_ct_intensities(volume: Volume) -> list[str]:
    """Plain-language doubts that `volume` holds CT Hounsfield units (empty when plausible).

    CT has air near -1000 HU and rarely goes below -1100 except for padding; MR and
    ultrasound have no negative values. Used for formats that carry no modality.
    """
    if volume.is_label:
        return ["the volume is a label map, not a CT"]
    lo, hi = volume.value_range
    doubts = []
    if lo >= 0:
        doubts.append(f"no negative values (range {lo:.0f} to {hi:.0f}): air in CT is about "
                      "-1000 HU; this may be MR, ultrasound or an unscaled CT")
    elif lo > -500:
        doubts.append(f"lowest value {lo:.0f} is far above air (-1000 HU): not a CT in HU?")
    if hi > 40000:
        doubts.append(f"highest value {hi:.0f} is beyond any CT scale")
    return doubts
