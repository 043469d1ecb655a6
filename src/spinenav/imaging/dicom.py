"""Read a folder of DICOM files as one CT :class:`Volume` (LPS mm, HU), checking it on the way.

What :func:`read_dicom_series` does, in order (the series-reading checklist of
clinical-reference.md 9.1):

1. **Scan** the regular files directly inside the folder (not its subfolders). Hidden files
   (``.name``) and ``DICOMDIR`` are ignored silently. A file without the DICOM ``DICM`` prefix
   is skipped with a :class:`DicomWarning` that names it (a stray ``README.txt`` should not stop
   a reading; a slice lost that way is caught by the gap check). A file that starts like DICOM
   but cannot be parsed, or is cut short, is fatal.
2. **Pick one image series.** Files are grouped by SeriesInstanceUID; DICOM files without an
   image (structured reports, presentation states, ...) are ignored and counted in the notes.
   With ``series_uid`` that series is read; otherwise the CT series with the most slices, with a
   warning naming the series left behind (number, description, slice count: never an
   identifier). Only CT is read: a folder whose images are MR, US, SEG... is refused.
3. **Drop localizers** (ImageType LOCALIZER, SCOUT or TOPOGRAM) with a warning; refuse
   multi-frame (enhanced) files.
4. **Check** one frame of reference, one ImageOrientationPatient, one PixelSpacing and one
   matrix size across the slices.
5. **Sort** by the position of ImagePositionPatient along the slice normal (row x column), not by
   InstanceNumber; refuse duplicate positions and gaps (or fill gaps by linear interpolation with
   ``allow_gaps=True``); measure gantry tilt from the in-plane drift of the positions and resample
   the sheared grid onto an orthogonal one.
6. **Decode** the pixels (JPEG, JPEG-LS, JPEG 2000 and RLE through the pylibjpeg plugins) and apply
   RescaleSlope/Intercept slice by slice: int16 HU when every value is an integer that fits,
   float32 otherwise (with a warning).

Grid convention: ``i`` is the column index (along the row direction cosine ``IOP[0:3]``), ``j`` the
row index (along ``IOP[3:6]``), ``k`` the slice order along the normal, increasing towards
``+normal`` (as ITK and SimpleITK do). So ``affine[:3, 0] = IOP[0:3] * PixelSpacing[1]``,
``affine[:3, 1] = IOP[3:6] * PixelSpacing[0]``, and the origin is the ImagePositionPatient of the
slice lowest along the normal.

Fatal problems raise :class:`DicomSeriesError` with one line: the folder, the file(s), the numbers
and what to do. Tolerable ones warn with :class:`DicomWarning` saying what was assumed, and are
copied into ``meta['reader_notes']``; ``strict=True`` turns them into errors. The reader never
reads patient names, IDs or dates, so no message can contain them.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from spinenav.errors import DicomSeriesError, DicomWarning
from spinenav.imaging.resample import resample_to_orthogonal
from spinenav.imaging.volume import Volume

#: ``progress(done, total)``: called after each file is scanned and after each slice is decoded.
ProgressCallback = Callable[[int, int], None]

#: Largest difference of a direction cosine between two slices of one series (about 0.006 deg).
IOP_TOL = 1e-4
#: ImageOrientationPatient must hold two unit vectors at right angles, within this.
IOP_UNIT_TOL = 1e-3
#: Largest difference of PixelSpacing between two slices, mm.
PIXEL_SPACING_TOL_MM = 1e-3
#: Slice positions may depart from a regular grid by max(this, 1% of the spacing), mm.
POSITION_TOL_MM = 0.02
#: Slice positions may depart from the straight line through the slices by this, mm; an in-plane
#: drift larger than this over the series is read as gantry tilt.
LATERAL_TOL_MM = 0.05

#: ImageType values that mark a localizer (scout, topogram) rather than a slice of the volume.
LOCALIZER_IMAGE_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})

_CT_MODALITY = "CT"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_SEGMENTATION_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_ENHANCED_CT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}

#: Transfer syntax UID prefix -> the pylibjpeg plugin that decodes it.
_CODEC_PACKAGES = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG baseline/extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.8": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg and pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",  # RLE lossless
}
_ALL_CODECS = "pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle"


# ------------------------------------------------------------------------------------ summaries
@dataclass(frozen=True)
class SeriesSummary:
    """What one series in a folder holds; no patient identifiers.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID, the value to pass as ``read_dicom_series(..., series_uid=)``; empty
        when the files carry none (an anonymiser may have blanked it).
    series_number : int or None
        SeriesNumber as the scanner numbered it.
    modality : str
        DICOM Modality ("CT", "MR", "SEG", "SR", ...); the most common one if files disagree.
    series_description : str
        SeriesDescription, possibly empty.
    n_files : int
        DICOM files in the series.
    n_images : int
        Files with an image that is not a localizer: the slices a reading would stack.
    n_localizers : int
        Localizer (scout, topogram) images.
    multiframe : bool
        True when a file holds several frames (enhanced CT/MR, SEG): not read by spinenav.
    """

    series_uid: str
    series_number: int | None
    modality: str
    series_description: str
    n_files: int
    n_images: int
    n_localizers: int
    multiframe: bool

    def describe(self) -> str:
        """One line for messages, e.g. ``series 3 'CT Body 3.0' (CT, 20 images)``."""
        number = ("series (no number)" if self.series_number is None
                  else f"series {self.series_number}")
        desc = f" '{self.series_description}'" if self.series_description else ""
        what = f"{self.n_images} image{'s' if self.n_images != 1 else ''}"
        if self.n_localizers:
            what += f" + {self.n_localizers} localizer{'s' if self.n_localizers != 1 else ''}"
        if self.n_images == 0 and self.n_localizers == 0:
            what = f"{self.n_files} file{'s' if self.n_files != 1 else ''} without image"
        return f"{number}{desc} ({self.modality}, {what})"


@dataclass
class _File:
    """One DICOM file of the folder: its header (no pixel data) and what the reader needs."""

    path: Path
    ds: Dataset
    series_uid: str
    modality: str
    sop_class_uid: str
    is_image: bool
    is_localizer: bool
    n_frames: int


@dataclass
class _Scan:
    files: list[_File]
    not_dicom: list[Path]
    n_candidates: int
    n_subfolders: int


class _Issues:
    """Collects the tolerable problems of one reading; raises them at once in strict mode."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def warn(self, message: str) -> None:
        if self.strict:
            raise DicomSeriesError(f"{message} [strict mode turns this warning into an error; "
                                   "read without strict=True to accept it]")
        self.warnings.append(message)
        self.notes.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def emit(self) -> None:
        """Warn each tolerable problem once, pointing at the caller of read_dicom_series."""
        for message in self.warnings:
            warnings.warn(message, DicomWarning, stacklevel=3)
        self.warnings.clear()


