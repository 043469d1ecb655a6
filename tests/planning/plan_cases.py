"""Planning test cases: the anatomy tests' phantoms (cached per session), their exact bone
solids, and plans made from their TRUE label maps (cached), shared by the planning tests.

A module of its own (not conftest.py): test files import these helpers by name, and several
test folders have a conftest.py, so importing one of them by name would be ambiguous.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "anatomy"))  # anat_cases.py: the same phantoms

# The anatomy tests' phantoms and SpineModels, cached per session (functools.cache), so a full
# run generates and measures each phantom once for both suites:
#   pathology: L2-S1, stenosis L3 (0.4) and L5 (0.25), half-height L3-L4 disc, L4 slipped 6 mm
#   scoliosis: T11-L3, 20 degrees; aniso: L3-L5 on 0.8 x 0.8 x 2 mm; noisy: L1-L3, 60 HU noise
#   small: T10-T12 at scale 0.75, T10's pedicles about 4.5 mm wide
from anat_cases import DURAL_SAC, phantom, phantom_model  # noqa: E402,F401


def phantom_spine(name: str):
    return phantom_model(name)


@functools.cache
def phantom_solids(name: str):
    """The phantom's exact vertebra solids (the analytic truth its label map was drawn from)."""
    from spinenav.phantom.chain import build_chain
    from spinenav.phantom.skeleton import build_skeleton

    params = phantom(name).params
    return build_skeleton(build_chain(params), params).vertebrae


@functools.cache
def planned(name: str, procedure: str, levels: str, side: str = "both", over_the_top: bool = False):
    from spinenav.planning import plan_procedure

    ph = phantom(name)
    return plan_procedure(ph.ct, phantom_spine(name), ph.labels, levels=levels, procedure=procedure, side=side,
                          over_the_top=over_the_top)
