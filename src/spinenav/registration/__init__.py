"""Registration: where each vertebra of the CT is in the operating room.

2D/3D intensity-based registration per vertebra (:mod:`.intensity`, similarity in
:mod:`.similarity`), several vertebrae with their relative motion bounded (:mod:`.multilevel`),
the level check and the wrong-level detector of a single registration (:mod:`.levelcheck`),
point-based registration (paired points with FRE / predicted TRE, surface ICP: :mod:`.points`)
and the evaluation protocol (:mod:`.evaluate`). Every result carries ``ok`` and the reason when it should not be trusted.
"""

from spinenav.registration.intensity import (IntensityResult, RegistrationError, ShotView, VertebraVolume,
                                             moved_attenuation, prepare_vertebra, register_vertebra, similarity_at)
from spinenav.registration.levelcheck import LevelCheckResult, SpineVolume, check_level, confirm_level, prepare_spine
from spinenav.registration.multilevel import MultiLevelResult, RelativeMotion, register_levels, relative_motion
from spinenav.registration.points import (IcpResult, PairedPointResult, PointRegistrationError, icp_register,
                                          predicted_tre_mm, register_paired_points, surface_points_from_mask)
from spinenav.registration.similarity import as_attenuation_image, gradient_correlation, normalized_cross_correlation

__all__ = [
    "IcpResult", "IntensityResult", "LevelCheckResult", "MultiLevelResult", "PairedPointResult",
    "PointRegistrationError", "RegistrationError", "RelativeMotion", "ShotView", "SpineVolume", "VertebraVolume",
    "as_attenuation_image", "check_level", "confirm_level",
    "gradient_correlation", "icp_register", "moved_attenuation", "normalized_cross_correlation", "predicted_tre_mm",
    "prepare_spine", "prepare_vertebra", "register_levels", "register_paired_points", "register_vertebra",
    "relative_motion", "similarity_at",
    "surface_points_from_mask",
]
