"""DRR physics: line integrals of analytic objects against their exact chords, options.

The objects are voxelized with a linear partial-volume ramp across the surface; rays that pass
within EDGE_MM of a surface are excluded (there the voxel grid, not the renderer, decides).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from spinenav.fluoro.carm import CarmGeometry, CarmPose, pixel_world_mm, source_world_mm
from spinenav.fluoro.drr import (AttenuationVolume, DrrError, MetalCylinder, Spectrum, cylinder_chord_mm,
                                 hu_to_mu_per_mm, linear_attenuation_per_mm, prepare_attenuation,
                                 render_line_integrals, to_display, transmission)
from spinenav.imaging.volume import Volume

MU = 0.025  # 1/mm, about water at 33 keV
N = 96
SPACING = 1.0
EDGE_MM = 5.0  # rays closer than this to a surface (where they enter/leave it) are not compared
MIN_CHORD_MM = 20.0  # and rays that only clip the object
SUPER = 4  # sub-samples per voxel axis for the partial-volume fractions
REL_TOL = 0.01  # the bar: 1 % of the exact line integral (the default method meets it)
#: Worst relative error allowed per method (measured worst on these objects and poses in brackets;
#: drr.py's docstring reports the same figures). Siddon (nearest voxel) does not meet 1 %.
METHOD_TOL = {"trilinear": REL_TOL,  # [0.84 %]
              "joseph": REL_TOL,  # [0.93 %]
              "siddon": 0.03}  # [2.3 %: nearest voxel across the ray on curved surfaces]
METHODS = tuple(METHOD_TOL)


def _occupancy(inside) -> np.ndarray:
    """Partial-volume fraction of each voxel: the mean of inside() over SUPER^3 sub-samples."""
    ax = (np.arange(N) - (N - 1) / 2) * SPACING
    sub = ((np.arange(SUPER) + 0.5) / SUPER - 0.5) * SPACING
    occ = np.zeros((N, N, N), np.float32)
    y, z = np.meshgrid(ax, ax, indexing="ij")
    for i, x in enumerate(ax):
        acc = np.zeros((N, N), np.float32)
        for a in sub:
            for b in sub:
                for c in sub:
                    acc += inside(x + a, y + b, z + c)
        occ[i] = acc / SUPER ** 3
    return occ


def _att(occupancy: np.ndarray) -> AttenuationVolume:
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -(N - 1) / 2 * SPACING
    return AttenuationVolume(np.ascontiguousarray(MU * occupancy, dtype=np.float32), affine, Spectrum(), MU)


def _rays(pose: CarmPose, g: CarmGeometry):
    uu, vv = np.meshgrid(np.arange(g.cols), np.arange(g.rows))
    pix = pixel_world_mm(g, pose, np.stack([uu, vv], -1))
    src = source_world_mm(g, pose)
    d = pix - src
    return src, d / np.linalg.norm(d, axis=-1, keepdims=True)


def _sphere(R):
    occ = _occupancy(lambda x, y, z: x * x + y * y + z * z <= R * R)

    def exact(src, d):
        b = d @ src
        c = src @ src - R * R
        disc = b * b - c
        chord = 2 * np.sqrt(np.clip(disc, 0, None))
        miss = np.sqrt(np.clip(src @ src - b * b, 0, None))  # distance of the ray from the centre
        return chord, miss < R - EDGE_MM
    return occ, exact


def _box(h):
    occ = _occupancy(lambda x, y, z: (np.abs(x) <= h) & (np.abs(y) <= h) & (np.abs(z) <= h))

    def exact(src, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = (-h - src) / d
            t1 = (h - src) / d
        lo = np.max(np.minimum(t0, t1), axis=-1)
        hi = np.min(np.maximum(t0, t1), axis=-1)
        chord = np.clip(hi - lo, 0, None)
        # keep rays whose entry and exit points are on a face, EDGE_MM from its edges
        ok = chord > 0
        for t in (lo, hi):
            p = src + t[..., None] * d
            inside = np.sort(np.abs(p), axis=-1)[..., 1]  # the two coordinates not on the face
            ok &= inside < h - EDGE_MM
        return chord, ok
    return occ, exact


def _cylinder(R, h):  # axis along world z
    occ = _occupancy(lambda x, y, z: (x * x + y * y <= R * R) & (np.abs(z) <= h))
    cyl = MetalCylinder((0, 0, -h), (0, 0, h), 2 * R)

    def exact(src, d):
        chord = cylinder_chord_mm(src, src + 2000 * d, cyl)
        # entry and exit points, each EDGE_MM away from the rim (where the side meets a cap)
        A = d[..., 0] ** 2 + d[..., 1] ** 2
        B = 2 * (src[0] * d[..., 0] + src[1] * d[..., 1])
        C = src[0] ** 2 + src[1] ** 2 - R * R
        sq = np.sqrt(np.clip(B * B - 4 * A * C, 0, None))
        t0, t1 = (-B - sq) / (2 * A), (-B + sq) / (2 * A)
        ta, tb = np.sort(np.stack([(-h - src[2]) / d[..., 2], (h - src[2]) / d[..., 2]]), axis=0)
        r_min = np.abs(src[0] * d[..., 1] - src[1] * d[..., 0]) / np.sqrt(A)  # closest approach to the axis
        ok = (chord > 0) & (r_min < R - EDGE_MM)  # away from the silhouette's long edges
        for t in (np.maximum(t0, ta), np.minimum(t1, tb)):
            p = src + t[..., None] * d
            r = np.hypot(p[..., 0], p[..., 1])
            ok &= np.minimum(R - r, h - np.abs(p[..., 2])) > -1e-6  # on the surface
            ok &= np.maximum(R - r, h - np.abs(p[..., 2])) > EDGE_MM  # and far from the rim
        return chord, ok
    return occ, exact


@pytest.fixture(scope="module")
def objects():
    return {"box": _box(25.0), "sphere": _sphere(30.0), "cylinder": _cylinder(22.0, 30.0)}


OBJECT_NAMES = ("box", "sphere", "cylinder")
POSES = [CarmPose(math.pi, 0.0), CarmPose(math.radians(63.0), math.radians(-21.0)),
         CarmPose(math.radians(-140.0), math.radians(34.0))]


@pytest.fixture(scope="module")
def geometry():
    return CarmGeometry(sdd_mm=1000.0, sod_mm=700.0, rows=40, cols=40, pixel_spacing_mm=(3.0, 3.0))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", OBJECT_NAMES)
def test_line_integrals_match_exact_chords(name, method, geometry, objects):
    occ, exact = objects[name]
    att = _att(occ)
    imgs = render_line_integrals(att, geometry, POSES, method=method)
    for pose, img in zip(POSES, imgs):
        src, d = _rays(pose, geometry)
        chord, ok = exact(src, d)
        ok &= chord > MIN_CHORD_MM
        assert ok.sum() > 30, "too few rays away from the edges to test"
        rel = np.abs(img[ok] / (MU * chord[ok]) - 1.0)
        print(f"{name}/{method}: worst {rel.max():.4f} median {np.median(rel):.5f} over {ok.sum()} rays")
        assert rel.max() < METHOD_TOL[method], f"{name}/{method}: worst {rel.max():.4f}"
        assert np.median(rel) < 0.006, f"{name}/{method}: median {np.median(rel):.4f}"


def test_metal_chord_against_brute_force():
    rng = np.random.default_rng(3)
    cyl = MetalCylinder((10.0, -5.0, 3.0), (30.0, 25.0, -12.0), 6.5)
    src = np.array([0.0, -600.0, 0.0])
    pix = rng.uniform([-10, 300, -40], [60, 400, 20], size=(200, 3))
    chord = cylinder_chord_mm(src, pix, cyl)
    t = (np.arange(40000) + 0.5) / 40000
    a, b = np.array(cyl.start_world_mm), np.array(cyl.end_world_mm)
    w = (b - a) / np.linalg.norm(b - a)
    for p, c in zip(pix[:40], chord[:40]):
        pts = src + t[:, None] * (p - src) - a
        along = pts @ w
        radial = np.linalg.norm(pts - along[:, None] * w, axis=1)
        inside = (along >= 0) & (along <= np.linalg.norm(b - a)) & (radial <= 3.25)
        assert c == pytest.approx(inside.mean() * np.linalg.norm(p - src), abs=0.05)
    assert (chord > 0).sum() > 10


def test_water_box_in_hu_gives_water_attenuation(geometry):
    ct = Volume(np.zeros((40, 40, 40), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))  # 0 HU = water
    att = prepare_attenuation(ct, spectrum=Spectrum(kvp=90.0), crop=False)
    assert att.mu_water_per_mm == pytest.approx(linear_attenuation_per_mm("water", 30.0))
    g = CarmGeometry(sdd_mm=1000.0, sod_mm=500.0, rows=1, cols=1, pixel_spacing_mm=(0.1, 0.1))
    img = render_line_integrals(att, g, CarmPose(math.pi, 0.0, (19.5, 19.5, 19.5)))
    assert img[0, 0] == pytest.approx(40.0 * att.mu_water_per_mm, rel=1e-5)


def test_bilinear_hu_model():
    sp = Spectrum(kvp=100.0)
    mu = hu_to_mu_per_mm([-1000, 0, 1000, 3000], sp)
    assert mu[0] == 0.0 and mu[1] == pytest.approx(linear_attenuation_per_mm("water", sp.kev), rel=1e-6)
    assert mu[1] < mu[2] < mu[3]
    # bone is relatively denser at the lower fluoroscopy energy than at the CT's 70 keV
    assert mu[2] / mu[1] > 2.0
    with pytest.raises(DrrError, match="kvp"):
        Spectrum(kvp=20.0)


def test_batch_region_and_noise(geometry, objects):
    occ, _ = objects["sphere"]
    att = _att(occ)
    batch = render_line_integrals(att, geometry, POSES)
    for pose, img in zip(POSES, batch):
        assert_allclose(render_line_integrals(att, geometry, pose), img, rtol=1e-6)
    part = render_line_integrals(att, geometry, POSES[1], region=(5, 10, 30, 22))
    assert part.shape == (12, 25)
    assert_allclose(part, batch[1][10:22, 5:30], rtol=1e-6)
    with pytest.raises(DrrError, match="region"):
        render_line_integrals(att, geometry, POSES[0], region=(0, 0, 41, 10))
    I1 = transmission(batch[0], photons_per_pixel=1e4, blur_sigma_px=1.0, seed=7)
    I2 = transmission(batch[0], photons_per_pixel=1e4, blur_sigma_px=1.0, seed=7)
    assert_allclose(I1, I2)
    clean = transmission(batch[0])
    assert_allclose(clean, np.exp(-batch[0]), rtol=1e-6)
    # Poisson: relative noise ~ 1/sqrt(N I) in the flat background
    noisy = transmission(np.zeros((200, 200)), photons_per_pixel=1e4, seed=1)
    assert noisy.std() == pytest.approx(0.01, rel=0.1)
    with pytest.raises(DrrError, match="seed"):
        transmission(batch[0], photons_per_pixel=100.0)
    d = to_display(batch[0])
    assert d.dtype == np.uint8 and d.max() == 255


def test_label_subset_renders_only_that_label():
    arr = np.full((30, 30, 30), -1000, np.int16)
    arr[5:12, 10:20, 10:20] = 1000
    arr[18:25, 10:20, 10:20] = 1000
    labels = np.zeros_like(arr, dtype=np.uint8)
    labels[5:12, 10:20, 10:20] = 3
    labels[18:25, 10:20, 10:20] = 4
    affine = np.eye(4)
    ct, lab = Volume(arr, affine), Volume(labels, affine, modality="SEG", is_label=True)
    g = CarmGeometry(sdd_mm=1000.0, sod_mm=900.0, rows=30, cols=30, pixel_spacing_mm=(1.1, 1.1))
    pose = CarmPose(math.pi, 0.0, (14.5, 14.5, 14.5))  # beam along +y: x is the image's u axis
    full = render_line_integrals(prepare_attenuation(ct), g, pose)
    only3 = render_line_integrals(prepare_attenuation(ct, labels=lab, keep_labels=[3]), g, pose)
    # the other block's pixels are empty, this block's unchanged
    cols3 = only3.max(axis=0) > 0
    assert cols3.sum() > 0 and (full.max(axis=0) > 0).sum() > cols3.sum()
    assert_allclose(only3[:, cols3], full[:, cols3], rtol=1e-5)
    with pytest.raises(DrrError, match="none of the labels"):
        prepare_attenuation(ct, labels=lab, keep_labels=[9])


def test_split_at_hu_adds_up_and_caps():
    """Soft tissue (capped at 100 HU) + the bone above it = the whole; neither part negative."""
    from spinenav.fluoro.drr import AttenuationVolume, Spectrum, hu_to_mu_per_mm, prepare_attenuation, split_at_hu
    from spinenav.imaging.volume import Volume

    hu = np.full((20, 20, 20), -1000.0, np.float32)
    hu[5:15, 5:15, 5:15] = 40.0
    hu[8:12, 8:12, 8:12] = 900.0
    att = prepare_attenuation(Volume(hu, np.eye(4)), spectrum=Spectrum(kvp=100.0))
    below, above = split_at_hu(att, 100.0)
    assert isinstance(below, AttenuationVolume) and below.mu_per_mm is not att.mu_per_mm
    np.testing.assert_allclose(below.mu_per_mm + above.mu_per_mm, att.mu_per_mm, rtol=1e-6)
    cap = float(hu_to_mu_per_mm(np.array([100.0], np.float32), att.spectrum)[0])
    assert float(below.mu_per_mm.max()) == pytest.approx(cap) and float(above.mu_per_mm.min()) >= 0.0
    assert float(above.mu_per_mm.max()) > 0.0 and np.all(above.mu_per_mm[att.mu_per_mm < cap] == 0.0)