# ------------------------------------------------------------------------------------- public API
def list_series(folder: str | Path) -> list[SeriesSummary]:
    """Summarise the DICOM series in `folder` (files directly inside it), without reading pixels.

    Parameters
    ----------
    folder : path-like
        A folder of DICOM files. Files that are not DICOM are skipped silently.

    Returns
    -------
    list of SeriesSummary
        One per SeriesInstanceUID, including series without images (SR, ...), ordered by series
        number. No patient identifiers.

    Raises
    ------
    DicomSeriesError
        If `folder` is not a folder, or a file starts like DICOM but is corrupt or truncated.
    """
    folder = _check_folder(folder)
    scan = _scan(folder, progress=None)
    return _summaries(scan.files)


def read_dicom_series(
    folder: str | Path,
    *,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    strict: bool = False,
    progress: ProgressCallback | None = None,
) -> Volume:
    """Read one CT series from a folder of single-frame DICOM files as a :class:`Volume`.

    Parameters
    ----------
    folder : path-like
        Folder holding the series' files (directly, not in subfolders). Other series, non-image
        DICOM files and hidden files may sit beside them (see the module docstring).
    series_uid : str, optional
        SeriesInstanceUID of the series to read (see :func:`list_series`). Default: the CT series
        with the most slices.
    allow_gaps : bool, optional
        When slice positions are uneven (missing slices), resample onto a regular grid at the
        usual slice spacing, interpolating linearly between the neighbouring slices along the
        normal, and warn; by default uneven positions are an error.
    strict : bool, optional
        Turn every :class:`DicomWarning` (an assumption the reader made) into an error.
    progress : callable, optional
        ``progress(done, total)`` after each file is scanned and each slice decoded; ``done``
        only grows. ``total`` is twice the number of files during the scan and the final count
        (files + slices) from the first decoded slice on. The library itself prints nothing.

    Returns
    -------
    Volume
        ``array`` of shape (I, J, K) = (Columns, Rows, slices): int16 HU when every rescaled value
        is an integer within int16, else float32. ``affine`` is T_world_from_index in LPS mm
        with origin at the slice lowest along the normal; orthogonal axes (a gantry-tilted series
        is resampled, see ``meta['gantry_tilt_deg']``). ``modality`` "CT"; ``meta`` holds
        acquisition facts (series number and description, manufacturer, kVp, kernel, slice
        thickness, patient position, gantry tilt) and ``reader_notes``, never identifiers.

    Raises
    ------
    DicomSeriesError
        For a series that cannot be assembled into one CT volume: no DICOM or no image in the
        folder, no CT series, corrupt or truncated file, missing codec, multi-frame file, mixed
        frames of reference, orientation, pixel spacing or matrix size differing between slices,
        duplicate positions, uneven positions (unless `allow_gaps`), slices off a straight line,
        unusable RescaleSlope/Intercept; and for any warning when `strict`.

    Warns
    -----
    DicomWarning
        Non-DICOM files skipped; another series picked over others; localizers skipped;
        RescaleSlope/Intercept absent (1 and 0 assumed); gaps filled (`allow_gaps`); gantry tilt
        resampled; float32 output; a single slice (thickness used as spacing); no frame of
        reference.

    Examples
    --------
    >>> vol = read_dicom_series("data/abdomen_dicom/series")  # doctest: +SKIP
    >>> vol.shape, vol.spacing_mm.round(4).tolist(), vol.axcodes  # doctest: +SKIP
    ((512, 512, 20), [0.9766, 0.9766, 2.0], ('L', 'P', 'S'))
    """
    folder = _check_folder(folder)
    issues = _Issues(strict=strict)
    try:  # warnings gathered before a fatal error are still shown: they may explain it
        volume = _read(folder, series_uid=series_uid, allow_gaps=allow_gaps, progress=progress,
                       issues=issues)
    finally:
        issues.emit()
    return volume


