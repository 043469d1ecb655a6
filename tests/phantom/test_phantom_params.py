"""PhantomParams: defaults, accepted forms, and one clear error per impossible value."""

from __future__ import annotations

import pytest

from spinenav.errors import SpinenavError
from spinenav.phantom import FieldOfView, PhantomParameterError, PhantomParams, generate_phantom


def test_defaults_and_derived_values():
    p = PhantomParams()
    assert p.levels == ("T10", "S1")
    assert p.drawn_levels == ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
    assert p.spacing_xyz_mm == (1.0, 1.0, 1.0)
    assert PhantomParams(spacing_mm=(0.7, 0.7, 2.5)).spacing_xyz_mm == (0.7, 0.7, 2.5)
    assert PhantomParams(levels=("L4", "L4")).drawn_levels == ("L4",)


def test_params_are_frozen_and_strict():
    p = PhantomParams()
    with pytest.raises(ValueError):
        p.noise_hu = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="lordosis"):
        PhantomParams(lordosis=30.0)  # a typo is refused, not ignored


@pytest.mark.parametrize("kwargs, message", [
    ({"levels": ("T9", "L5")}, r"unknown level 'T9'.*T10, T11"),
    ({"levels": ("L5", "L1")}, r"top level L5 is below bottom level L1"),
    ({"spacing_mm": -1.0}, r"spacing_mm must be positive"),
    ({"spacing_mm": (1.0, 0.0, 1.0)}, r"spacing_mm must be positive"),
    ({"spacing_mm": 12.0}, r"outside 0.2 to 5 mm"),
    ({"disc_height_loss": {"L4-L5": 1.2}}, r"0 <= loss <= 0.85"),
    ({"disc_height_loss": {"L4-L6": 0.2}}, r"unknown disc 'L4-L6'"),
    ({"disc_height_loss": {"T10-T11": 0.2}, "levels": ("L1", "S1")}, r"not between the drawn levels"),
    ({"stenosis": {"L4-L5": 0.3}}, r"is a disc; give the vertebra"),
    ({"stenosis": {"L4": 0.9}}, r"0 <= f <= 0.45"),
    ({"slip_mm": {"S1": 5.0}}, r"S1 cannot slip"),
    ({"slip_mm": {"L4": -3.0}}, r"retrolisthesis is not modelled"),
    ({"slip_mm": {"L5": 5.0}, "levels": ("L1", "L5")}, r"L5 over S1 needs both drawn"),
    ({"scale": 3.0}, r"scale"),
    ({"noise_hu": -5.0}, r"noise_hu"),
    ({"scoliosis_apex": "C7"}, r"scoliosis_apex: unknown level"),
])
def test_bad_parameters_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PhantomParams(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"box_min_world_mm": (0, 0, 0)}, r"both box_min_world_mm and box_max_world_mm"),
    ({"box_min_world_mm": (0, 0, 0), "box_max_world_mm": (10, -5, 10)}, r"must be below"),
    ({}, r"give levels=\(top, bottom\) and/or a box"),
    ({"levels": ("L5", "L2")}, r"top level L5 is below"),
])
def test_bad_field_of_view_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FieldOfView(**kwargs)


def test_fov_levels_must_be_drawn():
    with pytest.raises(ValueError, match=r"fov.levels: T12 is not among the drawn levels"):
        PhantomParams(levels=("L1", "L5"), fov=FieldOfView(levels=("T12", "L2")))


def test_combinations_that_cannot_be_built_raise_a_domain_error():
    # two discs cannot bend 22.5 degrees each in the coronal plane
    p = PhantomParams(levels=("L1", "L5"), scoliosis_deg=45.0, scoliosis_apex="L3", scoliosis_half_span=1)
    with pytest.raises(PhantomParameterError, match=r"disc L2-L3 would be -?\d+\.\d mm thin") as info:
        generate_phantom(p)
    assert isinstance(info.value, SpinenavError)
    # collapsed lumbar discs cannot carry a strong lordosis between them
    collapsed = {d: 0.85 for d in ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")}
    with pytest.raises(PhantomParameterError, match=r"cannot carry .* deg between them"):
        generate_phantom(PhantomParams(levels=("L1", "S1"), lordosis_deg=80.0, disc_height_loss=collapsed))
    far_box = FieldOfView(box_min_world_mm=(1000, 1000, 1000), box_max_world_mm=(1100, 1100, 1100))
    with pytest.raises(PhantomParameterError, match=r"misses the phantom"):
        generate_phantom(PhantomParams(levels=("L4", "L5"), fov=far_box))
    with pytest.raises(PhantomParameterError, match=r"beyond Meyerding grade II"):
        generate_phantom(PhantomParams(levels=("L4", "L5"), slip_mm={"L4": 19.0}))
