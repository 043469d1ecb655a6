"""C-arm fluoroscopy: projection geometry, DRR rendering, standard views, dose, real shots, overlays.

Conventions (details in :mod:`spinenav.fluoro.carm`): world = the CT's LPS mm; C-arm angles
are DICOM positioner angles (primary LAO+, secondary cranial+, patient-relative); the patient
lies prone with the tube under the table; images are the beam's-eye view with the head up
(in an AP shot the patient's left is on the image's right).
"""

from spinenav.fluoro.carm import (CarmGeometry, CarmGeometryError, CarmPose, angles_from_direction, beam_direction,
                                  decompose_projection, geometry_from_dicom, geometry_to_dicom, project_points,
                                  projection_matrix, read_sidecar, sidecar_dict)
from spinenav.fluoro.dose import DoseLog, GuidanceComparison, compare_guidance, shot_dap_gy_cm2
from spinenav.fluoro.drr import (AttenuationVolume, DrrError, MetalCylinder, Spectrum, hu_to_mu_per_mm,
                                 prepare_attenuation, render_drr, render_line_integrals, to_display, transmission)
from spinenav.fluoro.overlay import OverlayItem, overlay_plan, plan_items, project_items, screw_tip_px, write_overlay_png
from spinenav.fluoro.shots import Shot, ShotReadError, read_shot, write_shot_png
from spinenav.fluoro.views import VIEW_KINDS, View, ViewError, standard_view, view_beam

__all__ = [
    "AttenuationVolume", "CarmGeometry", "CarmGeometryError", "CarmPose", "DoseLog", "DrrError", "GuidanceComparison",
    "MetalCylinder", "OverlayItem", "Shot", "ShotReadError", "Spectrum", "VIEW_KINDS", "View", "ViewError",
    "angles_from_direction", "beam_direction", "compare_guidance", "decompose_projection", "geometry_from_dicom",
    "geometry_to_dicom", "hu_to_mu_per_mm", "overlay_plan", "plan_items", "prepare_attenuation", "project_items",
    "project_points", "projection_matrix", "read_shot", "read_sidecar", "render_drr", "render_line_integrals",
    "screw_tip_px", "shot_dap_gy_cm2", "sidecar_dict", "standard_view", "to_display", "transmission", "view_beam",
    "write_overlay_png", "write_shot_png",
]