def _read(folder: Path, *, series_uid: str | None, allow_gaps: bool,
          progress: ProgressCallback | None, issues: _Issues) -> Volume:
    scan = _scan(folder, progress=progress)
    if scan.not_dicom:
        issues.warn(f"{folder}: skipped {len(scan.not_dicom)} of {scan.n_candidates} files that are "
                    f"not DICOM (no 'DICM' prefix): {_names(scan.not_dicom, sizes=True)}; "
                    "they were ignored")
    chosen = _choose_series(folder, scan, series_uid, issues)
    slices = _drop_localizers(folder, chosen, issues)
    _refuse_multiframe(folder, slices)
    geometry = _geometry(folder, slices, allow_gaps=allow_gaps, issues=issues)
    rescale = _rescale_parameters(folder, geometry.files, issues)
    _check_codecs(folder, geometry.files)
    total = scan.n_candidates + len(geometry.files)
    raw_slices = []
    for n, f in enumerate(geometry.files):
        raw_slices.append(_decode(folder, f))
        if progress is not None:
            progress(scan.n_candidates + n + 1, total)
    hu = _to_hu(folder, raw_slices, rescale, geometry, issues)
    hu, affine = _regular_grid(hu, geometry)
    meta = _meta(geometry.files[0].ds)
    volume = Volume(hu, affine, modality="CT", is_label=False, meta=meta)
    if geometry.tilt_deg > 0.0:
        before = volume.shape
        volume = resample_to_orthogonal(volume)
        issues.warn(
            f"{folder}: gantry tilt of {geometry.tilt_deg:.2f} deg (slice positions drift "
            f"{geometry.lateral_step_mm:.3f} mm in-plane per {geometry.spacing_mm:.3f} mm slice); "
            f"resampled the sheared grid onto an orthogonal one, shape {before} -> {volume.shape}")
    issues.note(f"sorted {len(geometry.files)} slices along the slice normal "
                f"(k increases towards {_axis_letter(geometry.normal)})")
    # notes travel with the Volume (and may reach files): the folder's path can carry a
    # patient's name, so it is named generically there; printed warnings keep the full path
    folder_names = {str(folder), str(Path(folder).resolve())}
    notes = []
    for note in issues.notes:
        for name in sorted(folder_names, key=len, reverse=True):
            note = note.replace(name, "the series folder")
        notes.append(note)
    return volume.with_meta(gantry_tilt_deg=geometry.tilt_deg, reader_notes=tuple(notes))


# ---------------------------------------------------------------------------------- scanning
def _check_folder(folder: str | Path) -> Path:
    path = Path(folder)
    if not path.exists():
        raise DicomSeriesError(f"{path}: no such folder; pass the folder that holds the DICOM series")
    if not path.is_dir():
        raise DicomSeriesError(f"{path}: is a file, not a folder; pass the folder that holds the "
                               "whole DICOM series")
    return path


def _scan(folder: Path, progress: ProgressCallback | None) -> _Scan:
    entries = sorted(folder.iterdir())
    visible = [p for p in entries if not p.name.startswith(".")]
    candidates = [p for p in visible if p.is_file() and p.name.upper() != "DICOMDIR"]
    n_subfolders = sum(1 for p in visible if p.is_dir())
    files: list[_File] = []
    not_dicom: list[Path] = []
    for n, path in enumerate(candidates):
        ds = _read_header(folder, path)
        if ds is None:
            not_dicom.append(path)
        else:
            f = _classify(folder, path, ds)
            if f is not None:
                files.append(f)
        if progress is not None:
            progress(n + 1, 2 * len(candidates))
    if not files:
        if not_dicom:
            what = f"{len(not_dicom)} file(s), none of them DICOM: {_names(not_dicom, sizes=True)}"
        elif candidates:
            what = "only a DICOMDIR index and no DICOM image file"
        else:
            what = "no file"
        sub = (f"; it has {n_subfolders} subfolder(s): pass the subfolder that holds one series"
               if n_subfolders else "; pass the folder that holds the DICOM files of the CT series")
        raise DicomSeriesError(f"{folder}: holds no DICOM file ({what}){sub}")
    return _Scan(files, not_dicom, len(candidates), n_subfolders)


def _read_header(folder: Path, path: Path) -> Dataset | None:
    """The header of `path` without pixel data; None when the file is not DICOM at all."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return None
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DicomSeriesError(
            f"{folder}: {path.name} starts like DICOM but cannot be parsed "
            f"({type(exc).__name__}: {_first_line(exc)}); the file is corrupt or truncated: "
            "remove it or export the series again") from exc
    tag = _short_element(ds)
    if tag is not None:
        raise DicomSeriesError(
            f"{folder}: {path.name} is truncated (element {tag} ends early, file size "
            f"{path.stat().st_size} bytes); remove it or export the series again")
    return ds


def _short_element(ds: Dataset) -> str | None:
    """The tag of a top-level element whose value is shorter than its declared length."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if (isinstance(raw, RawDataElement) and raw.value is not None
                and raw.length != 0xFFFFFFFF and len(raw.value) < raw.length):
            return str(raw.tag)
    return None


def _classify(folder: Path, path: Path, ds: Dataset) -> _File | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
        sop_class = str(ds.get("SOPClassUID", "") or "") or meta_class
        if sop_class == _DICOMDIR_CLASS:
            return None
        modality = str(ds.get("Modality", "") or "").strip().upper() or "unknown modality"
        series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        is_image = "Rows" in ds and "Columns" in ds
        image_types = {str(v).strip().upper() for v in _as_list(ds.get("ImageType", []))}
        n_frames = _int_or(ds.get("NumberOfFrames", 1), 1)
    class_name = UID(sop_class).name if sop_class else ""
    if not is_image and ("Image Storage" in class_name or sop_class == _SEGMENTATION_CLASS):
        raise DicomSeriesError(
            f"{folder}: {path.name} is a {class_name or modality} file without Rows/Columns; the "
            "file is truncated or damaged: remove it or export the series again")
    return _File(path=path, ds=ds, series_uid=series_uid, modality=modality,
                 sop_class_uid=sop_class, is_image=is_image,
                 is_localizer=bool(image_types & LOCALIZER_IMAGE_TYPES), n_frames=n_frames)


