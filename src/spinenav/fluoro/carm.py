"""C-arm projection geometry: where the source and the detector are, and the 3x4 matrix that
maps world (LPS mm) points to detector pixels.

Conventions
-----------
Patient and world
    World = the CT's patient frame, DICOM LPS millimetres (+x patient's left, +y posterior,
    +z head). Everything below is patient-relative, so the same pose means the same view of
    the anatomy whether the patient lies prone or supine. ``patient_position`` only says
    where the table is (which side the tube is on for an under-table tube, and which way a
    vertical table move goes). MIS spine surgery is done PRONE: that is the default.
Angles (DICOM PS3.3 C.8.7.5.1.1, XA Positioner Module)
    ``primary_rad`` (PositionerPrimaryAngle): in the transverse plane, zero with the detector
    perpendicular to the patient's chest (anterior), +90 deg with the detector at the
    patient's LEFT (LAO), -90 deg at the right (RAO), range (-180, 180].
    ``secondary_rad`` (PositionerSecondaryAngle): in the sagittal plane, zero perpendicular to
    the chest, positive = CRANIAL (detector tilted towards the head), range [-90, 90].
    The unit vector from the isocentre to the detector centre is then (LPS)
    ``d = (sin p cos s, -cos p cos s, sin s)``; the beam runs source -> detector along d.
    Consequence for a prone patient with the tube under the table (the usual MIS set-up):
    the AP shot has the detector above the patient's back, i.e. primary = 180 deg (a PA-ward
    beam, anterior -> posterior: tube anterior). A lateral with the detector at the
    patient's left is primary = +90 deg.
Detector and image
    Pixel (u, v) = (column, row); (0, 0) is the centre of the top-left pixel. The image is the
    beam's-eye view: as seen from the SOURCE looking at the detector (the pinhole camera at
    the source, K with positive focal lengths and R a proper rotation). Image "up" (-v) is
    the patient's head projected onto the detector (for a beam within 10 deg of the body's
    long axis, the patient's anterior is up instead); u = v x beam. So in the prone AP shot
    (tube anterior) the image shows the patient as seen from the front: head up, the
    patient's LEFT on the image's RIGHT (the radiographic convention for AP/PA films). In a
    lateral with the detector at the patient's left (tube on the right), the patient's
    anterior is on the image's right.
Projection
    ``P = K [R | t]`` with ``R`` rows (u axis, v axis, beam) in world, ``t = -R @ source``,
    ``K = [[SDD/px_u, 0, c_u], [0, SDD/px_v, c_v], [0, 0, 1]]``; homogeneous pixel
    ``(u w, v w, w) = P (x, y, z, 1)``, w = depth along the beam from the source, mm.
Defaults (clinical-reference.md section 5.1)
    SID (source to detector) 968 mm [ARCADIS]; SOD (source to isocentre) 650 mm (mobile
    C-arms ~600-700 mm: marked unverified there); square 230 mm detector (23 cm image
    intensifier [CARM-DEF]); magnification = SID / SOD [DICOM-XA].

>>> g = CarmGeometry(sdd_mm=1000.0, sod_mm=600.0, rows=100, cols=100, pixel_spacing_mm=(1.0, 1.0))
>>> pose = CarmPose(primary_rad=np.pi, secondary_rad=0.0, isocentre_world_mm=(0.0, 0.0, 0.0))
>>> P = projection_matrix(g, pose)
>>> np.round(project_points(P, [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.0, 10.0]]), 6).tolist()
[[49.5, 49.5], [66.166667, 49.5], [49.5, 32.833333]]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spinenav.documents import read_json_document
from spinenav.errors import SpinenavError

PatientPosition = Literal["prone", "supine"]

#: Source-to-image (detector) distance of a typical mobile C-arm, mm [ARCADIS] (clinical-reference 5.1).
DEFAULT_SDD_MM = 968.0
#: Source-to-isocentre distance, mm: mobile C-arms ~600-700 mm (clinical-reference 5.1, unverified).
DEFAULT_SOD_MM = 650.0
#: 23 cm image intensifier input field [CARM-DEF] (clinical-reference 5.1).
DEFAULT_DETECTOR_MM = 230.0
#: A beam closer than this to the body's long axis takes "anterior" as image up instead of "head".
_AXIAL_BEAM_RAD = math.radians(10.0)
SIDECAR_SCHEMA = "spinenav.carm/1"


class CarmGeometryError(SpinenavError):
    """C-arm geometry parameters that cannot describe a C-arm, or an unreadable geometry file."""


@dataclass(frozen=True)
class CarmGeometry:
    """The C-arm's fixed geometry (intrinsics).

    Parameters
    ----------
    sdd_mm : float
        Source to detector distance (DICOM DistanceSourceToDetector, 0018,1110), mm.
    sod_mm : float
        Source to isocentre distance (DistanceSourceToPatient, 0018,1111 read as the
        isocentre), mm. 0 < sod_mm < sdd_mm.
    rows, cols : int
        Detector size in pixels (v, u).
    pixel_spacing_mm : (float, float)
        Detector pixel pitch (row spacing = along v, column spacing = along u), mm, at the
        detector (DICOM ImagerPixelSpacing, 0018,1164, same order).
    principal_offset_px : (float, float)
        Offset (du, dv) of the piercing point of the central ray from the detector centre,
        pixels. The principal point is ((cols-1)/2 + du, (rows-1)/2 + dv).
    """

    sdd_mm: float = DEFAULT_SDD_MM
    sod_mm: float = DEFAULT_SOD_MM
    rows: int = 256
    cols: int = 256
    pixel_spacing_mm: tuple[float, float] = (DEFAULT_DETECTOR_MM / 256, DEFAULT_DETECTOR_MM / 256)
    principal_offset_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        vals = [self.sdd_mm, self.sod_mm, *self.pixel_spacing_mm, *self.principal_offset_px]
        if not all(math.isfinite(float(x)) for x in vals):
            raise CarmGeometryError(f"C-arm geometry must be finite numbers, got {self!r}")
        if not 0.0 < self.sod_mm < self.sdd_mm:
            raise CarmGeometryError(
                f"need 0 < sod_mm < sdd_mm (source-isocentre inside source-detector), got "
                f"sod_mm={self.sod_mm}, sdd_mm={self.sdd_mm}")
        if int(self.rows) < 1 or int(self.cols) < 1 or int(self.rows) != self.rows or int(self.cols) != self.cols:
            raise CarmGeometryError(f"rows and cols must be positive integers, got {self.rows} x {self.cols}")
        if min(self.pixel_spacing_mm) <= 0:
            raise CarmGeometryError(f"pixel_spacing_mm must be > 0, got {self.pixel_spacing_mm}")
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "cols", int(self.cols))
        object.__setattr__(self, "pixel_spacing_mm", tuple(float(x) for x in self.pixel_spacing_mm))
        object.__setattr__(self, "principal_offset_px", tuple(float(x) for x in self.principal_offset_px))

    @classmethod
    def square(cls, n_px: int, *, detector_mm: float = DEFAULT_DETECTOR_MM, sdd_mm: float = DEFAULT_SDD_MM,
               sod_mm: float = DEFAULT_SOD_MM) -> CarmGeometry:
        """A square detector ``detector_mm`` wide sampled with ``n_px`` x ``n_px`` pixels."""
        return cls(sdd_mm=sdd_mm, sod_mm=sod_mm, rows=n_px, cols=n_px,
                   pixel_spacing_mm=(detector_mm / n_px, detector_mm / n_px))

    @property
    def magnification(self) -> float:
        """SID / SOD (DICOM EstimatedRadiographicMagnificationFactor, 0018,1114)."""
        return self.sdd_mm / self.sod_mm

    @property
    def principal_point_px(self) -> tuple[float, float]:
        """(c_u, c_v), pixels."""
        return ((self.cols - 1) / 2.0 + self.principal_offset_px[0],
                (self.rows - 1) / 2.0 + self.principal_offset_px[1])

    @property
    def K(self) -> NDArray[np.float64]:
        """3x3 intrinsic matrix, pixels (focal lengths SDD / pitch)."""
        cu, cv = self.principal_point_px
        return np.array([[self.sdd_mm / self.pixel_spacing_mm[1], 0.0, cu],
                         [0.0, self.sdd_mm / self.pixel_spacing_mm[0], cv],
                         [0.0, 0.0, 1.0]])

    @property
    def detector_size_mm(self) -> tuple[float, float]:
        """(height, width) of the detector, mm."""
        return (self.rows * self.pixel_spacing_mm[0], self.cols * self.pixel_spacing_mm[1])

    def field_size_at_isocentre_cm2(self) -> float:
        """Irradiated field area at the isocentre (full detector), cm^2 (for the DAP model)."""
        h, w = self.detector_size_mm
        return h * w / self.magnification ** 2 / 100.0

    def with_size(self, rows: int, cols: int) -> CarmGeometry:
        """The same physical detector sampled with rows x cols pixels."""
        h, w = self.detector_size_mm
        return replace(self, rows=rows, cols=cols, pixel_spacing_mm=(h / rows, w / cols),
                       principal_offset_px=(self.principal_offset_px[0] * cols / self.cols,
                                            self.principal_offset_px[1] * rows / self.rows))

    def to_dict(self) -> dict[str, Any]:
        return {"sdd_mm": self.sdd_mm, "sod_mm": self.sod_mm, "rows": self.rows, "cols": self.cols,
                "pixel_spacing_mm": list(self.pixel_spacing_mm),
                "principal_offset_px": list(self.principal_offset_px)}


@dataclass(frozen=True)
class CarmPose:
    """Where the C-arm is relative to the patient (extrinsics).

    Parameters
    ----------
    primary_rad : float
        DICOM positioner primary angle (LAO positive), radians; see the module docstring.
    secondary_rad : float
        DICOM positioner secondary angle (cranial positive), radians, in [-pi/2, pi/2].
    isocentre_world_mm : (3,) array_like
        The C-arm's isocentre (centre of rotation) in the CT's LPS frame, mm, before any
        table move.
    table_translation_world_mm : (3,) array_like
        How far the table (and the patient on it) has moved, expressed in the patient's LPS
        axes, mm. Moving the patient by +t moves the isocentre by -t in patient coordinates.
    patient_position : "prone" or "supine"
        How the patient lies on the table (head-first assumed; the angles are
        patient-relative, so this does not change the view, only the table's vertical:
        :meth:`table_up_world`).
    """

    primary_rad: float = math.pi
    secondary_rad: float = 0.0
    isocentre_world_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    table_translation_world_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    patient_position: PatientPosition = "prone"

    def __post_init__(self) -> None:
        iso = np.asarray(self.isocentre_world_mm, dtype=np.float64).reshape(-1)
        tab = np.asarray(self.table_translation_world_mm, dtype=np.float64).reshape(-1)
        if iso.shape != (3,) or tab.shape != (3,) or not (np.all(np.isfinite(iso)) and np.all(np.isfinite(tab))):
            raise CarmGeometryError(f"isocentre and table translation must be 3 finite numbers (mm), got "
                                    f"{self.isocentre_world_mm!r}, {self.table_translation_world_mm!r}")
        if not (math.isfinite(self.primary_rad) and math.isfinite(self.secondary_rad)):
            raise CarmGeometryError(f"angles must be finite, got {self.primary_rad!r}, {self.secondary_rad!r}")
        if abs(self.secondary_rad) > math.pi / 2 + 1e-12:
            raise CarmGeometryError(
                f"secondary (cranial/caudal) angle must be within +-90 deg, got {math.degrees(self.secondary_rad):.2f}")
        if self.patient_position not in ("prone", "supine"):
            raise CarmGeometryError(f"patient_position must be 'prone' or 'supine', got {self.patient_position!r}")
        object.__setattr__(self, "primary_rad", float(wrap_angle(self.primary_rad)))
        object.__setattr__(self, "secondary_rad", float(self.secondary_rad))
        object.__setattr__(self, "isocentre_world_mm", tuple(float(x) for x in iso))
        object.__setattr__(self, "table_translation_world_mm", tuple(float(x) for x in tab))

    @property
    def effective_isocentre_world_mm(self) -> NDArray[np.float64]:
        """Isocentre in patient coordinates after the table move, mm."""
        return np.asarray(self.isocentre_world_mm) - np.asarray(self.table_translation_world_mm)

    @property
    def detector_direction_world(self) -> NDArray[np.float64]:
        """Unit vector from the isocentre towards the detector centre (= beam direction)."""
        return beam_direction(self.primary_rad, self.secondary_rad)

    def table_up_world(self) -> NDArray[np.float64]:
        """Unit vector, in patient LPS, pointing from the table towards the ceiling."""
        return np.array([0.0, 1.0, 0.0]) if self.patient_position == "prone" else np.array([0.0, -1.0, 0.0])

    def with_table_move(self, delta_world_mm: ArrayLike) -> CarmPose:
        """The pose after moving the table (and patient) by a further ``delta_world_mm``."""
        return replace(self, table_translation_world_mm=tuple(
            np.asarray(self.table_translation_world_mm) + np.asarray(delta_world_mm, dtype=np.float64)))

    def to_dict(self) -> dict[str, Any]:
        return {"primary_deg": math.degrees(self.primary_rad), "secondary_deg": math.degrees(self.secondary_rad),
                "isocentre_world_mm": list(self.isocentre_world_mm),
                "table_translation_world_mm": list(self.table_translation_world_mm),
                "patient_position": self.patient_position}


def wrap_angle(a: float) -> float:
    """Angle in (-pi, pi]."""
    w = math.remainder(float(a), 2.0 * math.pi)
    return math.pi if w == -math.pi else w


def beam_direction(primary_rad: float, secondary_rad: float) -> NDArray[np.float64]:
    """Unit isocentre -> detector vector in LPS for DICOM positioner angles (see module doc).

    >>> np.round(beam_direction(0.0, 0.0), 6).tolist(), np.round(beam_direction(np.pi / 2, 0.0), 6).tolist()  # AP-ward, left
    ([0.0, -1.0, 0.0], [1.0, -0.0, 0.0])
    """
    cp, sp, cs, ss = math.cos(primary_rad), math.sin(primary_rad), math.cos(secondary_rad), math.sin(secondary_rad)
    return np.array([sp * cs, -cp * cs, ss])


def angles_from_direction(direction_world: ArrayLike) -> tuple[float, float]:
    """DICOM (primary, secondary) angles, radians, of a beam (isocentre -> detector) direction.

    At secondary = +-90 deg the primary angle is undefined; 0 is returned.
    """
    d = np.asarray(direction_world, dtype=np.float64).reshape(3)
    n = np.linalg.norm(d)
    if not n > 0 or not np.all(np.isfinite(d)):
        raise CarmGeometryError(f"beam direction must be a finite non-zero vector, got {d}")
    d = d / n
    secondary = math.asin(max(-1.0, min(1.0, d[2])))
    horiz = math.hypot(d[0], d[1])
    primary = math.atan2(d[0], -d[1]) if horiz > 1e-12 else 0.0
    return wrap_angle(primary), secondary


def camera_rotation(primary_rad: float, secondary_rad: float) -> NDArray[np.float64]:
    """R (3x3): rows are the image u axis, the image v axis and the beam, in world LPS."""
    b = beam_direction(primary_rad, secondary_rad)
    up = np.array([0.0, 0.0, 1.0])
    if abs(b @ up) > math.cos(_AXIAL_BEAM_RAD):
        up = np.array([0.0, -1.0, 0.0])  # beam along the body: anterior is up
    v = -(up - (up @ b) * b)
    v /= np.linalg.norm(v)
    u = np.cross(v, b)
    return np.vstack([u, v, b])


def source_world_mm(geometry: CarmGeometry, pose: CarmPose) -> NDArray[np.float64]:
    """X-ray focal spot in world LPS mm."""
    return pose.effective_isocentre_world_mm - geometry.sod_mm * pose.detector_direction_world


def extrinsics(geometry: CarmGeometry, pose: CarmPose) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(R, t) with camera = R @ world + t; camera origin at the source, z along the beam, mm."""
    R = camera_rotation(pose.primary_rad, pose.secondary_rad)
    return R, -R @ source_world_mm(geometry, pose)


