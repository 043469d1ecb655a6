"""Shared fixtures of the fluoro tests: one small phantom and its measured SpineModel (session)."""

from __future__ import annotations

import pytest

from spinenav.phantom import PhantomParams, generate_phantom


@pytest.fixture(scope="session")
def phantom_l3s1():
    """L3-S1 at 1 mm, no organs: the levels MIS screws go into."""
    return generate_phantom(PhantomParams(levels=("L3", "S1"), spacing_mm=1.0, organs=False, seed=5))


@pytest.fixture(scope="session")
def spine_l3s1(phantom_l3s1):
    """The anatomy layer's SpineModel of that phantom (its own label map, measured on the CT)."""
    from spinenav.anatomy.measure import measure_spine

    return measure_spine(phantom_l3s1.ct, phantom_l3s1.labels)


@pytest.fixture(scope="session")
def attenuation_l3s1(phantom_l3s1):
    from spinenav.fluoro.drr import prepare_attenuation

    return prepare_attenuation(phantom_l3s1.ct)