def _summaries(files: list[_File]) -> list[SeriesSummary]:
    groups: dict[str, list[_File]] = {}
    for f in files:
        groups.setdefault(f.series_uid, []).append(f)
    out = [_summary(uid, members) for uid, members in groups.items()]
    return sorted(out, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))


def _summary(uid: str, members: list[_File]) -> SeriesSummary:
    first = members[0].ds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        number = _int_or(first.get("SeriesNumber"), None)
        description = str(first.get("SeriesDescription", "") or "").strip()
    modality = Counter(f.modality for f in members).most_common(1)[0][0]
    return SeriesSummary(
        series_uid=uid, series_number=number, modality=modality, series_description=description,
        n_files=len(members),
        n_images=sum(1 for f in members if f.is_image and not f.is_localizer),
        n_localizers=sum(1 for f in members if f.is_image and f.is_localizer),
        multiframe=any(f.n_frames > 1 for f in members))


# ------------------------------------------------------------------------------ choosing a series
def _choose_series(folder: Path, scan: _Scan, series_uid: str | None,
                   issues: _Issues) -> list[_File]:
    images = [f for f in scan.files if f.is_image]
    others = [f for f in scan.files if not f.is_image]
    if not images:
        kinds = Counter(f.modality for f in others)
        found = ", ".join(f"{m} x{n}" for m, n in sorted(kinds.items()))
        raise DicomSeriesError(
            f"{folder}: {len(others)} DICOM file(s) but none holds an image (found {found}: "
            "reports, presentation states or similar); pass the folder of the CT image series")
    if others:
        kinds = Counter(f.modality for f in others)
        issues.note(f"ignored {len(others)} DICOM file(s) without an image ("
                    + ", ".join(f"{m} x{n}" for m, n in sorted(kinds.items())) + ")")
    groups: dict[str, list[_File]] = {}
    for f in images:
        groups.setdefault(f.series_uid, []).append(f)
    summaries = {s.series_uid: s for s in _summaries(images)}
    if series_uid is not None:
        if series_uid not in groups:
            listing = "; ".join(f"{s.describe()} uid={s.series_uid or '(empty)'}"
                                for s in summaries.values())
            raise DicomSeriesError(
                f"{folder}: no image series with SeriesInstanceUID {series_uid!r}; the image "
                f"series here are: {listing}; pass one of these uids (see list_series)")
        chosen = summaries[series_uid]
        if chosen.modality != _CT_MODALITY:
            raise DicomSeriesError(
                f"{folder}: the selected {chosen.describe()} is {chosen.modality}, not CT; spinenav "
                "reads CT only: select the CT series of the study")
    else:
        ct = [s for s in summaries.values() if s.modality == _CT_MODALITY and s.n_images > 0]
        if not ct:
            found = "; ".join(s.describe() for s in summaries.values())
            only_scouts = any(s.modality == _CT_MODALITY for s in summaries.values())
            why = ("the CT images here are all localizers (scouts)" if only_scouts
                   else f"found {', '.join(sorted({s.modality for s in summaries.values()}))} only")
            raise DicomSeriesError(
                f"{folder}: holds no CT image series ({why}: {found}); spinenav plans on CT: "
                "export the CT series of the study, or pass the folder that holds it")
        ct.sort(key=lambda s: (-s.n_images, s.series_number is None, s.series_number or 0,
                               s.series_uid))
        chosen = ct[0]
        left = [s for s in summaries.values() if s.series_uid != chosen.series_uid]
        if left:
            tie = " (as many slices as another CT series: check it is the one you want)" if (
                len(ct) > 1 and ct[1].n_images == chosen.n_images) else ""
            issues.warn(
                f"{folder}: holds {len(summaries)} image series; read {chosen.describe()}, the CT "
                f"series with the most slices{tie}, and left "
                + "; ".join(s.describe() for s in left)
                + "; pass series_uid= to read another (see list_series)")
    if not chosen.series_uid:
        issues.note("the files carry no SeriesInstanceUID; files without one were read as one series")
    return groups[chosen.series_uid]


def _drop_localizers(folder: Path, chosen: list[_File], issues: _Issues) -> list[_File]:
    slices = [f for f in chosen if not f.is_localizer]
    scouts = [f for f in chosen if f.is_localizer]
    if not slices:
        raise DicomSeriesError(
            f"{folder}: the selected series holds only {len(scouts)} localizer (scout) image(s), "
            "no slices; select the axial CT series")
    if scouts:
        issues.warn(f"{folder}: skipped {len(scouts)} localizer (scout) image(s) mixed into the "
                    f"series: {_names([f.path for f in scouts])}; read the "
                    f"{len(slices)} other slices")
    return slices


def _refuse_multiframe(folder: Path, slices: list[_File]) -> None:
    for f in slices:
        enhanced = _ENHANCED_CT_CLASSES.get(f.sop_class_uid)
        if f.n_frames > 1 or enhanced:
            what = enhanced or f"a multi-frame image ({f.n_frames} frames)"
            raise DicomSeriesError(
                f"{folder}: {f.path.name} is {what}; spinenav reads single-frame CT slices only: "
                "convert the series (e.g. with dcm2niix to NIfTI, then read that file) or export "
                "it from the scanner or PACS as classic CT Image Storage")


# ----------------------------------------------------------------------------------- geometry
@dataclass
class _Geometry:
    files: list[_File]  # sorted along the normal
    row: NDArray[np.float64]  # IOP[0:3]: direction of increasing column index i
    col: NDArray[np.float64]  # IOP[3:6]: direction of increasing row index j
    normal: NDArray[np.float64]  # unit row x col
    pixel_spacing: NDArray[np.float64]  # (row spacing, column spacing), mm
    rows: int
    columns: int
    origin: NDArray[np.float64]  # IPP of the first sorted slice, LPS mm
    positions_mm: NDArray[np.float64]  # (K,) slice positions along the normal from the first
    spacing_mm: float  # regular slice spacing along the normal
    n_regular: int  # slices on the regular grid (> K when gaps are filled)
    on_grid: bool  # the slices already lie on the regular grid (no interpolation needed)
    shear: NDArray[np.float64]  # in-plane drift per mm along the normal (zero when untilted)
    tilt_deg: float
    lateral_step_mm: float