def T_camera_from_world(geometry: CarmGeometry, pose: CarmPose) -> NDArray[np.float64]:
    """4x4 rigid transform world LPS mm -> C-arm camera frame (source origin, z = beam), mm."""
    R, t = extrinsics(geometry, pose)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def projection_matrix(geometry: CarmGeometry, pose: CarmPose) -> NDArray[np.float64]:
    """3x4 ``P = K [R | t]``: world LPS mm (homogeneous) -> detector pixels (homogeneous)."""
    R, t = extrinsics(geometry, pose)
    return geometry.K @ np.hstack([R, t[:, None]])


def project_points(P: ArrayLike, points_world_mm: ArrayLike) -> NDArray[np.float64]:
    """Pixels (..., 2) = (u, v) of world points (..., 3) under a 3x4 projection matrix.

    Points at or behind the source (depth <= 0) come back NaN: they have no image.
    """
    P = np.asarray(P, dtype=np.float64)
    X = np.asarray(points_world_mm, dtype=np.float64)
    h = X @ P[:, :3].T + P[:, 3]
    w = h[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = h[..., :2] / w
    return np.where(w > 0, uv, np.nan)


def decompose_projection(P: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Split a 3x4 projection matrix into K (upper triangular, K[2,2] = 1, positive diagonal),
    R (proper rotation) and t, with ``P ~ K [R | t]`` (RQ decomposition).

    The overall scale and sign of P are fixed so that points in front of the camera have a
    positive depth, which requires det(P[:, :3]) > 0 (true for every matrix made here).
    """
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise CarmGeometryError(f"projection matrix must be a finite 3x4 array, got shape {P.shape}")
    M = P[:, :3]
    if abs(np.linalg.det(M)) < 1e-12:
        raise CarmGeometryError("projection matrix is degenerate (det of its 3x3 part is ~0)")
    if np.linalg.det(M) < 0:
        P, M = -P, -M
    # RQ via QR of the flipped transpose
    flip = np.eye(3)[::-1]
    q, r = np.linalg.qr((flip @ M).T)
    K = flip @ r.T @ flip
    R = flip @ q.T
    signs = np.diag(np.sign(np.diag(K)))
    K, R = K @ signs, signs @ R
    if np.linalg.det(R) < 0:  # cannot happen with det(M) > 0 and a positive diagonal
        raise CarmGeometryError("projection matrix decomposes into a reflection")
    scale = K[2, 2]
    t = np.linalg.solve(K, P[:, 3])
    return K / scale, R, t


def camera_centre_world_mm(P: ArrayLike) -> NDArray[np.float64]:
    """The source position (null space of P), world mm."""
    P = np.asarray(P, dtype=np.float64)
    return -np.linalg.solve(P[:, :3], P[:, 3])


def pixel_world_mm(geometry: CarmGeometry, pose: CarmPose, uv_px: ArrayLike) -> NDArray[np.float64]:
    """World position (..., 3) of detector points given in pixels (..., 2)."""
    uv = np.asarray(uv_px, dtype=np.float64)
    R, _ = extrinsics(geometry, pose)
    cu, cv = geometry.principal_point_px
    src = source_world_mm(geometry, pose)
    x = (uv[..., 0] - cu) * geometry.pixel_spacing_mm[1]
    y = (uv[..., 1] - cv) * geometry.pixel_spacing_mm[0]
    return src + x[..., None] * R[0] + y[..., None] * R[1] + geometry.sdd_mm * R[2]


# ----------------------------------------------------------------------------- DICOM and sidecar
def _first_float(ds: Any, keyword: str) -> float | None:
    val = getattr(ds, keyword, None)
    if val is None or val == "":
        return None
    try:
        if isinstance(val, (list, tuple)) or hasattr(val, "__len__") and not isinstance(val, str):
            val = list(val)[0]
        return float(val)
    except (TypeError, ValueError, IndexError):
        return None


def geometry_from_dicom(ds: Any, *, source: str = "DICOM", isocentre_world_mm: ArrayLike = (0.0, 0.0, 0.0),
                        patient_position: PatientPosition | None = None,
                        notes: list[str] | None = None) -> tuple[CarmGeometry, CarmPose]:
    """C-arm geometry and pose from a DICOM X-ray header (XA, RF, DX, CR).

    Reads DistanceSourceToDetector (SID), DistanceSourceToPatient (SOD, taken as the
    isocentre distance), ImagerPixelSpacing (else PixelSpacing, else the isocentre spacing
    (0018,9404) scaled by SID/SOD), PositionerPrimaryAngle/SecondaryAngle (default 0 when
    absent), Rows/Columns and PatientPosition (HFP/FFP -> prone). What was assumed is
    appended to ``notes``.

    Raises
    ------
    CarmGeometryError
        SID or the pixel spacing is missing or not positive (no projective geometry without them).
    """
    notes = notes if notes is not None else []
    sid = _first_float(ds, "DistanceSourceToDetector")
    if sid is None or sid <= 0:
        raise CarmGeometryError(f"{source}: DistanceSourceToDetector (0018,1110) missing or not > 0 "
                                "(the source-detector distance); supply the geometry in a JSON sidecar")
    sod = _first_float(ds, "DistanceSourceToPatient")
    if sod is None or not 0 < sod < sid:
        mag = _first_float(ds, "EstimatedRadiographicMagnificationFactor")
        if mag and mag > 1:
            sod = sid / mag
            notes.append("SOD from SID / EstimatedRadiographicMagnificationFactor")
        else:
            sod = sid * DEFAULT_SOD_MM / DEFAULT_SDD_MM
            notes.append(f"DistanceSourceToPatient absent or invalid: SOD assumed {sod:.1f} mm "
                         f"(SID x {DEFAULT_SOD_MM:.0f}/{DEFAULT_SDD_MM:.0f})")
    spacing = None
    raw = getattr(ds, "ImagerPixelSpacing", None)
    if raw is not None and len(raw) == 2:
        spacing = (float(raw[0]), float(raw[1]))
    elif getattr(ds, "PixelSpacing", None) is not None and len(ds.PixelSpacing) == 2:
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        notes.append("ImagerPixelSpacing absent: PixelSpacing taken as the detector pitch")
    else:
        iso = getattr(ds, "ObjectPixelSpacingInCenterOfRotation", None)
        if iso is not None and len(iso) == 2:
            spacing = (float(iso[0]) * sid / sod, float(iso[1]) * sid / sod)
            notes.append("detector pitch from the isocentre pixel spacing (0018,9404) x SID/SOD")
    if spacing is None or min(spacing) <= 0:
        raise CarmGeometryError(f"{source}: no detector pixel spacing (ImagerPixelSpacing 0018,1164); "
                                "supply the geometry in a JSON sidecar")
    primary = _first_float(ds, "PositionerPrimaryAngle")
    secondary = _first_float(ds, "PositionerSecondaryAngle")
    if primary is None or secondary is None:
        notes.append("PositionerPrimary/SecondaryAngle absent: taken as 0 deg")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if patient_position is None:
        pp = str(getattr(ds, "PatientPosition", "") or "").upper()
        if pp.endswith("P"):
            patient_position = "prone"
        elif pp.endswith("S"):
            patient_position = "supine"
        else:
            patient_position = "prone"
            notes.append(f"PatientPosition {pp or 'absent'}: prone assumed (MIS spine)")
    geometry = CarmGeometry(sdd_mm=sid, sod_mm=sod, rows=rows, cols=cols, pixel_spacing_mm=spacing)
    pose = CarmPose(primary_rad=math.radians(primary or 0.0), secondary_rad=math.radians(secondary or 0.0),
                    isocentre_world_mm=tuple(np.asarray(isocentre_world_mm, float)),
                    patient_position=patient_position)
    return geometry, pose


def geometry_to_dicom(ds: Any, geometry: CarmGeometry, pose: CarmPose) -> Any:
    """Write the geometry attributes into a pydicom Dataset (the inverse of :func:`geometry_from_dicom`)."""
    ds.DistanceSourceToDetector = f"{geometry.sdd_mm:.6g}"
    ds.DistanceSourceToPatient = f"{geometry.sod_mm:.6g}"
    ds.EstimatedRadiographicMagnificationFactor = f"{geometry.magnification:.6g}"
    ds.ImagerPixelSpacing = [f"{geometry.pixel_spacing_mm[0]:.8g}", f"{geometry.pixel_spacing_mm[1]:.8g}"]
    ds.PositionerPrimaryAngle = f"{math.degrees(pose.primary_rad):.8g}"
    ds.PositionerSecondaryAngle = f"{math.degrees(pose.secondary_rad):.8g}"
    ds.PatientPosition = "HFP" if pose.patient_position == "prone" else "HFS"
    ds.Rows, ds.Columns = geometry.rows, geometry.cols
    return ds


def sidecar_dict(geometry: CarmGeometry, pose: CarmPose, **extra: Any) -> dict[str, Any]:
    """The JSON sidecar (schema ``spinenav.carm/1``) describing a PNG/TIFF shot."""
    return {"schema": SIDECAR_SCHEMA, "geometry": geometry.to_dict(), "pose": pose.to_dict(), **extra}


def read_sidecar(path: str | os.PathLike[str]) -> tuple[CarmGeometry, CarmPose, dict[str, Any]]:
    """Read a ``spinenav.carm/1`` sidecar: (geometry, pose, the whole document)."""
    p = Path(path)
    doc = read_json_document(p, schema=SIDECAR_SCHEMA, error=CarmGeometryError, missing="no such geometry sidecar")
    try:
        g, q = doc["geometry"], doc["pose"]
        geometry = CarmGeometry(sdd_mm=float(g["sdd_mm"]), sod_mm=float(g["sod_mm"]), rows=int(g["rows"]),
                                cols=int(g["cols"]), pixel_spacing_mm=tuple(g["pixel_spacing_mm"]),
                                principal_offset_px=tuple(g.get("principal_offset_px", (0.0, 0.0))))
        pose = CarmPose(primary_rad=math.radians(float(q["primary_deg"])),
                        secondary_rad=math.radians(float(q["secondary_deg"])),
                        isocentre_world_mm=tuple(q.get("isocentre_world_mm", (0.0, 0.0, 0.0))),
                        table_translation_world_mm=tuple(q.get("table_translation_world_mm", (0.0, 0.0, 0.0))),
                        patient_position=q.get("patient_position", "prone"))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CarmGeometryError):
            raise CarmGeometryError(f"{p}: {exc}") from exc
        raise CarmGeometryError(f"{p}: geometry sidecar field missing or invalid ({exc!r})") from exc
    return geometry, pose, doc
