"""Anatomy: find, label and measure every vertebra of a CT, and say when unsure.

From a vertebra label map (any backend, see ``segment.py``) on the CT's grid:

* :mod:`~spinenav.anatomy.labels` - level names and ids (TotalSegmentator v2, VerSe, discs);
* :mod:`~spinenav.anatomy.labelmap` - the ``labelmap`` backend (import onto the CT grid);
* :mod:`~spinenav.anatomy.landmarks` - per vertebra a local frame and its landmarks;
* :mod:`~spinenav.anatomy.measure` - measurements, radiological flags, the :class:`SpineModel`;
* :mod:`~spinenav.anatomy.export` - label map, ``spine.json``, STL meshes, Slicer markups,
  overview PNG, measurement tables.

>>> from spinenav.anatomy import import_label_map, measure_spine, write_anatomy  # doctest: +SKIP
>>> imp = import_label_map("seg/labels.nii.gz", ct)                             # doctest: +SKIP
>>> spine = measure_spine(ct, imp.labels, names=imp.names)                      # doctest: +SKIP
>>> write_anatomy("out/anatomy", ct, imp.labels, spine)                         # doctest: +SKIP
"""

from spinenav.anatomy.export import (markups_document, measurements_csv, measurements_markdown, overview_png,
                                     vertebra_mesh, write_anatomy, write_label_map, write_markups, write_spine_json,
                                     write_stl)
from spinenav.anatomy.labelmap import ImportedLabels, LabelMapError, import_label_map, read_mapping
from spinenav.anatomy.landmarks import LandmarkError, spine_landmarks, vertebra_landmarks
from spinenav.anatomy.measure import body_heights, dhi_band, measure_spine, meyerding_grade
from spinenav.anatomy.model import (SCHEMA, Backend, Canal, Disc, Endplate, Facet, Flag, LevelAlternative, LevelLabel,
                                    Pedicle, Point, SpineMeasures, SpineModel, SpineModelSchemaError, Vertebra,
                                    VertebraFrame, VertebraLandmarks, VertebraMeasurements, load_spine_model)

__all__ = [
    "SCHEMA", "Backend", "Canal", "Disc", "Endplate", "Facet", "Flag", "ImportedLabels", "LabelMapError",
    "LandmarkError", "LevelAlternative", "LevelLabel", "Pedicle", "Point", "SpineMeasures", "SpineModel",
    "SpineModelSchemaError", "Vertebra", "VertebraFrame", "VertebraLandmarks", "VertebraMeasurements",
    "body_heights", "dhi_band", "import_label_map", "load_spine_model", "markups_document", "measure_spine",
    "measurements_csv", "measurements_markdown", "meyerding_grade", "overview_png", "read_mapping",
    "spine_landmarks", "vertebra_landmarks", "vertebra_mesh", "write_anatomy", "write_label_map",
    "write_markups", "write_spine_json", "write_stl",
]