def _geometry(folder: Path, slices: list[_File], *, allow_gaps: bool,
              issues: _Issues) -> _Geometry:
    ref = slices[0]
    iop_ref = _floats(folder, ref, "ImageOrientationPatient", 6)
    ps_ref = _floats(folder, ref, "PixelSpacing", 2)
    size_ref = _matrix(folder, ref)
    _check_iop(folder, ref, iop_ref)
    if np.any(ps_ref <= 0):
        raise DicomSeriesError(f"{folder}: {ref.path.name}: PixelSpacing {_fmt(ps_ref)} mm is not "
                               "positive; fix the header or export the series again")
    for_ref = _frame_of_reference(ref)
    positions = []
    missing_for = 0
    for f in slices:
        iop = _floats(folder, f, "ImageOrientationPatient", 6)
        if np.max(np.abs(iop - iop_ref)) > IOP_TOL:
            angle = max(_angle_deg(iop[:3], iop_ref[:3]), _angle_deg(iop[3:], iop_ref[3:]))
            raise DicomSeriesError(
                f"{folder}: ImageOrientationPatient differs between {ref.path.name} "
                f"({_fmt(iop_ref)}) and {f.path.name} ({_fmt(iop)}), by {angle:.2f} deg; the "
                "series mixes orientations (e.g. a reformat, or a localizer not tagged as one): "
                "remove the odd files or pick another series with series_uid=")
        ps = _floats(folder, f, "PixelSpacing", 2)
        if np.max(np.abs(ps - ps_ref)) > PIXEL_SPACING_TOL_MM:
            raise DicomSeriesError(
                f"{folder}: PixelSpacing differs between {ref.path.name} ({_fmt(ps_ref)} mm) and "
                f"{f.path.name} ({_fmt(ps)} mm); the series mixes reconstructions with different "
                "fields of view: remove the odd files or export one reconstruction")
        size = _matrix(folder, f)
        if size != size_ref:
            raise DicomSeriesError(
                f"{folder}: matrix size differs between {ref.path.name} (Rows x Columns "
                f"{size_ref[0]} x {size_ref[1]}) and {f.path.name} ({size[0]} x {size[1]}); the "
                "series mixes reconstructions: remove the odd files or export one reconstruction")
        for_uid = _frame_of_reference(f)
        if for_uid and for_ref and for_uid != for_ref:
            raise DicomSeriesError(
                f"{folder}: the series mixes frames of reference: {ref.path.name} has "
                f"FrameOfReferenceUID {for_ref}, {f.path.name} has {for_uid}; slices from "
                "different frames cannot share one grid: remove the files of the other frame")
        if not for_uid:
            missing_for += 1
        if for_uid and not for_ref:
            for_ref = for_uid
        positions.append(_floats(folder, f, "ImagePositionPatient", 3))
    if missing_for:
        issues.warn(f"{folder}: FrameOfReferenceUID absent in {missing_for} of {len(slices)} files; "
                    "assumed all slices share one frame of reference")

    row, col = iop_ref[:3], iop_ref[3:]
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    ipp = np.array(positions)
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    files = [slices[o] for o in order]
    ipp, along = ipp[order], along[order]
    names = [f.path.name for f in files]
    steps = np.diff(along)
    if len(steps) and steps.min() < POSITION_TOL_MM:
        w = int(np.argmin(steps))
        raise DicomSeriesError(
            f"{folder}: {names[w]} and {names[w + 1]} lie at the same position along the slice "
            f"normal ({along[w]:.3f} mm, {steps[w]:.3f} mm apart); the series holds duplicate "
            "slices (a repeated export, or two acquisitions): remove one copy of each, or keep "
            "one acquisition")
    delta = along - along[0]
    n = len(files)
    if n == 1:
        spacing, n_regular = _single_slice_spacing(folder, files[0], issues), 1
    else:
        spacing, n_regular = _slice_spacing(folder, names, delta, allow_gaps=allow_gaps,
                                            issues=issues)
    on_grid = n_regular == n and np.allclose(delta, spacing * np.arange(n), rtol=0.0,
                                             atol=max(POSITION_TOL_MM, 0.01 * spacing))
    shear, tilt_deg, lateral_step = _tilt(folder, names, ipp, normal, delta, spacing)
    return _Geometry(files=files, row=row, col=col, normal=normal, pixel_spacing=ps_ref,
                     rows=size_ref[0], columns=size_ref[1], origin=ipp[0], positions_mm=delta,
                     spacing_mm=spacing, n_regular=n_regular, on_grid=bool(on_grid),
                     shear=shear, tilt_deg=tilt_deg,
                     lateral_step_mm=lateral_step)


