"""Synthetic spine phantom: a parametric CT of T10-S1 whose every landmark is known.

The phantom is the ground truth for the rest of spinenav (segmentation, landmarks, pedicle
measurements, screw planning, registration, DRRs). Its geometry is a union of analytic solids
(:mod:`~spinenav.phantom.shapes`); the labels and the truth come from the same exact inside
tests, the CT adds partial volume, blur and noise.

>>> from spinenav.phantom import PhantomParams, generate_phantom, write_phantom
>>> ph = generate_phantom(PhantomParams(levels=("L3", "S1"), spacing_mm=1.0, slip_mm={"L4": 6.0}))
>>> paths = write_phantom(ph, "out/phantom")  # doctest: +SKIP
"""

from spinenav.phantom.anatomy import (DISC_LABEL_OFFSET, DISC_NAMES, SPINAL_CORD_LABEL, VERTEBRA_LABELS,
                                      VERTEBRA_NAMES, Tissue, disc_label, label_names)
from spinenav.phantom.generate import Phantom, PhantomParameterError, generate_phantom, write_phantom
from spinenav.phantom.params import FieldOfView, PhantomParams
from spinenav.phantom.truth import (SCHEMA, CanalTruth, DiscTruth, PedicleTruth, PhantomTruth, ScrewCorridorTruth,
                                    SlipTruth, TruthSchemaError, VertebraTruth, load_truth)

__all__ = [
    "DISC_LABEL_OFFSET", "DISC_NAMES", "SCHEMA", "SPINAL_CORD_LABEL", "VERTEBRA_LABELS", "VERTEBRA_NAMES",
    "CanalTruth", "DiscTruth", "FieldOfView", "PedicleTruth", "Phantom", "PhantomParameterError",
    "PhantomParams", "PhantomTruth", "ScrewCorridorTruth", "SlipTruth", "Tissue", "TruthSchemaError",
    "VertebraTruth", "disc_label", "generate_phantom", "label_names", "load_truth", "write_phantom",
]
