"""Real (or simulated) X-ray shots in: DICOM XA / RF / DX / CR, or PNG / TIFF with a JSON geometry
sidecar (schema ``spinenav.carm/1``, :func:`spinenav.fluoro.carm.sidecar_dict`), all into one
:class:`Shot`: the image, its C-arm geometry and pose when known, and what is known about it.

Image convention: ``Shot.image`` is float32 (rows, cols), brighter = more transmitted signal
(DICOM MONOCHROME2; MONOCHROME1 images are inverted on reading, with a note). The stored
pixel order is assumed to follow spinenav's detector convention (:mod:`spinenav.fluoro.carm`:
beam's-eye view, head up); a C-arm that mirrors its images needs ``flip_lr=True``, and the
note says that this was assumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spinenav.atomic import atomic_output, write_json_atomic
from spinenav.errors import SpinenavError
from spinenav.fluoro.carm import (CarmGeometry, CarmGeometryError, CarmPose, geometry_from_dicom, projection_matrix,
                                  read_sidecar, sidecar_dict)

XRAY_MODALITIES = ("XA", "RF", "DX", "CR")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


class ShotReadError(SpinenavError):
    """A file cannot be read as an X-ray shot (the message says what is missing)."""


@dataclass(frozen=True, eq=False)
class Shot:
    """One X-ray image with its geometry.

    Attributes
    ----------
    image : (rows, cols) ndarray, float32
        Pixel values, brighter = more signal.
    geometry, pose : CarmGeometry, CarmPose or None
        None when the file does not say (then nothing can be projected onto it).
    modality : str
        "XA", "RF", "DX", "CR" or "DRR" (simulated), or "OT" for a plain image.
    known : dict
        Acquisition facts read from the file (kvp, exposure_mas, dap_gy_cm2, frame, ...).
    notes : tuple of str
        What the reader assumed.
    source : str
        File name (no folders: a path may carry a patient's name).
    """

    image: NDArray[np.float32]
    geometry: CarmGeometry | None
    pose: CarmPose | None
    modality: str = "OT"
    known: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default=())
    source: str = ""

    @property
    def has_geometry(self) -> bool:
        return self.geometry is not None and self.pose is not None

    def projection_matrix(self) -> NDArray[np.float64]:
        """3x4 world LPS mm -> pixel matrix of this shot."""
        if not self.has_geometry:
            raise ShotReadError(f"{self.source or 'shot'}: no C-arm geometry is known for this image")
        return projection_matrix(self.geometry, self.pose)  # type: ignore[arg-type]


def _num(ds: Any, keyword: str) -> float | None:
    v = getattr(ds, keyword, None)
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def read_dicom_shot(path: str | os.PathLike[str], *, frame: int = 0, flip_lr: bool = False,
                    isocentre_world_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                    require_geometry: bool = False) -> Shot:
    """Read a DICOM X-ray image (XA, RF, DX, CR).

    Raises
    ------
    ShotReadError
        Not DICOM, not an X-ray modality, no pixel data, frame out of range, or (with
        ``require_geometry``) no usable geometry.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except FileNotFoundError:
        raise ShotReadError(f"{p.name}: no such file") from None
    except (InvalidDicomError, OSError) as exc:
        raise ShotReadError(f"{p.name}: not a readable DICOM file ({exc})") from exc
    modality = str(getattr(ds, "Modality", "") or "")
    if modality not in XRAY_MODALITIES:
        raise ShotReadError(f"{p.name}: modality {modality or 'missing'!s}, expected one of "
                            f"{', '.join(XRAY_MODALITIES)} (an X-ray projection image)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing/undecodable pixel data
        raise ShotReadError(f"{p.name}: no decodable pixel data ({exc})") from exc
    notes: list[str] = []
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if n_frames > 1:
        if not 0 <= frame < n_frames:
            raise ShotReadError(f"{p.name}: frame {frame} out of range (0-{n_frames - 1})")
        pixels = pixels[frame]
        notes.append(f"frame {frame} of {n_frames}")
    if pixels.ndim == 3:  # RGB
        pixels = pixels[..., :3].mean(axis=-1)
        notes.append("colour image converted to grey")
    image = pixels.astype(np.float32)
    slope, intercept = _num(ds, "RescaleSlope"), _num(ds, "RescaleIntercept")
    if slope is not None or intercept is not None:
        image = image * np.float32(slope or 1.0) + np.float32(intercept or 0.0)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        image = image.max() + image.min() - image
        notes.append("MONOCHROME1 inverted to MONOCHROME2 (brighter = more signal)")
    if flip_lr:
        image = image[:, ::-1].copy()
        notes.append("flipped left-right on request")
    else:
        notes.append("pixel order assumed to be spinenav's (beam's-eye view, head up)")
    geometry = pose = None
    try:
        geometry, pose = geometry_from_dicom(ds, source=p.name, isocentre_world_mm=isocentre_world_mm, notes=notes)
    except CarmGeometryError as exc:
        if require_geometry:
            raise ShotReadError(str(exc)) from exc
        notes.append(f"no C-arm geometry: {exc}")
    if geometry is not None and (geometry.rows, geometry.cols) != image.shape:
        raise ShotReadError(f"{p.name}: Rows/Columns {geometry.rows}x{geometry.cols} do not match the pixel "
                            f"data {image.shape[0]}x{image.shape[1]}")
    known = {k: v for k, v in {
        "kvp": _num(ds, "KVP"), "exposure_mas": _num(ds, "ExposureInmAs") or _num(ds, "Exposure"),
        "tube_current_ma": _num(ds, "XRayTubeCurrent"), "exposure_time_ms": _num(ds, "ExposureTime"),
        "dap_gy_cm2": (_num(ds, "ImageAndFluoroscopyAreaDoseProduct") or None),
        "patient_position": str(getattr(ds, "PatientPosition", "") or "") or None,
        "frames": n_frames, "photometric": str(getattr(ds, "PhotometricInterpretation", "")),
    }.items() if v is not None}
    if "dap_gy_cm2" in known:
        known["dap_gy_cm2"] = known["dap_gy_cm2"] * 0.1  # (0018,115E) is in dGy cm^2
    return Shot(image=image, geometry=geometry, pose=pose, modality=modality, known=known, notes=tuple(notes),
                source=p.name)


def read_image_shot(path: str | os.PathLike[str], *, sidecar: str | os.PathLike[str] | None = None,
                    require_geometry: bool = False) -> Shot:
    """Read a PNG/TIFF image with its ``spinenav.carm/1`` JSON sidecar (default: same name, .json).

    Raises
    ------
    ShotReadError
        Unreadable image, a sidecar of the wrong schema or size, or (with ``require_geometry``)
        no sidecar.
    """
    from skimage.io import imread

    p = Path(path)
    if not p.is_file():
        raise ShotReadError(f"{p.name}: no such file")
    try:
        pixels = np.asarray(imread(p))
    except Exception as exc:  # imageio/tifffile raise various types
        raise ShotReadError(f"{p.name}: cannot read as an image ({exc})") from exc
    notes: list[str] = []
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=-1)
        notes.append("colour image converted to grey")
    if pixels.ndim != 2:
        raise ShotReadError(f"{p.name}: expected a 2D image, got shape {pixels.shape}")
    image = pixels.astype(np.float32)
    side = Path(sidecar) if sidecar is not None else p.with_suffix(".json")
    geometry = pose = None
    known: dict[str, Any] = {}
    modality = "OT"
    if side.is_file():
        try:
            geometry, pose, doc = read_sidecar(side)
        except CarmGeometryError as exc:
            raise ShotReadError(str(exc)) from exc
        if (geometry.rows, geometry.cols) != image.shape:
            raise ShotReadError(f"{side.name}: geometry is {geometry.rows}x{geometry.cols} pixels but "
                                f"{p.name} is {image.shape[0]}x{image.shape[1]}")
        known = dict(doc.get("known", {}))
        modality = str(doc.get("modality", "OT"))
        notes.extend(doc.get("notes", []))
    elif require_geometry or sidecar is not None:
        raise ShotReadError(f"{p.name}: no geometry sidecar {side.name} (schema spinenav.carm/1)")
    else:
        notes.append("no geometry sidecar: the image cannot be registered or annotated")
    return Shot(image=image, geometry=geometry, pose=pose, modality=modality, known=known, notes=tuple(notes),
                source=p.name)


def read_shot(path: str | os.PathLike[str], **options: Any) -> Shot:
    """Read a shot: PNG/TIFF (+ sidecar) by suffix, DICOM otherwise."""
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_shot(p, **{k: v for k, v in options.items() if k in ("sidecar", "require_geometry")})
    return read_dicom_shot(p, **{k: v for k, v in options.items() if k != "sidecar"})


def write_shot_png(path: str | os.PathLike[str], image_u8: NDArray[np.uint8], geometry: CarmGeometry,
                   pose: CarmPose, *, modality: str = "DRR", known: dict[str, Any] | None = None,
                   notes: list[str] | None = None) -> tuple[Path, Path]:
    """Write an 8-bit image as PNG and its ``spinenav.carm/1`` sidecar beside it (both atomic)."""
    from skimage.io import imsave

    p = Path(path)
    img = np.asarray(image_u8)
    if img.shape[:2] != (geometry.rows, geometry.cols):
        raise ShotReadError(f"image is {img.shape[:2]} but the geometry is {geometry.rows}x{geometry.cols}")
    with atomic_output(p) as tmp:
        imsave(tmp, img, check_contrast=False)
    side = write_json_atomic(p.with_suffix(".json"), sidecar_dict(
        geometry, pose, modality=modality, known=known or {}, notes=list(notes or []),
        image=p.name))
    return p, side