def _slice_spacing(folder: Path, names: list[str], delta: NDArray[np.float64], *,
                   allow_gaps: bool, issues: _Issues) -> tuple[float, int]:
    """Regular slice spacing (mm) and the number of slices on the regular grid."""
    n = len(delta)
    steps = np.diff(delta)
    # The usual spacing: the median of the steps close to the smallest one (gaps only lengthen
    # steps, so the plain median would take a gap for the spacing when many slices are missing).
    tol = max(POSITION_TOL_MM, 0.01 * float(steps.min()))
    usual = float(np.median(steps[steps <= steps.min() + tol]))
    fitted = float(delta[-1] / (n - 1))
    off_grid = np.abs(delta - fitted * np.arange(n))
    if off_grid.max() <= tol:
        return fitted, n
    w = int(np.argmax(np.abs(steps - usual)))
    if abs(steps[w] - usual) > tol:
        missing = round(steps[w] / usual) - 1
        hint = f", about {missing} slice(s) missing" if missing >= 1 else ""
        what = (f"{steps[w]:.3f} mm between {names[w]} and {names[w + 1]}, {usual:.3f} mm "
                f"elsewhere{hint}")
    else:
        worst = int(np.argmax(off_grid))
        what = (f"positions drift up to {off_grid[worst]:.3f} mm from a regular {fitted:.3f} mm grid "
                f"(at {names[worst]})")
    if not allow_gaps:
        raise DicomSeriesError(
            f"{folder}: slices are not evenly spaced ({what}); slices may be missing: export the "
            "series again, or pass allow_gaps=True to resample onto a regular grid")
    n_regular = int(math.floor(delta[-1] / usual + 0.01)) + 1
    issues.warn(
        f"{folder}: slices are not evenly spaced ({what}); allow_gaps: resampled {n} slices onto a "
        f"regular grid of {n_regular} slices every {usual:.3f} mm, interpolating linearly along "
        "the normal across the gaps")
    return usual, n_regular


def _single_slice_spacing(folder: Path, f: _File, issues: _Issues) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _opt_float(f.ds, keyword)
        if value is not None and value > 0:
            issues.warn(f"{folder}: the series has a single slice ({f.path.name}); assumed a "
                        f"slice spacing of {value:g} mm from {keyword}")
            return value
    issues.warn(f"{folder}: the series has a single slice ({f.path.name}) and no slice thickness; "
                "assumed a slice spacing of 1 mm")
    return 1.0


def _tilt(folder: Path, names: list[str], ipp: NDArray[np.float64], normal: NDArray[np.float64],
          delta: NDArray[np.float64], spacing: float) -> tuple[NDArray[np.float64], float, float]:
    """In-plane drift of the slice positions per mm along the normal, tilt angle (deg) and the
    drift per slice (mm). Refuses positions that do not lie on a straight line."""
    zero = np.zeros(3)
    if len(delta) < 2:
        return zero, 0.0, 0.0
    lateral = (ipp - ipp[0]) - delta[:, None] * normal  # (K, 3) in-plane offsets
    shear = _line_fit(delta, lateral)
    residual = np.linalg.norm(lateral - delta[:, None] * shear, axis=1)
    worst = int(np.argmax(residual))
    if residual[worst] > LATERAL_TOL_MM:
        if len(delta) > 2:  # how far the worst slice is from the line through all the others
            others = np.arange(len(delta)) != worst
            base = int(np.flatnonzero(others)[0])
            line = _line_fit(delta[others] - delta[base], lateral[others] - lateral[base])
            offset = (lateral[worst] - lateral[base]) - (delta[worst] - delta[base]) * line
            distance = float(np.linalg.norm(offset))
        else:
            distance = float(residual[worst])
        raise DicomSeriesError(
            f"{folder}: slice positions do not lie on one straight line: {names[worst]} is "
            f"{distance:.2f} mm off the line through the other slices; the series mixes "
            "reconstructions with different fields of view or table positions: remove the odd "
            "files or export one reconstruction")
    if np.linalg.norm(shear) * delta[-1] <= LATERAL_TOL_MM:
        return zero, 0.0, 0.0
    tilt_deg = float(np.degrees(np.arctan(np.linalg.norm(shear))))
    return shear, tilt_deg, float(np.linalg.norm(shear) * spacing)


def _line_fit(delta: NDArray[np.float64], lateral: NDArray[np.float64]) -> NDArray[np.float64]:
    """Least-squares in-plane drift per mm along the normal, for a line through the origin."""
    return (delta @ lateral) / (delta @ delta)


def _check_iop(folder: Path, f: _File, iop: NDArray[np.float64]) -> None:
    row, col = iop[:3], iop[3:]
    if (abs(np.linalg.norm(row) - 1) > IOP_UNIT_TOL or abs(np.linalg.norm(col) - 1) > IOP_UNIT_TOL
            or abs(row @ col) > IOP_UNIT_TOL):
        raise DicomSeriesError(
            f"{folder}: {f.path.name}: ImageOrientationPatient {_fmt(iop)} is not two unit vectors "
            f"at right angles (lengths {np.linalg.norm(row):.4f} and {np.linalg.norm(col):.4f}, "
            f"dot product {row @ col:.4f}); fix the header or export the series again")


def _frame_of_reference(f: _File) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(f.ds.get("FrameOfReferenceUID", "") or "").strip()


def _matrix(folder: Path, f: _File) -> tuple[int, int]:
    rows = _int_or(f.ds.get("Rows"), 0)
    columns = _int_or(f.ds.get("Columns"), 0)
    if rows < 1 or columns < 1:
        raise DicomSeriesError(f"{folder}: {f.path.name}: Rows x Columns is {rows} x {columns}; "
                               "the header is damaged: remove the file or export the series again")
    samples = _int_or(f.ds.get("SamplesPerPixel", 1), 1)
    if samples != 1:
        raise DicomSeriesError(f"{folder}: {f.path.name} has {samples} samples per pixel (colour); "
                               "a CT slice has one: pick the CT image series")
    return rows, columns


# ------------------------------------------------------------------------------------- pixels
@dataclass
class _Rescale:
    slopes: NDArray[np.float64]  # (K,)
    intercepts: NDArray[np.float64]  # (K,)


