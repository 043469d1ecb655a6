"""spinenav: open planning, fluoroscopy simulation and navigation for minimally invasive spine surgery.

The world frame everywhere is DICOM LPS in millimetres (see ``docs/DESIGN.md``).
"""

from spinenav.errors import SpinenavError

__version__ = "0.1.0"
__all__ = ["SpinenavError", "__version__"]
