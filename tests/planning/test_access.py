"""Tubular access and MIS TLIF on phantoms: tubes reach their target without crossing the canal."""

from __future__ import annotations

import numpy as np
import pytest
from plan_cases import DURAL_SAC, phantom, planned

from spinenav.planning import PlanningError, plan_procedure
from spinenav.planning.catalogue import default_catalogue

CAT = default_catalogue()
#: A disc-space target must lie within this of the true disc label (the target is 2 mm inside
#: the posterior annulus by design; 1 mm voxels).
TARGET_TOL_MM = 3.0


def _lookup(vol, pts):
    ijk = np.rint(vol.index_from_world(np.asarray(pts, float).reshape(-1, 3))).astype(int)
    ijk = np.clip(ijk, 0, np.array(vol.shape) - 1)
    return np.asarray(vol.array)[ijk[:, 0], ijk[:, 1], ijk[:, 2]]


def _tube_points(c, step=0.5, n=24):
    a = np.asarray(c.axis_world)
    s0 = np.asarray(c.skin_entry_world_mm)
    L = np.linalg.norm(np.asarray(c.docking_world_mm) - s0)
    ref = np.array([0.0, 0.0, 1.0])
    u = np.cross(a, ref)
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rings = [r * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v) for r in np.linspace(0, c.tube_diameter_mm / 2, 4)]
    ring = np.vstack(rings)
    s = np.arange(0, L + 1e-6, step)
    return ((s0 + s[:, None] * a)[:, None, :] + ring[None]).reshape(-1, 3)


CASES = [("pathology", "L4-L5", "microdiscectomy"), ("pathology", "L3-L4", "decompression"),
         ("pathology", "L4-L5", "tlif"), ("aniso", "L4-L5", "microdiscectomy"), ("aniso", "L3-L4", "decompression")]


