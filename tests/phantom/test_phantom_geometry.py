"""The analytic model itself: the truth is what the exact inside tests say, and it matches the
design table of clinical-reference.md section 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from spinenav.phantom.anatomy import LEVELS
from spinenav.phantom.chain import build_chain
from spinenav.phantom.params import PhantomParams
from spinenav.phantom.skeleton import build_skeleton
from spinenav.phantom.shapes import Solid


@pytest.fixture(scope="module")
def skeleton():
    p = PhantomParams()
    return build_skeleton(build_chain(p), p)


@pytest.fixture(scope="module")
def truth(phantom_iso):
    return phantom_iso.truth


def test_pedicle_truth_is_the_design_table(truth):
    for v in truth.vertebrae:
        d = LEVELS[v.name]
        for side, p in v.pedicles.items():
            assert p.width_mm == pytest.approx(d.pedicle_width_mm, abs=2e-3), (v.name, side)
            assert p.height_mm == pytest.approx(d.pedicle_height_mm, abs=2e-3), (v.name, side)
            assert p.transverse_angle_deg == pytest.approx(d.pedicle_tpa_deg)
            assert p.sagittal_angle_deg == pytest.approx(d.pedicle_sagittal_deg)
            # the axis converges: it runs medially (towards the midline) going anteriorly
            c = np.array(p.isthmus_centre_world_mm)
            a = np.array(p.axis_world)
            lr = np.array(v.axis_lr_world)
            ap = np.array(v.axis_ap_world)
            assert a @ ap < -0.6  # anterior = -ap (LPS: -y)
            if d.pedicle_tpa_deg > 0:
                assert np.sign(a @ lr) == -np.sign((c - np.array(v.centre_world_mm)) @ lr)


def test_isthmus_is_the_narrowest_part_and_sets_the_screw(truth):
    """PW < PH at every level, so the largest screw is PW - 2 * margin, limited at the isthmus."""
    for v in truth.vertebrae:
        for p in v.pedicles.values():
            c = p.corridor
            assert c.max_diameter_mm == pytest.approx(p.width_mm - 2 * c.margin_mm, abs=0.025), v.name
            gap = np.linalg.norm(np.subtract(c.bottleneck_world_mm, p.isthmus_centre_world_mm))
            assert gap < 0.5, (v.name, gap)
            assert 0.0 <= c.entry_exempt_mm < 4.0
            assert c.max_length_mm <= p.chord_length_mm - c.margin_mm + 1e-6
            assert c.max_length_mm > 0.75 * p.chord_length_mm


def test_corridor_holds_on_the_analytic_model(skeleton, truth):
    for v in truth.vertebrae:
        solid: Solid = skeleton.vertebrae[v.name].solid
        for p in v.pedicles.values():
            c = p.corridor
            a = np.array(c.axis_world)
            entry, tip = np.array(c.entry_world_mm), np.array(c.tip_world_mm)
            assert abs(solid.sdf_points(entry[None])[0]) < 0.05  # entry on the bone surface
            assert solid.contains((tip + c.margin_mm * a)[None])[0]  # tip short of the cortex
            w = np.cross(a, [0.0, 0.0, 1.0])
            w /= np.linalg.norm(w)
            h = np.cross(a, w)
            phi = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            ring = np.cos(phi)[:, None] * w + np.sin(phi)[:, None] * h
            s = np.arange(c.entry_exempt_mm, c.max_length_mm, 0.25)
            r = c.max_diameter_mm / 2 + c.margin_mm
            pts = entry + s[:, None, None] * a + r * ring[None]
            # the truth's radial search uses 32 rays; between them a few microns may be missed
            assert solid.sdf_points(pts.reshape(-1, 3)).max() <= 0.005, v.name


@pytest.mark.parametrize("name", ["T11", "L1", "L4", "S1"])
def test_canal_is_the_designed_ellipse(skeleton, truth, name):
    """Flood-fill the canal on the analytic model's axial plane through the isthmus centres."""
    v = truth.vertebra(name)
    vm = skeleton.vertebrae[name]
    T = np.array(v.T_world_from_vertebra)
    step = 0.1
    t = np.arange(-22.0, 22.0 + step / 2, step)
    c = vm.canal_centre_local_mm
    g = np.stack(np.meshgrid(t + c[0], t + c[1], indexing="ij"), -1)
    pts_local = np.concatenate([g, np.full(g.shape[:2] + (1,), c[2])], -1).reshape(-1, 3)
    pts = pts_local @ T[:3, :3].T + T[:3, 3]
    bone = vm.solid.contains(pts).reshape(g.shape[:2])
    lab, _ = ndimage.label(~bone)
    i0 = int(np.argmin(np.abs(t)))
    region = lab == lab[i0, i0]
    assert not region[0].any() and not region[-1].any(), "canal not enclosed by bone"
    area = region.sum() * step * step
    assert area == pytest.approx(v.canal.area_mm2, rel=0.01)
    ipd = region[:, i0].sum() * step  # along lr through the centre (axis 0 is lr)
    ap = region[i0, :].sum() * step  # along ap through the centre
    assert ipd == pytest.approx(v.canal.interpedicular_mm, abs=2 * step)
    assert ap == pytest.approx(v.canal.ap_diameter_mm, abs=2 * step)
    assert region.any(axis=1).sum() * step == pytest.approx(ipd, abs=2 * step)  # the widest line


