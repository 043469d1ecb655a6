"""The stated truth is what the image shows: labels, intensities, pedicles, corridors, canal,
discs and lordosis, measured on the voxels (tolerances in mm, with their reason)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nibabel.affines import apply_affine
from scipy import ndimage

from phantom_measure import (flood_area_mm2, half_voxel_diagonal_mm, plane_samples, run_through,
                             sample_labels, voxel_extent_mm)
from spinenav.phantom import Tissue, label_names

VERTEBRAE = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]


def test_volumes_are_ct_and_labels_on_one_lps_grid(phantom_iso):
    ct, lab = phantom_iso.ct, phantom_iso.labels
    assert ct.array.dtype == np.int16 and lab.array.dtype == np.uint8
    assert ct.modality == "CT" and ct.meta["source_format"] == "phantom" and not ct.is_label
    assert lab.is_label and lab.shape == ct.shape and np.array_equal(lab.affine, ct.affine)
    assert ct.axcodes == ("L", "P", "S")
    assert np.allclose(ct.spacing_mm, 1.0)
    g = phantom_iso.truth.grid
    assert tuple(g.shape) == ct.shape and np.allclose(g.T_world_from_index, ct.affine)


def test_every_expected_label_is_present(phantom_iso):
    present = set(np.unique(phantom_iso.labels.array).tolist())
    names = label_names()
    expected = {names[f"vertebrae_{v}"] for v in VERTEBRAE} | {names["sacrum"], names["spinal_cord"]}
    expected |= {names[f"rib_{s}_{n}"] for s in ("left", "right") for n in (10, 11, 12)}
    expected |= {names[k] for k in ("hip_left", "hip_right", "autochthon_left", "autochthon_right",
                                    "iliopsoas_left", "iliopsoas_right", "liver", "spleen", "kidney_left",
                                    "kidney_right", "aorta", "inferior_vena_cava")}
    expected |= {228, 227, 234}  # L4-L5, L5-S1, T10-T11 discs (200 + id of the vertebra above)
    assert expected <= present, sorted(expected - present)
    assert present <= set(names.values()) | {0}


def _crops(labels):
    """Bounding-box slices of every label id (one pass over the volume)."""
    objs = ndimage.find_objects(labels.array)
    return {i + 1: sl for i, sl in enumerate(objs) if sl is not None}


def test_bones_are_one_piece_each(phantom_iso):
    lab = phantom_iso.labels.array
    crops = _crops(phantom_iso.labels)
    ids = [v.label_id for v in phantom_iso.truth.vertebrae] + [25, 77, 78, 101, 102, 103, 113, 114, 115]
    full = np.ones((3, 3, 3), bool)
    for i in ids:
        mask = lab[crops[i]] == i
        n = ndimage.label(mask, structure=full)[1]
        assert n == 1, f"label {i} has {n} components"


def test_ribs_belong_to_t10_to_t12(phantom_iso):
    """Each rib's head lies next to its own vertebra (the one it articulates with), so rib
    counting names T12 correctly; no other vertebra carries ribs."""
    lab = phantom_iso.labels.array
    crops = _crops(phantom_iso.labels)
    ids = {v.name: v.label_id for v in phantom_iso.truth.vertebrae}
    rib_of = {101: "T10", 102: "T11", 103: "T12", 113: "T10", 114: "T11", 115: "T12"}
    for rib, level in rib_of.items():
        sl = tuple(slice(max(s.start - 5, 0), s.stop + 5) for s in crops[rib])
        near = ndimage.binary_dilation(lab[sl] == rib, iterations=4)
        counts = {n: int(np.count_nonzero(near & (lab[sl] == i))) for n, i in ids.items()}
        assert max(counts, key=counts.get) == level, (rib, counts)
    assert phantom_iso.truth.rib_levels == ["T10", "T11", "T12"]
    # the lowest rib (T12's) is the shortest
    sizes = {r: int(np.count_nonzero(lab[crops[r]] == r)) for r in rib_of}
    assert sizes[103] < sizes[102] < sizes[101]


def test_tissue_intensities_are_plausible(phantom_iso):
    ct = phantom_iso.ct.array
    tis = phantom_iso.tissue.array

    def median(t):
        return float(np.median(ct[tis == t]))

    assert median(Tissue.CORTICAL_BONE) > 700
    assert 100 < median(Tissue.CANCELLOUS_BONE) < 400
    assert 50 < median(Tissue.DISC) < 130
    assert 20 < median(Tissue.MUSCLE) < 80
    assert median(Tissue.SUBCUTANEOUS_FAT) < -50
    assert -20 < median(Tissue.CSF) < 30
    # air outside the body, 2 voxels away from the skin's partial-volume edge
    air = ct[ndimage.binary_erosion(tis == Tissue.AIR, iterations=2)]
    assert np.percentile(air, 99.9) < -900  # 3 noise SDs above air stays below -900
    # a bone mask by HU threshold finds the vertebrae
    bone = ct > 250
    lab = phantom_iso.labels.array
    for v in phantom_iso.truth.vertebrae:
        m = lab == v.label_id
        assert np.count_nonzero(bone & m) > 0.3 * np.count_nonzero(m)


def _pedicle_runs(phantom, name, side):
    v = phantom.truth.vertebra(name)
    p = v.pedicles[side]
    w, h = np.array(p.width_direction_world), np.array(p.height_direction_world)
    step = 0.05
    plane, t = plane_samples(phantom.labels, p.isthmus_centre_world_mm, w, h, half_mm=15.0, step_mm=step)
    mask = plane == v.label_id
    i0 = int(np.argmin(np.abs(t)))
    assert mask[i0, i0], f"{name} {side}: isthmus centre not in the label"

    def run(line):
        lo = i0
        while lo > 0 and line[lo - 1]:
            lo -= 1
        hi = i0
        while hi + 1 < len(line) and line[hi + 1]:
            hi += 1
        return (hi - lo + 1) * step

    return v, p, run(mask[:, i0]), run(mask[i0, :])


@pytest.mark.parametrize("name", VERTEBRAE)
def test_pedicle_width_and_height_measured_on_the_mask(phantom_iso, name):
    """Within one voxel: a nearest-neighbour boundary is off by up to half a voxel each end."""
    for side in ("left", "right"):
        v, p, width, height = _pedicle_runs(phantom_iso, name, side)
        tol_w = voxel_extent_mm(phantom_iso.labels, p.width_direction_world)
        tol_h = voxel_extent_mm(phantom_iso.labels, p.height_direction_world)
        assert width == pytest.approx(p.width_mm, abs=tol_w), (name, side)
        assert height == pytest.approx(p.height_mm, abs=tol_h), (name, side)


@pytest.mark.parametrize("name", ["L3", "L4", "L5"])
def test_pedicle_width_and_height_on_an_anisotropic_grid(phantom_aniso, name):
    for side in ("left", "right"):
        v, p, width, height = _pedicle_runs(phantom_aniso, name, side)
        tol_w = voxel_extent_mm(phantom_aniso.labels, p.width_direction_world)
        tol_h = voxel_extent_mm(phantom_aniso.labels, p.height_direction_world)
        assert tol_h > 2.0  # the height runs across the 2.5 mm slices
        assert width == pytest.approx(p.width_mm, abs=tol_w), (name, side)
        assert height == pytest.approx(p.height_mm, abs=tol_h), (name, side)


def _edt_mm(labels, label_id):
    """Distance (mm) from each voxel centre of the mask to the nearest voxel centre outside
    it, on a crop around the mask; with the crop's T_world_from_index."""
    mask = labels.array == label_id
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 3, 0)
    hi = np.minimum(idx.max(0) + 4, labels.shape)
    crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    edt = ndimage.distance_transform_edt(crop, sampling=labels.spacing_mm)
    T = labels.affine.copy()
    T[:3, 3] = labels.world_from_index(lo)
    return edt, T


