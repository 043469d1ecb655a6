"""`Volume`: one voxel array plus the affine that places it in the patient, in LPS millimetres.

Conventions (docs/DESIGN.md):

* ``array`` is indexed ``[i, j, k]``; index ``(0, 0, 0)`` is the centre of the first voxel.
* ``affine`` is ``T_world_from_index``: a 4x4 matrix from voxel index to DICOM patient
  coordinates (LPS: +x towards the patient's left, +y posterior, +z head), millimetres.
* A Volume carries no patient identifiers: ``meta`` accepts only the keys in
  :data:`ALLOWED_META_KEYS` (acquisition facts, never names, IDs, dates or file names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nibabel.affines import apply_affine
from nibabel.orientations import aff2axcodes
from numpy.typing import ArrayLike, NDArray

#: Axis labels for nibabel's ``aff2axcodes`` in the LPS world: (negative end, positive end).
LPS_AXIS_LABELS = (("R", "L"), ("A", "P"), ("I", "S"))

#: Metadata a Volume may carry. Deliberately an allow-list: nothing that identifies a patient
#: (name, ID, birth date, study dates, accession, institution, file names) can enter a Volume.
ALLOWED_META_KEYS = frozenset(
    {
        "source_format",  # "dicom", "nifti", "nrrd", "mha", "phantom", ...
        "modality_source",  # "dicom" (read from the header) or "assumed" (format has none)
        "series_number",
        "manufacturer",
        "kvp_kv",
        "convolution_kernel",
        "slice_thickness_mm",
        "patient_position",  # HFS, FFS, ... : table placement, not an identifier
        "gantry_tilt_deg",
        "reader_notes",  # tuple of plain-language notes on what the reader did or assumed
        "units",  # "HU" for CT intensities, "label" for label maps
    }
)

#: Air in Hounsfield units; the fill value outside a CT.
AIR_HU = -1024


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image on a known grid in the patient's LPS frame.

    Parameters
    ----------
    array : (I, J, K) ndarray
        Voxel values: HU (int16 for CT as read) or integer labels.
    affine : (4, 4) array_like
        T_world_from_index, LPS mm. Columns 0-2 are the i, j, k steps in mm; column 3 is the
        centre of voxel (0, 0, 0).
    modality : str
        DICOM modality of the source ("CT", "MR", ...) or "SEG" for a label map.
    is_label : bool
        True for label maps (integer ids; resampled nearest-neighbour).
    meta : mapping
        Acquisition facts, keys from :data:`ALLOWED_META_KEYS` only.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 5, 6), np.int16), np.diag([0.5, 0.5, 2.0, 1.0]))
    >>> v.spacing_mm.tolist(), v.axcodes
    ([0.5, 0.5, 2.0], ('L', 'P', 'S'))
    >>> v.world_from_index([1, 2, 3]).tolist()
    [0.5, 1.0, 6.0]
    """

    array: NDArray[Any]
    affine: NDArray[np.float64]
    modality: str = "CT"
    is_label: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume array must be 3D (i, j, k), got shape {array.shape}")
        if min(array.shape) < 1:
            raise ValueError(f"Volume array has an empty axis: shape {array.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"Volume affine must be a finite 4x4 matrix, got {affine!r}")
        if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f"Volume affine's last row must be [0, 0, 0, 1], got {affine[3]}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise ValueError("Volume affine is singular (a zero or repeated axis)")
        unknown = set(self.meta) - ALLOWED_META_KEYS
        if unknown:
            raise ValueError(
                f"Volume meta keys {sorted(unknown)} are not allowed: a Volume carries only "
                f"{sorted(ALLOWED_META_KEYS)} (never patient identifiers)"
            )
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "meta", dict(self.meta))

    # ----------------------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        """Voxel size along i, j, k in mm, shape (3,)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> NDArray[np.float64]:
        """Unit world (LPS) directions of the i, j, k axes as columns, shape (3, 3)."""
        return self.affine[:3, :3] / self.spacing_mm

    @property
    def origin_world_mm(self) -> NDArray[np.float64]:
        """Centre of voxel (0, 0, 0) in LPS mm, shape (3,)."""
        return self.affine[:3, 3].copy()

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Where each array axis points, in LPS letters: ('L', 'P', 'S') means i to the
        patient's left, j posterior, k towards the head."""
        return tuple(aff2axcodes(self.affine, labels=LPS_AXIS_LABELS))  # type: ignore[return-value]

    @property
    def shear_deg(self) -> float:
        """Largest departure of the axes from mutual orthogonality, degrees (0 for a regular grid;
        non-zero after a gantry-tilted acquisition that was not resampled)."""
        d = self.direction
        cosines = [abs(d[:, a] @ d[:, b]) for a, b in ((0, 1), (0, 2), (1, 2))]
        return float(np.degrees(np.arcsin(min(1.0, max(cosines)))))

    @property
    def is_orthogonal(self) -> bool:
        return self.shear_deg < 1e-3

    @property
    def is_oblique(self) -> bool:
        """True when the grid axes are not parallel to the patient axes."""
        return bool(np.any(np.abs(self.direction).max(axis=0) < 1.0 - 1e-6))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def world_from_index(self, index: ArrayLike) -> NDArray[np.float64]:
        """Voxel index (..., 3) (fractional allowed) to LPS mm (..., 3)."""
        return apply_affine(self.affine, np.asarray(index, dtype=np.float64))

    def index_from_world(self, point_world_mm: ArrayLike) -> NDArray[np.float64]:
        """LPS mm (..., 3) to fractional voxel index (..., 3)."""
        return apply_affine(np.linalg.inv(self.affine), np.asarray(point_world_mm, dtype=np.float64))

    def corners_world_mm(self) -> NDArray[np.float64]:
        """The 8 corner voxel centres in LPS mm, shape (8, 3)."""
        n = np.array(self.shape) - 1
        idx = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])], float)
        return self.world_from_index(idx)

    @property
    def center_world_mm(self) -> NDArray[np.float64]:
        """Centre of the grid in LPS mm, shape (3,)."""
        return self.world_from_index((np.array(self.shape) - 1) / 2.0)

    @property
    def extent_mm(self) -> NDArray[np.float64]:
        """Field of view along i, j, k in mm (voxel edge to voxel edge), shape (3,)."""
        return np.array(self.shape) * self.spacing_mm

    # ----------------------------------------------------------------------------- values
    def with_array(self, array: ArrayLike, *, is_label: bool | None = None,
                   modality: str | None = None) -> Volume:
        """A Volume on the same grid with other voxel values (same shape required)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"with_array: shape {array.shape} differs from the grid {self.array.shape}")
        label = self.is_label if is_label is None else is_label
        return Volume(array, self.affine, modality=modality or self.modality, is_label=label,
                      meta=self.meta)

    def with_meta(self, **meta: Any) -> Volume:
        """A copy with ``meta`` updated (keys from :data:`ALLOWED_META_KEYS`)."""
        return Volume(self.array, self.affine, modality=self.modality, is_label=self.is_label,
                      meta={**self.meta, **meta})

    @property
    def value_range(self) -> tuple[float, float]:
        return float(self.array.min()), float(self.array.max())

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing_mm)
        return (f"Volume({self.modality}{' labels' if self.is_label else ''}, shape={self.shape}, "
                f"spacing_mm=({sp}), axcodes={''.join(self.axcodes)}, dtype={self.array.dtype})")
