"""Shared phantoms for the phantom tests (generated once per session; small and seeded).
Measurement helpers are in ``phantom_measure.py``."""

from __future__ import annotations

import numpy as np
import pytest

from spinenav.phantom import FieldOfView, PhantomParams, generate_phantom


def _gen(**kw):
    return generate_phantom(PhantomParams(**kw))


@pytest.fixture(scope="session")
def phantom_iso():
    """The whole model T10-S1 at 1 mm, default noise: the reference phantom."""
    return _gen(spacing_mm=1.0, seed=11)


@pytest.fixture(scope="session")
def phantom_aniso():
    """L3-L5 on a clinical anisotropic grid (0.7 x 0.7 x 2.5 mm)."""
    return _gen(levels=("L3", "L5"), spacing_mm=(0.7, 0.7, 2.5), organs=False, seed=3)


@pytest.fixture(scope="session")
def phantom_l4_fine(phantom_iso):
    """L4 alone in a 0.5 mm box (partial field of view), noise free: for sub-mm checks."""
    v = phantom_iso.truth.vertebra("L4")
    c = np.array(v.centre_world_mm)
    lo = c + np.array([-40.0, -30.0, -30.0])
    hi = c + np.array([40.0, 60.0, 30.0])
    return _gen(levels=("L3", "L5"), spacing_mm=0.5, organs=False, noise_hu=0.0,
                fov=FieldOfView(box_min_world_mm=tuple(lo), box_max_world_mm=tuple(hi)))


@pytest.fixture(scope="session")
def phantom_normal_l3s1():
    return _gen(levels=("L3", "S1"), spacing_mm=1.25, organs=False, seed=5)


@pytest.fixture(scope="session")
def phantom_pathology_l3s1():
    """Same grid as phantom_normal_l3s1 with stenosis at L4, a half-height L3-L4 disc and an
    anterior slip of L4 over L5."""
    return _gen(levels=("L3", "S1"), spacing_mm=1.25, organs=False, seed=5,
                stenosis={"L4": 0.4}, disc_height_loss={"L3-L4": 0.5}, slip_mm={"L4": 6.0})