def _rescale_parameters(folder: Path, files: list[_File], issues: _Issues) -> _Rescale:
    slopes, intercepts = [], []
    absent = {"RescaleSlope": 0, "RescaleIntercept": 0}
    for f in files:
        values = {}
        for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
            value = _rescale_value(folder, f, keyword)
            if value is None:
                absent[keyword] += 1
                value = default
            values[keyword] = value
        if values["RescaleSlope"] == 0.0:
            raise DicomSeriesError(
                f"{folder}: {f.path.name}: RescaleSlope is 0, which maps every pixel to the same "
                "value; the header is damaged: fix it or export the series again")
        slopes.append(values["RescaleSlope"])
        intercepts.append(values["RescaleIntercept"])
    for keyword, default in (("RescaleSlope", "1"), ("RescaleIntercept", "0")):
        if absent[keyword]:
            issues.warn(f"{folder}: {keyword} absent in {absent[keyword]} of {len(files)} files; "
                        f"assumed {default}")
    return _Rescale(np.array(slopes), np.array(intercepts))


def _rescale_value(folder: Path, f: _File, keyword: str) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if keyword not in f.ds:
            return None
        try:
            raw = f.ds[keyword].value
        except Exception:  # an unparsable DS raises on conversion
            raw = f.ds.get_item(keyword).value
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return None
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "replace")
        value = float(raw)  # a multi-valued DS raises TypeError here
    except (TypeError, ValueError):
        shown = str(raw)[:40]
        raise DicomSeriesError(
            f"{folder}: {f.path.name}: {keyword} is {shown!r}, not a number; the header is "
            "damaged: fix it or export the series again") from None
    if not math.isfinite(value):
        raise DicomSeriesError(f"{folder}: {f.path.name}: {keyword} is {value}, not a finite number; "
                               "the header is damaged: fix it or export the series again")
    return value


