"""Parameter variants give consistent truth, and the image follows the truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from phantom_measure import flood_area_mm2, plane_samples, run_through, voxel_extent_mm
from spinenav.phantom import FieldOfView, PhantomParams, Tissue, generate_phantom


def _centroid_world(ph, label_id):
    idx = np.argwhere(ph.labels.array == label_id)
    return ph.labels.world_from_index(idx.mean(axis=0))


def _canal_area_on_image(ph, name):
    v = ph.truth.vertebra(name)
    step = 0.1
    plane, t = plane_samples(ph.labels, v.canal.centre_world_mm, v.axis_lr_world, v.axis_ap_world,
                             half_mm=25.0, step_mm=step)
    i0 = int(np.argmin(np.abs(t)))
    return flood_area_mm2(plane != v.label_id, (i0, i0), step)


def test_stenosis_narrows_the_stated_and_the_imaged_canal(phantom_normal_l3s1, phantom_pathology_l3s1):
    n, p = phantom_normal_l3s1.truth.vertebra("L4"), phantom_pathology_l3s1.truth.vertebra("L4")
    assert p.canal.ap_diameter_mm == pytest.approx(0.6 * n.canal.ap_diameter_mm)
    assert p.canal.interpedicular_mm == pytest.approx(n.canal.interpedicular_mm)
    assert p.canal.area_mm2 < 0.8 * n.canal.area_mm2
    assert p.canal.stenosis_fraction == pytest.approx(0.4)
    img_n = _canal_area_on_image(phantom_normal_l3s1, "L4")
    img_p = _canal_area_on_image(phantom_pathology_l3s1, "L4")
    assert img_p == pytest.approx(p.canal.area_mm2, rel=0.08)
    assert img_p < 0.85 * img_n
    ap_run = run_through_canal(phantom_pathology_l3s1, "L4")
    assert ap_run == pytest.approx(p.canal.ap_diameter_mm, abs=voxel_extent_mm(phantom_pathology_l3s1.labels,
                                                                               p.axis_ap_world))
    # the pedicles are untouched by a stenosis
    assert p.pedicles["left"].width_mm == pytest.approx(n.pedicles["left"].width_mm)
    # the dural sac still fits inside the narrowed canal, with fat around it
    sac = phantom_pathology_l3s1.labels.array == 79
    assert sac.any()


def run_through_canal(ph, name):
    v = ph.truth.vertebra(name)
    step = 0.05
    plane, t = plane_samples(ph.labels, v.canal.centre_world_mm, v.axis_lr_world, v.axis_ap_world,
                             half_mm=20.0, step_mm=step)
    i0 = int(np.argmin(np.abs(t)))
    lab, _ = ndimage.label(plane != v.label_id)
    return (lab[i0, :] == lab[i0, i0]).sum() * step


def test_disc_height_loss(phantom_normal_l3s1, phantom_pathology_l3s1):
    n, p = phantom_normal_l3s1.truth.disc("L3-L4"), phantom_pathology_l3s1.truth.disc("L3-L4")
    assert p.height_loss_fraction == 0.5
    assert p.middle_height_mm == pytest.approx(0.5 * n.middle_height_mm, rel=0.02)
    lower = phantom_pathology_l3s1.truth.vertebra("L4")
    normal = np.array(lower.superior_endplate.normal_world)
    mid = np.array(lower.superior_endplate.centre_world_mm) + 0.5 * p.middle_height_mm * normal
    run = run_through(phantom_pathology_l3s1.labels, p.label_id, mid, normal, max_mm=15.0)
    assert run == pytest.approx(p.middle_height_mm, abs=voxel_extent_mm(phantom_pathology_l3s1.labels, normal))


def test_slip_moves_the_vertebra_along_the_lower_endplate(phantom_normal_l3s1, phantom_pathology_l3s1):
    tn, tp = phantom_normal_l3s1.truth, phantom_pathology_l3s1.truth
    (slip,) = tp.slips
    assert (slip.level, slip.over, slip.slip_mm) == ("L4", "L5", 6.0)
    assert slip.slip_percent == pytest.approx(100 * 6.0 / tp.vertebra("L5").body_depth_mm)
    assert slip.meyerding_grade == 1
    assert tp.disc("L4-L5").slip_mm == 6.0
    # the slip runs anteriorly along L5's superior endplate (Meyerding): -ap, made
    # perpendicular to the endplate normal (L5 is wedged, so that is not quite L5's ap axis)
    n = np.array(tp.vertebra("L5").superior_endplate.normal_world)
    anterior = -np.array(tp.vertebra("L5").axis_ap_world)
    anterior = anterior - (anterior @ n) * n
    anterior /= np.linalg.norm(anterior)
    shift_truth = np.subtract(tp.vertebra("L4").centre_world_mm, tn.vertebra("L4").centre_world_mm)
    assert shift_truth @ anterior == pytest.approx(6.0, abs=0.05)
    assert np.linalg.norm(shift_truth - 6.0 * anterior) < 0.05
    # the image: the L4 label moved by the same translation (within a voxel)
    shift_img = _centroid_world(phantom_pathology_l3s1, 28) - _centroid_world(phantom_normal_l3s1, 28)
    assert np.linalg.norm(shift_img - shift_truth) < 1.0
    # L5 did not move; the sheared disc between is still one piece
    assert np.allclose(tp.vertebra("L5").centre_world_mm, tn.vertebra("L5").centre_world_mm)
    disc = phantom_pathology_l3s1.labels.array == tp.disc("L4-L5").label_id
    assert ndimage.label(disc, structure=np.ones((3, 3, 3)))[1] == 1
    l4 = phantom_pathology_l3s1.labels.array == 28
    assert ndimage.label(l4, structure=np.ones((3, 3, 3)))[1] == 1


@pytest.fixture(scope="module")
def phantom_scoliosis():
    return generate_phantom(PhantomParams(levels=("T10", "L5"), spacing_mm=1.5, organs=False, noise_hu=0.0,
                                          scoliosis_deg=20.0, scoliosis_apex="L1"))


def test_scoliosis_makes_a_curve_convex_to_the_right(phantom_scoliosis):
    t = phantom_scoliosis.truth
    assert t.curve.scoliosis_cobb_deg == pytest.approx(20.0, abs=0.5)
    tilts = {v.name: v.coronal_tilt_deg for v in t.vertebrae}
    # the end vertebrae of the curve (apex L1 +- 2) are the most tilted, in opposite senses
    assert tilts["L3"] == pytest.approx(-10.0, abs=0.5) and tilts["T11"] == pytest.approx(10.0, abs=0.5)
    c = {v.name: np.array(v.centre_world_mm) for v in t.vertebrae}
    chord = c["L3"] - c["T11"]
    off = c["L1"] - c["T11"]
    lateral = off - (off @ chord) / (chord @ chord) * chord
    assert lateral[0] < -3.0  # apex displaced to the patient's right (-x in LPS)
    for v in t.vertebrae:  # the labels follow the truth
        img = _centroid_world(phantom_scoliosis, v.label_id)
        body = np.array(v.centre_world_mm)
        assert abs(img[0] - body[0]) < 1.5, v.name  # posterior elements are symmetric in lr
    # discs are still one piece each, also on the concave side
    for d in t.discs:
        mask = phantom_scoliosis.labels.array == d.label_id
        assert ndimage.label(mask, structure=np.ones((3, 3, 3)))[1] == 1, d.name


@pytest.fixture(scope="module")
def small_pair():
    kw = dict(levels=("L4", "L5"), spacing_mm=1.5, organs=True)
    return (generate_phantom(PhantomParams(**kw, seed=0)), generate_phantom(PhantomParams(**kw, seed=0)),
            generate_phantom(PhantomParams(**kw, seed=1)), generate_phantom(PhantomParams(**kw, noise_hu=0.0)))


def test_seeds_noise_and_determinism(small_pair):
    a, a2, b, quiet = small_pair
    assert np.array_equal(a.ct.array, a2.ct.array)  # same seed, same phantom
    assert not np.array_equal(a.ct.array, b.ct.array)  # another seed, other noise and bowel
    for vid in (28, 27):
        assert np.array_equal(a.labels.array == vid, b.labels.array == vid)  # anatomy is seed-free
    assert a.truth.seed == 0 and b.truth.seed == 1
    assert a.truth.vertebrae == b.truth.vertebrae
    air = quiet.tissue.array == Tissue.AIR
    far_air = ndimage.binary_erosion(air, iterations=3)
    assert np.all(quiet.ct.array[far_air] == -1000)  # no noise: air is exactly air
    noisy = a.ct.array[far_air].astype(float)
    assert 15.0 < noisy.std() < 25.0  # noise_hu = 20


def test_partial_field_of_view_is_a_crop_of_the_same_world():
    kw = dict(levels=("L2", "S1"), spacing_mm=1.5, organs=False, noise_hu=0.0)
    full = generate_phantom(PhantomParams(**kw))
    part = generate_phantom(PhantomParams(**kw, fov=FieldOfView(levels=("L4", "L5"), margin_mm=5.0)))
    assert part.ct.shape[2] < 0.6 * full.ct.shape[2]
    inside = {v.name: v.in_field_of_view for v in part.truth.vertebrae}
    assert inside == {"L2": False, "L3": False, "L4": True, "L5": True, "S1": False}
    assert [v.name for v in part.truth.vertebrae] == [v.name for v in full.truth.vertebrae]
    # the same world point has the same label in both: the crop shares the full grid's voxels
    off = np.rint(np.linalg.solve(full.labels.affine, part.labels.affine)[:3, 3]).astype(int)
    assert np.allclose(np.linalg.solve(full.labels.affine, part.labels.affine)[:3, :3], np.eye(3))
    sub = full.labels.array[off[0]:off[0] + part.labels.shape[0], off[1]:off[1] + part.labels.shape[1],
                            off[2]:off[2] + part.labels.shape[2]]
    assert sub.shape == part.labels.shape
    assert np.array_equal(sub, part.labels.array)
    for vid in (28, 27):
        assert (part.labels.array == vid).any()
    assert not (part.labels.array == 30).any()  # L2 is out of view


def test_a_collapsed_disc_hands_its_lordosis_to_the_others():
    """50 % loss at L5-S1 leaves too little height for its 13.5 degree share: it takes what it
    can, the other lumbar discs take the rest, and the total stays as asked."""
    from spinenav.phantom.chain import build_chain

    normal = build_chain(PhantomParams())
    chain = build_chain(PhantomParams(disc_height_loss={"L5-S1": 0.5}))
    assert chain.discs["L5-S1"].sagittal_rad < normal.discs["L5-S1"].sagittal_rad
    assert chain.discs["L4-L5"].sagittal_rad > normal.discs["L4-L5"].sagittal_rad
    total = sum(g.sagittal_rad for n, g in chain.discs.items() if n.startswith("L"))
    assert total == pytest.approx(sum(g.sagittal_rad for n, g in normal.discs.items() if n.startswith("L")))