def _screw_wall(corridor, radius_mm, *, n=36, step=0.25):
    a = np.array(corridor.axis_world)
    w = np.cross(a, [0.0, 0.0, 1.0])
    w /= np.linalg.norm(w)
    h = np.cross(a, w)
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.cos(phi)[:, None] * w + np.sin(phi)[:, None] * h
    s = np.arange(corridor.entry_exempt_mm, corridor.max_length_mm + 1e-9, step)
    return np.array(corridor.entry_world_mm) + s[:, None, None] * a + radius_mm * ring[None]


@pytest.mark.parametrize("name", VERTEBRAE)
def test_safe_corridor_keeps_its_margin_in_the_mask(phantom_iso, name):
    """Every sampled point of the screw's wall beyond the exempt entry part is at least
    margin - half a voxel diagonal from the outside of the vertebra's mask. (The distance to
    the nearest outside voxel centre never underestimates the distance to the bone surface,
    and trilinear interpolation of it errs by at most half a voxel diagonal.)"""
    v = phantom_iso.truth.vertebra(name)
    edt, T = _edt_mm(phantom_iso.labels, v.label_id)
    hd = half_voxel_diagonal_mm(phantom_iso.labels)
    for side, p in v.pedicles.items():
        c = p.corridor
        wall = _screw_wall(c, c.max_diameter_mm / 2).reshape(-1, 3)
        ijk = apply_affine(np.linalg.inv(T), wall).T
        d = ndimage.map_coordinates(edt, ijk, order=1)
        assert d.min() >= c.margin_mm - hd, (name, side, d.min())


