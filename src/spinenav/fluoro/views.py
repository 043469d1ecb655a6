"""The C-arm views MIS spine surgeons shoot, computed from the anatomy of one level.

Every view is a beam direction (source -> detector) plus an isocentre, turned into DICOM
positioner angles (:mod:`spinenav.fluoro.carm`: primary LAO+, secondary cranial+,
patient-relative). The patient lies PRONE with the tube under the table (the usual MIS
set-up), so every view except the lateral has its detector on the patient's back (the beam
runs anterior -> posterior); the lateral puts the detector on ``side``.

Views (``kind``)
----------------
``ap`` (true AP)
    Beam in the level's mid-sagittal plane (perpendicular to its left-right axis, so the
    spinous process sits midway between the pedicles) and parallel to its superior endplate
    (``endplate="superior"``, default: the endplate shows as one line), or inferior, or the
    mean of the two (the frame's axial plane).
``lateral`` (true lateral)
    Beam along the level's left-right axis, made parallel to the chosen endplate and
    perpendicular to the anterior-posterior axis (endplates and posterior body wall single).
``oblique`` ("Scotty dog")
    The true AP beam rotated about the endplate normal by ``oblique_rad`` (default 35 deg;
    the conventional 30-45 deg range: not in clinical-reference.md) towards ``side``: the
    detector moves to that side, showing that side's pars and pedicle (the dog's neck and eye).
``bullseye``
    Beam along a screw's axis (entry -> tip, given as points, so the planning layer is not
    needed), isocentre on the screw: entry and tip project to the same pixel.
``inlet`` / ``outlet`` (sacrum)
    The AP beam in S1's mid-sagittal plane, tilted from the table's vertical by ``tilt_rad``
    (defaults 25 and 40 deg, conventional values, not in clinical-reference.md): inlet aims
    caudally (beam from cranial-anterior to caudal-posterior, looking down the pelvic inlet),
    outlet aims cranially.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spinenav.anatomy.model import SpineModel, VertebraLandmarks
from spinenav.errors import SpinenavError
from spinenav.fluoro.carm import CarmGeometry, CarmPose, angles_from_direction
from spinenav.fluoro.drr import AttenuationVolume, MetalCylinder, render_line_integrals

ViewKind = Literal["ap", "lateral", "oblique", "bullseye", "inlet", "outlet"]
VIEW_KINDS = ("ap", "lateral", "oblique", "bullseye", "inlet", "outlet")
DEFAULT_OBLIQUE_RAD = math.radians(35.0)
DEFAULT_INLET_RAD = math.radians(25.0)
DEFAULT_OUTLET_RAD = math.radians(40.0)


class ViewError(SpinenavError):
    """A view cannot be computed (level missing, landmarks not found, bad screw)."""


@dataclass(frozen=True)
class View:
    """One standard view.

    ``pose`` is ready for :func:`~spinenav.fluoro.drr.render_line_integrals`; ``primary_deg``
    and ``secondary_deg`` are the C-arm angles to dial (degrees: this is an edge);
    ``beam_world`` the unit source -> detector direction (LPS); ``image`` the DRR line
    integrals when rendered (None otherwise); ``notes`` what the view was based on.
    """

    kind: str
    level: str
    pose: CarmPose
    beam_world: tuple[float, float, float]
    image: NDArray[np.float32] | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def primary_deg(self) -> float:
        return math.degrees(self.pose.primary_rad)

    @property
    def secondary_deg(self) -> float:
        return math.degrees(self.pose.secondary_rad)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "level": self.level, "primary_deg": self.primary_deg,
                "secondary_deg": self.secondary_deg, "beam_world": list(self.beam_world),
                "isocentre_world_mm": list(self.pose.isocentre_world_mm),
                "patient_position": self.pose.patient_position, "notes": list(self.notes)}


def _unit(v: ArrayLike) -> NDArray[np.float64]:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if not n > 1e-12:
        raise ViewError("degenerate direction (zero length)")
    return v / n


def _landmarks(spine: SpineModel, level: str) -> VertebraLandmarks:
    return spine.landmarks_of(level, ViewError, "no view can be aimed at it")


def _endplate_normal(lm: VertebraLandmarks, endplate: str, notes: list[str]) -> NDArray[np.float64]:
    """Cranial-pointing normal of the chosen endplate (falls back to the frame, with a note)."""
    if endplate == "mean":
        return _unit(lm.frame.axis_cc_world)
    if endplate not in ("superior", "inferior"):
        raise ViewError(f"endplate must be 'superior', 'inferior' or 'mean', got {endplate!r}")
    ep = lm.superior_endplate if endplate == "superior" else lm.inferior_endplate
    if ep is None:
        notes.append(f"{endplate} endplate not found: the vertebra's mean axial plane was used")
        return _unit(lm.frame.axis_cc_world)
    n = _unit(ep.normal_world)
    return n if endplate == "superior" else -n


def _ap_beam(lm: VertebraLandmarks, n_cc: NDArray[np.float64]) -> NDArray[np.float64]:
    """Beam in the mid-sagittal plane, perpendicular to n_cc, anterior -> posterior."""
    lr = _unit(lm.frame.axis_lr_world)
    b = _unit(np.cross(n_cc, lr))  # cc x lr = ap for a right-handed frame
    return b if b @ np.asarray(lm.frame.axis_ap_world) > 0 else -b


def view_beam(spine: SpineModel, kind: str, level: str, *, side: str = "left", endplate: str = "superior",
              oblique_rad: float = DEFAULT_OBLIQUE_RAD, tilt_rad: float | None = None,
              screw_entry_world_mm: ArrayLike | None = None, screw_tip_world_mm: ArrayLike | None = None,
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], list[str]]:
    """(beam direction, isocentre, notes) of a standard view; see the module docstring."""
    if kind not in VIEW_KINDS:
        raise ViewError(f"view must be one of {', '.join(VIEW_KINDS)}, got {kind!r}")
    if side not in ("left", "right"):
        raise ViewError(f"side must be 'left' or 'right', got {side!r}")
    notes: list[str] = []
    if kind == "bullseye":
        if screw_entry_world_mm is None or screw_tip_world_mm is None:
            raise ViewError("the bull's-eye view needs a screw: its entry and tip points (LPS mm)")
        entry = np.asarray(screw_entry_world_mm, dtype=np.float64).reshape(3)
        tip = np.asarray(screw_tip_world_mm, dtype=np.float64).reshape(3)
        axis = _unit(tip - entry)  # posterior -> anterior for a pedicle screw
        b = -axis  # tube under the prone patient: the beam runs tip -> entry (anterior -> posterior)
        notes.append("beam along the screw axis, isocentre at the screw's midpoint")
        return b, (entry + tip) / 2.0, notes
    lm = _landmarks(spine, level)
    iso = np.asarray(lm.frame.origin_world_mm, dtype=np.float64)
    lr = _unit(lm.frame.axis_lr_world)
    n = _endplate_normal(lm, endplate, notes)
    b_ap = _ap_beam(lm, n)
    if kind == "ap":
        notes.append(f"beam parallel to the {endplate} endplate, in the mid-sagittal plane")
        return b_ap, iso, notes
    if kind == "lateral":
        b = _unit(np.cross(b_ap, n))  # perpendicular to the endplate normal and to the AP beam
        want = lr if side == "left" else -lr
        notes.append(f"beam parallel to the {endplate} endplate and the posterior body wall; detector {side}")
        return (b if b @ want > 0 else -b), iso, notes
    if kind == "oblique":
        s = 1.0 if side == "left" else -1.0
        lr_perp = _unit(lr - (lr @ b_ap) * b_ap - (lr @ n) * n)  # left, perpendicular to beam and normal
        b = math.cos(oblique_rad) * b_ap + s * math.sin(oblique_rad) * lr_perp
        notes.append(f"true AP rotated {math.degrees(oblique_rad):.0f} deg about the endplate normal, "
                     f"detector towards the {side}")
        return _unit(b), iso, notes
    # inlet / outlet: from the body's AP direction (in the level's mid-sagittal plane,
    # perpendicular to the patient's long axis) tilted towards the feet / head: the
    # conventional angles are measured from the table's vertical, not from S1's endplate
    if not level.upper().startswith("S"):
        notes.append(f"inlet/outlet views are meant for the sacrum; computed on {level}")
    tilt = tilt_rad if tilt_rad is not None else (DEFAULT_INLET_RAD if kind == "inlet" else DEFAULT_OUTLET_RAD)
    z = np.array([0.0, 0.0, 1.0])
    ap_h = _unit(np.cross(z, lr))  # z x lr: posterior, perpendicular to the long axis
    ap_h = ap_h if ap_h @ b_ap > 0 else -ap_h
    sign = -1.0 if kind == "inlet" else 1.0  # inlet: the beam travels caudally
    b = _unit(math.cos(tilt) * ap_h + sign * math.sin(tilt) * _unit(np.cross(lr, ap_h)))
    notes.append(f"AP tilted {math.degrees(tilt):.0f} deg {'caudally' if kind == 'inlet' else 'cranially'} "
                 "from the table's vertical")
    return b, iso, notes


def standard_view(spine: SpineModel, kind: str, level: str, *, attenuation: AttenuationVolume | None = None,
                  geometry: CarmGeometry | None = None, metal: tuple[MetalCylinder, ...] = (),
                  patient_position: str = "prone", **options: Any) -> View:
    """The C-arm pose (and, given an attenuation volume and a geometry, the DRR) of a view.

    ``options`` go to :func:`view_beam` (side, endplate, oblique_rad, tilt_rad,
    screw_entry_world_mm, screw_tip_world_mm).

    Raises
    ------
    ViewError
        Unknown view, missing level or landmarks, missing screw for the bull's-eye.
    """
    b, iso, notes = view_beam(spine, kind, level, **options)
    primary, secondary = angles_from_direction(b)
    pose = CarmPose(primary_rad=primary, secondary_rad=secondary, isocentre_world_mm=tuple(iso),
                    patient_position=patient_position)  # type: ignore[arg-type]
    image = None
    if attenuation is not None:
        if geometry is None:
            raise ViewError("rendering a view needs the C-arm geometry")
        image = render_line_integrals(attenuation, geometry, pose, metal=metal)
    return View(kind=kind, level=level, pose=pose, beam_world=tuple(float(x) for x in b), image=image,
                notes=tuple(notes))