def test_neighbouring_bones_never_overlap(skeleton):
    rng = np.random.default_rng(0)
    sk = skeleton
    names = list(sk.drawn)
    pairs = [(sk.vertebrae[a].solid, sk.vertebrae[b].solid, f"{a}/{b}") for a, b in zip(names, names[1:])]
    pairs += [(sk.sacrum_rest, sk.vertebrae["S1"].solid, "sacrum/S1")]
    for side, ilium in sk.ilium.items():
        pairs += [(ilium, sk.sacrum_rest, f"hip_{side}/sacrum"), (ilium, sk.vertebrae["S1"].solid, f"hip_{side}/S1"),
                  (ilium, sk.vertebrae["L5"].solid, f"hip_{side}/L5")]
    for rib in sk.ribs:
        for lv in ("T10", "T11", "T12", "L1"):
            pairs.append((rib.solid, sk.vertebrae[lv].solid, f"rib {rib.side} {rib.level}/{lv}"))
    for a, b, what in pairs:
        ba, bb = a.bounds(), b.bounds()
        lo, hi = np.maximum(ba[0], bb[0]), np.minimum(ba[1], bb[1])
        if np.any(hi <= lo):
            continue
        pts = rng.uniform(lo, hi, size=(60_000, 3))
        both = a.contains(pts) & b.contains(pts)
        assert not both.any(), f"{what} overlap at {pts[both][:3]}"


def test_landmark_tips_lie_on_the_bone_surface(skeleton, truth):
    for v in truth.vertebrae:
        solid = skeleton.vertebrae[v.name].solid
        tips = [v.spinous_tip_world_mm, *v.transverse_process_tips_world_mm.values()]
        d = solid.sdf_points(np.array(tips))
        assert np.all(np.abs(d) < 0.3), (v.name, d)


def test_curve_is_what_was_asked(truth):
    c = truth.curve
    assert c.lordosis_l1_s1_deg == pytest.approx(45.0, abs=1e-6)
    wedges = sum(LEVELS[n].body_wedge_deg for n in ("L1", "L2", "L3", "L4", "L5"))
    lumbar = sum(c.segmental_lordosis_deg[d] for d in ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"))
    assert lumbar + wedges == pytest.approx(45.0, abs=1e-6)
    assert c.segmental_lordosis_deg["L5-S1"] > c.segmental_lordosis_deg["L4-L5"] > c.segmental_lordosis_deg["L1-L2"]
    assert c.thoracolumbar_kyphosis_deg == pytest.approx(10.0, abs=1e-6)
    assert c.scoliosis_cobb_deg == pytest.approx(0.0, abs=1e-6)
    # lumbar discs average 8.8 mm in the middle [DH-METHODS]; lordotic discs are taller in front
    mids = [truth.disc(d).middle_height_mm for d in ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")]
    assert np.mean(mids) == pytest.approx(8.8, abs=0.2)
    for d in ("L3-L4", "L4-L5", "L5-S1"):
        assert truth.disc(d).anterior_height_mm > truth.disc(d).posterior_height_mm


def test_ribs_and_iliac_crests_sit_where_levels_are_named_from(truth):
    assert truth.rib_levels == ["T10", "T11", "T12"]
    assert [v.name for v in truth.vertebrae if v.has_ribs] == ["T10", "T11", "T12"]
    assert truth.iliac_crest_top_level in ("L4-L5", "L4", "L5")
    z_l4, z_l5 = truth.vertebra("L4").centre_world_mm[2], truth.vertebra("L5").centre_world_mm[2]
    for z in truth.iliac_crest_top_z_world_mm.values():
        assert z_l5 < z < z_l4


def test_frames_are_rigid_and_lps(truth):
    for v in truth.vertebrae:
        T = np.array(v.T_world_from_vertebra)
        R = T[:3, :3]
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-9) and np.linalg.det(R) == pytest.approx(1.0)
        assert v.axis_cc_world[2] > 0.5  # cranial is +z in LPS
        assert v.axis_lr_world[0] > 0.9  # patient left is +x
        # the spinous process is posterior (+y) of the body, the canal between them
        assert v.spinous_tip_world_mm[1] > v.canal.centre_world_mm[1] > v.centre_world_mm[1] - 5
        if v.transverse_process_tips_world_mm:
            assert v.transverse_process_tips_world_mm["left"][0] > 0 > v.transverse_process_tips_world_mm["right"][0]
        assert math.isclose(np.linalg.norm(v.pedicles["left"].axis_world), 1.0, rel_tol=1e-9)