def test_corridor_is_the_largest_on_a_fine_grid(phantom_l4_fine):
    """At 0.5 mm: the stated screw keeps margin - half a voxel diagonal everywhere, and a
    screw 1 mm larger in diameter breaks the margin somewhere (its margin envelope leaves the
    mask: 0.5 mm beyond the surface, more than a 0.5 mm voxel's nearest-neighbour error)."""
    ph = phantom_l4_fine
    v = ph.truth.vertebra("L4")
    assert v.in_field_of_view and not ph.truth.vertebra("L3").in_field_of_view
    edt, T = _edt_mm(ph.labels, v.label_id)
    hd = half_voxel_diagonal_mm(ph.labels)
    for side, p in v.pedicles.items():
        c = p.corridor
        wall = _screw_wall(c, c.max_diameter_mm / 2).reshape(-1, 3)
        d = ndimage.map_coordinates(edt, apply_affine(np.linalg.inv(T), wall).T, order=1)
        assert d.min() >= c.margin_mm - hd, (side, d.min())
        bigger = _screw_wall(c, (c.max_diameter_mm + 1.0) / 2 + c.margin_mm, n=72, step=0.1)
        outside = sample_labels(ph.labels, bigger) != v.label_id
        assert outside.any(), side
        # ... and it fails at the pedicle isthmus, not somewhere near the entry
        s_fail = np.nonzero(outside.any(axis=1))[0] * 0.1 + c.entry_exempt_mm
        entry_to_isthmus = np.linalg.norm(np.subtract(p.isthmus_centre_world_mm, c.entry_world_mm))
        assert np.min(np.abs(s_fail - entry_to_isthmus)) < 1.0


@pytest.mark.parametrize("name", VERTEBRAE)
def test_canal_measured_on_the_image(phantom_iso, name):
    """Canal area by flood fill on the label image's axial plane: within 6 % (the boundary
    of a 1 mm label map is jagged by up to half a voxel); AP and interpedicular runs within
    one voxel."""
    v = phantom_iso.truth.vertebra(name)
    lr, ap = np.array(v.axis_lr_world), np.array(v.axis_ap_world)
    step = 0.1
    plane, t = plane_samples(phantom_iso.labels, v.canal.centre_world_mm, lr, ap, half_mm=25.0, step_mm=step)
    i0 = int(np.argmin(np.abs(t)))
    region = plane != v.label_id
    area = flood_area_mm2(region, (i0, i0), step)
    assert area == pytest.approx(v.canal.area_mm2, rel=0.06), name
    lab, _ = ndimage.label(region)
    canal = lab == lab[i0, i0]
    ipd = canal[:, i0].sum() * step
    # the AP diameter runs along ap through the centre line (0 in lr)
    ap_run = canal[i0, :].sum() * step
    vox = voxel_extent_mm(phantom_iso.labels, lr)
    assert ipd == pytest.approx(v.canal.interpedicular_mm, abs=vox), name
    assert ap_run == pytest.approx(v.canal.ap_diameter_mm, abs=voxel_extent_mm(phantom_iso.labels, ap)), name


def test_disc_heights_measured_on_the_image(phantom_iso):
    for d in phantom_iso.truth.discs:
        lower = phantom_iso.truth.vertebra(d.lower)
        n = np.array(lower.superior_endplate.normal_world)
        c = np.array(lower.superior_endplate.centre_world_mm)
        ap = np.array(lower.axis_ap_world)
        ap = ap - (ap @ n) * n
        ap /= np.linalg.norm(ap)
        y = lower.body_depth_mm / 2 - 3.0
        tol = voxel_extent_mm(phantom_iso.labels, n)
        for offset, stated in ((-y, d.anterior_height_mm), (0.0, d.middle_height_mm), (y, d.posterior_height_mm)):
            mid = c + offset * ap + 0.5 * stated * n
            run = run_through(phantom_iso.labels, d.label_id, mid, n, max_mm=20.0)
            assert run == pytest.approx(stated, abs=tol), (d.name, offset)


def _endplate_normal(labels, vertebra_id, disc_id, centre, radius_mm):
    """Plane fit (PCA) to the vertebra's voxels touching the disc, within `radius_mm` of the
    endplate centre: the unit normal."""
    v = labels.array == vertebra_id
    d = labels.array == disc_id
    touch = v & ndimage.binary_dilation(d)
    pts = labels.world_from_index(np.argwhere(touch))
    pts = pts[np.linalg.norm(pts - centre, axis=1) < radius_mm]
    u, s, vt = np.linalg.svd(pts - pts.mean(0), full_matrices=False)
    n = vt[2]
    return n if n[2] > 0 else -n


def test_lordosis_measured_on_the_image(phantom_iso):
    t = phantom_iso.truth
    l1, s1 = t.vertebra("L1"), t.vertebra("S1")
    n_l1 = _endplate_normal(phantom_iso.labels, l1.label_id, t.disc("T12-L1").label_id,
                            l1.superior_endplate.centre_world_mm, 0.35 * l1.body_depth_mm)
    n_s1 = _endplate_normal(phantom_iso.labels, s1.label_id, t.disc("L5-S1").label_id,
                            s1.superior_endplate.centre_world_mm, 0.35 * s1.body_depth_mm)
    # both normals lie in the sagittal (y-z) plane; lordosis = L1's normal tilted posteriorly
    angle = math.degrees(math.atan2(n_l1[1], n_l1[2]) - math.atan2(n_s1[1], n_s1[2]))
    assert angle == pytest.approx(t.curve.lordosis_l1_s1_deg, abs=1.5)
    assert t.curve.lordosis_l1_s1_deg == pytest.approx(phantom_iso.params.lordosis_deg)
