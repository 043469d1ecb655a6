"""CT input and output: the :class:`Volume`, file readers and writers, resampling."""

from spinenav.imaging.deidentify import write_dicom_series
from spinenav.imaging.dicom import list_series, read_dicom_series
from spinenav.imaging.io import (
    check_ct_intensities,
    read_volume,
    write_nifti,
    write_nrrd,
    write_volume,
)
from spinenav.imaging.resample import (
    crop_to_box,
    reorient_to_lps,
    resample_like,
    resample_to_grid,
    resample_to_orthogonal,
    resample_to_spacing,
    window,
)
from spinenav.imaging.volume import Volume

__all__ = [
    "Volume", "check_ct_intensities", "crop_to_box", "list_series",
    "read_dicom_series", "read_volume", "reorient_to_lps", "write_dicom_series",
    "resample_like", "resample_to_grid", "resample_to_orthogonal", "resample_to_spacing",
    "window", "write_nifti", "write_nrrd", "write_volume",
]
