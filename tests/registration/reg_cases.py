"""Cases shared by the registration tests (imported by the test modules, like tests/anatomy/anat_cases.py)."""

from __future__ import annotations

import numpy as np

from spinenav.anatomy.labels import ts_id
from spinenav.registration.evaluate import rigid_about
from spinenav.registration.intensity import ShotView


def l4_biplane_case(l4, scene, ap_lateral, start_deg, start_mm, seed: int = 0):
    """L4 moved 4 mm / 4 deg from the CT (the rest in place), rendered AP + lateral with other
    physics; the start offset from the truth by ``start_deg`` (rotation vector, deg) and
    ``start_mm``. Returns (T_true, T_start, [ap ShotView, lateral ShotView])."""
    g, ap, lat = ap_lateral
    c = l4.centroid_ct_mm
    T_true = rigid_about(c, np.radians([2.0, -3.0, 1.5]), [3.0, -2.0, 1.5])
    c_true = T_true[:3, :3] @ c + T_true[:3, 3]
    T_start = rigid_about(c_true, np.radians(start_deg), start_mm) @ T_true
    return T_true, T_start, [ShotView(scene.render(ts_id("L4"), T_true, g, p, seed=seed + i), g, p)
                             for i, p in enumerate((ap, lat))]
