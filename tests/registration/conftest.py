"""Shared fixtures of the registration tests: one small phantom (L3-L5, 1 mm, no organs), its L4
prepared for registration, and a scene that renders target shots with other physics (session)."""

from __future__ import annotations

import math

import pytest

from spinenav.phantom import PhantomParams, generate_phantom


@pytest.fixture(scope="session")
def phantom_l3l5():
    return generate_phantom(PhantomParams(levels=("L3", "L5"), spacing_mm=1.0, organs=False, seed=5))


@pytest.fixture(scope="session")
def l4(phantom_l3l5):
    from spinenav.registration.intensity import prepare_vertebra

    return prepare_vertebra(phantom_l3l5.ct, phantom_l3l5.labels, "L4")


@pytest.fixture(scope="session")
def scene(phantom_l3l5):
    from spinenav.registration.evaluate import TargetScene

    return TargetScene(phantom_l3l5.ct, phantom_l3l5.labels)


@pytest.fixture(scope="session")
def ap_lateral(l4):
    """(geometry, AP pose, lateral pose): 128 px detector, isocentre at L4's centroid."""
    from spinenav.fluoro.carm import CarmGeometry, CarmPose

    c = tuple(float(x) for x in l4.centroid_ct_mm)
    return CarmGeometry.square(128), CarmPose(math.pi, 0.0, c), CarmPose(math.pi / 2, 0.0, c)