def _decoder_available(transfer_syntax: UID) -> bool | None:
    """True if pydicom can decode `transfer_syntax` now, False if a plugin is missing, None if no
    decoder exists for it at all."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:
        return None


def _check_codecs(folder: Path, files: list[_File]) -> None:
    seen: dict[str, _File] = {}
    for f in files:
        ts = str(getattr(getattr(f.ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        seen.setdefault(ts, f)
    for ts, f in seen.items():
        if not ts:
            continue  # no file meta: pydicom assumes implicit VR little endian
        uid = UID(ts)
        if not uid.is_transfer_syntax or not uid.is_compressed:
            continue
        status = _decoder_available(uid)
        if status is None:
            raise DicomSeriesError(
                f"{folder}: {f.path.name} is encoded as {uid.name} ({uid}), which pydicom cannot "
                "decode; convert the series to an uncompressed transfer syntax (e.g. "
                "'gdcmconv --raw' or 'dcmdjpeg') and read it again")
        if not status:
            package = _codec_package(ts)
            raise DicomSeriesError(
                f"{folder}: {f.path.name} is compressed as {uid.name} ({uid}) and no decoder for it "
                f"is installed; install {package} (pip install "
                f"{package.replace(',', '').replace(' and ', ' ')}; "
                "they are spinenav dependencies, so reinstalling spinenav also works)")


def _codec_package(transfer_syntax: str) -> str:
    """The pylibjpeg plugin(s) that decode `transfer_syntax`."""
    return next((pkg for prefix, pkg in _CODEC_PACKAGES.items()
                 if transfer_syntax.startswith(prefix)), _ALL_CODECS)


def _decode(folder: Path, f: _File) -> NDArray[Any]:
    """The stored pixel values of one slice, shape (Rows, Columns), before rescaling."""
    path = f.path
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DicomSeriesError(
            f"{folder}: {path.name} cannot be read again for its pixels ({type(exc).__name__}: "
            f"{_first_line(exc)}); the file is corrupt or changed while reading: export the "
            "series again") from exc
    eof = any("End of file" in str(w.message) for w in caught)
    short = _short_element(ds)
    if eof or short is not None or "PixelData" not in ds:
        raise DicomSeriesError(
            f"{folder}: {path.name} is truncated (its pixel data is incomplete or missing, file size "
            f"{path.stat().st_size} bytes); remove it or export the series again")
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "implicit VR little endian")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as exc:
        uid = UID(ts) if ts.startswith("1.") else None
        name = uid.name if uid is not None else ts
        codec = (f" (or, if it opens elsewhere, the installed {_codec_package(ts)} cannot decode "
                 "this variant)" if uid is not None and uid.is_transfer_syntax
                 and uid.is_compressed else "")
        raise DicomSeriesError(
            f"{folder}: cannot decode the pixel data of {path.name} ({name}): "
            f"{_first_line(exc)}; the file is corrupt or truncated{codec}: export the series "
            "again") from exc
    rows, columns = _int_or(ds.get("Rows"), 0), _int_or(ds.get("Columns"), 0)
    if pixels.shape != (rows, columns):
        raise DicomSeriesError(
            f"{folder}: {path.name}: decoded pixel data has shape {pixels.shape}, expected (Rows, "
            f"Columns) = ({rows}, {columns}); the file is damaged: export the series again")
    return pixels


def _to_hu(folder: Path, raw_slices: list[NDArray[Any]], rescale: _Rescale, geometry: _Geometry,
           issues: _Issues) -> NDArray[Any]:
    """Stack (Rows, Columns) slices into an (I, J, K) = (Columns, Rows, K) array of HU."""
    lo, hi = np.inf, -np.inf
    for raw, slope, intercept in zip(raw_slices, rescale.slopes, rescale.intercepts):
        ends = np.array([raw.min(), raw.max()], dtype=np.float64) * slope + intercept
        lo, hi = min(lo, ends.min()), max(hi, ends.max())
    integral = all(float(s).is_integer() and float(b).is_integer()
                   for s, b in zip(rescale.slopes, rescale.intercepts))
    info = np.iinfo(np.int16)
    fits = info.min <= lo and hi <= info.max
    shape = (geometry.columns, geometry.rows, len(raw_slices))
    if integral and fits:
        out = np.empty(shape, dtype=np.int16)
        for k, (raw, slope, intercept) in enumerate(zip(raw_slices, rescale.slopes,
                                                        rescale.intercepts)):
            out[:, :, k] = (raw.astype(np.int64) * int(slope) + int(intercept)).T
        return out
    out = np.empty(shape, dtype=np.float32)
    for k, (raw, slope, intercept) in enumerate(zip(raw_slices, rescale.slopes, rescale.intercepts)):
        out[:, :, k] = (raw.astype(np.float64) * slope + intercept).T
    if not integral:
        odd = sorted({f"{s:g}/{b:g}" for s, b in zip(rescale.slopes, rescale.intercepts)
                      if not (float(s).is_integer() and float(b).is_integer())})
        why = f"RescaleSlope/Intercept {', '.join(odd[:3])} give non-integer values"
    else:
        why = f"the values span {lo:g} to {hi:g}, beyond int16"
    issues.warn(f"{folder}: {why}; the volume is float32 HU instead of int16")
    return out


def _regular_grid(hu: NDArray[Any], geometry: _Geometry) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """The array on the regular slice grid (gaps filled) and its affine (sheared if tilted)."""
    affine = np.eye(4)
    affine[:3, 0] = geometry.row * geometry.pixel_spacing[1]
    affine[:3, 1] = geometry.col * geometry.pixel_spacing[0]
    affine[:3, 2] = geometry.spacing_mm * (geometry.normal + geometry.shear)
    affine[:3, 3] = geometry.origin
    if geometry.on_grid:
        return hu, affine
    targets = geometry.spacing_mm * np.arange(geometry.n_regular)
    source = geometry.positions_mm
    upper = np.clip(np.searchsorted(source, targets, side="right"), 1, len(source) - 1)
    lower = upper - 1
    weight = np.clip((targets - source[lower]) / (source[upper] - source[lower]), 0.0, 1.0)
    out = np.empty(hu.shape[:2] + (geometry.n_regular,), dtype=hu.dtype)
    for m, (a, b, w) in enumerate(zip(lower, upper, weight)):
        value = (1.0 - w) * hu[:, :, a].astype(np.float32) + w * hu[:, :, b].astype(np.float32)
        out[:, :, m] = np.rint(value) if np.issubdtype(hu.dtype, np.integer) else value
    return out, affine


# -------------------------------------------------------------------------------------- meta
def _meta(ds: Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {"source_format": "dicom", "modality_source": "dicom", "units": "HU"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        number = _int_or(ds.get("SeriesNumber"), None)
        if number is not None:
            meta["series_number"] = number
        # SeriesDescription is free text the Basic Profile removes: it stays out of the Volume
        for keyword, key in (("Manufacturer", "manufacturer"), ("PatientPosition", "patient_position")):
            text = str(ds.get(keyword, "") or "").strip()
            if text:
                meta[key] = text
        kernel = "\\".join(str(v).strip() for v in _as_list(ds.get("ConvolutionKernel", [])) if v)
        if kernel:
            meta["convolution_kernel"] = kernel
    for keyword, key in (("KVP", "kvp_kv"), ("SliceThickness", "slice_thickness_mm")):
        value = _opt_float(ds, keyword)
        if value is not None:
            meta[key] = value
    return meta


# ----------------------------------------------------------------------------------- helpers
def _floats(folder: Path, f: _File, keyword: str, count: int) -> NDArray[np.float64]:
    value: Any = None
    numbers: NDArray[np.float64] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        present = keyword in f.ds
        try:
            value = f.ds.get(keyword)
            numbers = np.array([float(v) for v in _as_list(value)], dtype=np.float64)
        except (TypeError, ValueError):  # an unparsable value: show the raw text
            raw = f.ds.get_item(keyword)
            value = getattr(raw, "value", None)
    if not present or (numbers is not None and numbers.size == 0):
        raise DicomSeriesError(f"{folder}: {f.path.name} has no {keyword}, so the slice cannot be "
                               "placed in the patient; export the series again with its geometry")
    if numbers is None or numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise DicomSeriesError(f"{folder}: {f.path.name}: {keyword} is not {count} finite numbers "
                               f"(got {str(value)[:80]!r}); fix the header or export the series again")
    return numbers


def _opt_float(ds: Dataset, keyword: str) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = ds.get(keyword)
            if value is None or value == "":
                return None
            number = float(value)
        except (TypeError, ValueError):
            return None
    return number if math.isfinite(number) else None


def _int_or(value: Any, default: Any) -> Any:
    try:
        if value is None or value == "":
            return default
        return int(value)
    except (TypeError, ValueError):
        return default


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _names(paths: list[Path], *, sizes: bool = False, limit: int = 3) -> str:
    def one(p: Path) -> str:
        if not sizes:
            return p.name
        try:
            size = p.stat().st_size
        except OSError:
            return p.name
        return f"{p.name} ({'empty' if size == 0 else f'{size} byte' + ('s' if size > 1 else '')})"

    shown = ", ".join(one(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (" ".join(line.strip() for line in text[:3]))[:200] if text else "no details"


def _fmt(values: NDArray[np.float64]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _axis_letter(direction: NDArray[np.float64]) -> str:
    axis = int(np.argmax(np.abs(direction)))
    return ("RL", "AP", "IS")[axis][int(direction[axis] > 0)]