@pytest.mark.parametrize("name,levels,procedure", CASES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_tube_reaches_its_target_without_crossing_the_canal(name, levels, procedure, side):
    ph = phantom(name)
    plan = planned(name, procedure, levels, side)
    (c,) = plan.corridors
    assert not c.crosses_canal and "crosses_canal" not in c.flags
    assert c.canal_source == "spinal_cord label"
    # the tube, skin to docking point, holds no voxel of the TRUE dural sac; nor does the axis to the target
    assert not np.any(_lookup(ph.labels, _tube_points(c)) == DURAL_SAC)
    dock, target = np.asarray(c.docking_world_mm), np.asarray(c.target_world_mm)
    work = dock + np.linspace(0, 1, 200)[:, None] * (target - dock)
    assert not np.any(_lookup(ph.labels, work) == DURAL_SAC)
    # it stays on its own side of the midline; the docking point lies behind the true canal
    # (lamina) or lateral of it (facet, TLIF)
    up, low = levels.split("-")
    canal = ph.truth.vertebra(up).canal
    lr = np.asarray(ph.truth.vertebra(up).axis_lr_world)
    ap = np.asarray(ph.truth.vertebra(up).axis_ap_world)
    sign = 1.0 if side == "left" else -1.0
    rel = dock - np.asarray(canal.centre_world_mm)
    assert sign * float(rel @ lr) > 0
    assert float(rel @ ap) > canal.ap_diameter_mm / 2 or abs(float(rel @ lr)) > canal.interpedicular_mm / 2
    # it reaches its target
    if c.target_kind in ("disc_space", "kambin_triangle"):
        disc_id = ph.truth.disc(levels).label_id
        disc_pts = ph.labels.world_from_index(np.argwhere(np.asarray(ph.labels.array) == disc_id))
        assert np.min(np.linalg.norm(disc_pts - target, axis=1)) <= TARGET_TOL_MM
    else:  # lateral recess: at the side of the true sac (within 3 mm of it), inside the canal's width
        off = float((target - np.asarray(canal.centre_world_mm)) @ lr) * sign
        assert 0 < off <= canal.interpedicular_mm / 2
        sac_pts = ph.labels.world_from_index(np.argwhere(np.asarray(ph.labels.array) == DURAL_SAC))
        assert np.min(np.linalg.norm(sac_pts - target, axis=1)) <= TARGET_TOL_MM
    assert c.tube_diameter_mm in CAT.tube_diameters_mm
    assert c.skin_entry_world_mm is not None and 0 < c.depth_mm < c.target_depth_mm
    assert c.target_depth_mm == pytest.approx(c.depth_mm + np.linalg.norm(target - dock), abs=0.01)
    assert 10.0 <= c.paramedian_offset_mm <= 45.0
    assert c.laminotomy_volume_mm3 > 0


def test_over_the_top_decompression_reaches_the_other_recess_dorsal_to_the_sac():
    ph = phantom("pathology")
    plan = planned("pathology", "decompression", "L3-L4", "left", over_the_top=True)
    (c,) = plan.corridors
    assert c.bilateral_over_the_top and c.contralateral_target_world_mm is not None
    assert "over_the_top_crosses_sac" not in c.flags
    dock, contra = np.asarray(c.docking_world_mm), np.asarray(c.contralateral_target_world_mm)
    path = dock + np.linspace(0, 1, 300)[:, None] * (contra - dock)
    assert not np.any(_lookup(ph.labels, path) == DURAL_SAC)
    lr = np.asarray(ph.truth.vertebra("L3").axis_lr_world)
    assert float((contra - np.asarray(ph.truth.vertebra("L3").canal.centre_world_mm)) @ lr) < 0  # the right side
    assert c.over_the_top_angle_deg > c.medial_angle_deg


def test_tlif_has_four_screws_a_cage_and_a_kambin_corridor():
    ph = phantom("pathology")
    plan = planned("pathology", "tlif", "L4-L5", "left")
    assert sorted(s.id for s in plan.screws) == ["L4-left", "L4-right", "L5-left", "L5-right"]
    assert all(s.accepted for s in plan.screws)
    (cage,) = plan.cages
    disc = ph.truth.disc("L4-L5")
    assert cage.height_mm in CAT.cage_heights_mm and cage.length_mm in CAT.cage_lengths_mm
    assert cage.disc_height_mm == pytest.approx(disc.middle_height_mm, abs=1.0)
    if "disc_collapsed" not in cage.flags:
        assert cage.height_mm <= cage.disc_height_mm + 2.0
    assert cage.length_mm <= cage.available_length_mm
    assert cage.lordosis_deg in CAT.cage_lordosis_deg
    (c,) = plan.corridors
    assert c.target_kind == "kambin_triangle" and c.kambin_inscribed_diameter_mm > 0
    assert plan.tissue is not None and plan.tissue.mis_muscle_disrupted_cm3 < plan.tissue.open_muscle_disrupted_cm3


def test_collapsed_disc_is_flagged_for_the_cage():
    plan = planned("pathology", "tlif", "L3-L4", "right")  # L3-L4 at half height
    (cage,) = plan.cages
    assert cage.disc_height_mm < 7.0
    assert "disc_collapsed" in cage.flags or cage.height_mm <= cage.disc_height_mm + 2.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(levels="L4-L5", procedure="fusion"), "unknown procedure"),
    (dict(levels="L4-L5", procedure="decompression", side="both", over_the_top=True), "conflicting"),
    (dict(levels="L4-L5", procedure="microdiscectomy", over_the_top=True), "conflicting"),
    (dict(levels="L4-L5", procedure="tlif", side="both"), "conflicting"),
    (dict(levels="L4", procedure="microdiscectomy", side="left"), "works on a disc"),
    (dict(levels="T4-T5", procedure="screws"), "not in view"),
    (dict(levels="L4-X9", procedure="screws"), "not a vertebral level"),
    (dict(levels="L4-L5", procedure="screws", side="middle"), "unknown side"),
])
def test_bad_requests_are_refused_with_the_reason(kwargs, match):
    ph = phantom("aniso")
    from plan_cases import phantom_spine

    with pytest.raises(PlanningError, match=match):
        plan_procedure(ph.ct, phantom_spine("aniso"), ph.labels, **kwargs)
