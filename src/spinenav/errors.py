"""Domain errors and warnings shared by every layer.

Only ``spinenav.app.cli`` catches :class:`SpinenavError`; it prints the one-line message to
stderr and exits non-zero. Messages name the file or argument, what was expected, what came in,
and what to do about it.
"""


class SpinenavError(ValueError):
    """Base class of spinenav's domain errors (also a ``ValueError``)."""


class ImageReadError(SpinenavError):
    """A file or folder cannot be read as a medical image volume."""


class DicomSeriesError(ImageReadError):
    """A folder of DICOM files cannot be assembled into one CT Volume."""


class SpinenavWarning(UserWarning):
    """A tolerable oddity: the message says what was assumed instead."""


class DicomWarning(SpinenavWarning):
    """A DICOM oddity that spinenav worked around (the message says how)."""
