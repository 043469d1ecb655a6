"""The fast paths of the Joseph kernel against a plain per-ray Joseph reference (numpy, float64).

The sweep in ``drr.py`` trims each detector line per plane to the rays that can touch a
non-zero voxel, samples without bounds tests, keeps a padded (and, for sweeps along k, a
transposed) copy of the volume on the AttenuationVolume, and hands lines whose rays do not
cross the whole volume to a per-ray kernel. Each of these must give Joseph's integral exactly
(up to float32 rounding), whatever the pose, spacing or orientation of the grid.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose

from spinenav.fluoro.carm import CarmGeometry, CarmPose, pixel_world_mm, source_world_mm
from spinenav.fluoro import drr
from spinenav.fluoro.drr import AttenuationVolume, Spectrum, render_line_integrals


def joseph_reference(att: AttenuationVolume, g: CarmGeometry, pose: CarmPose) -> np.ndarray:
    """Joseph's method ray by ray, as documented: sweep the index axis the central ray runs
    along most; per plane strictly between source and pixel and within [-0.5, n - 0.5] of the
    other two axes, the bilinear sample of the zero-extended plane, times the ray length per plane."""
    mu = att.mu_per_mm.astype(np.float64)
    T = np.linalg.inv(att.affine)
    uu, vv = np.meshgrid(np.arange(g.cols), np.arange(g.rows))
    pix_w = pixel_world_mm(g, pose, np.stack([uu, vv], -1))
    src_w = source_world_mm(g, pose)
    to_idx = lambda p: p @ T[:3, :3].T + T[:3, 3]  # noqa: E731
    src, pix = to_idx(src_w), to_idx(pix_w)
    centre = to_idx(pixel_world_mm(g, pose, np.array([[(g.cols - 1) / 2, (g.rows - 1) / 2]])))[0]
    a = int(np.argmax(np.abs(centre - src)))
    b, c = (x for x in range(3) if x != a)
    vol = np.pad(np.moveaxis(mu, (a, b, c), (0, 1, 2)), ((0, 0), (1, 1), (1, 1)))
    na, nb, nc = (mu.shape[x] for x in (a, b, c))
    out = np.zeros((g.rows, g.cols))
    for r in range(g.rows):
        for col in range(g.cols):
            d = pix[r, col] - src
            if abs(d[a]) < 1e-9:
                continue
            lo, hi = sorted((src[a], pix[r, col, a]))
            q = np.arange(max(math.ceil(lo), 0), min(math.floor(hi), na - 1) + 1)
            t = (q - src[a]) / d[a]
            y, z = src[b] + t * d[b], src[c] + t * d[c]
            keep = (y >= -0.5) & (y <= nb - 0.5) & (z >= -0.5) & (z <= nc - 0.5)
            q, y, z = q[keep], y[keep] + 1.0, z[keep] + 1.0
            j, k = np.floor(y).astype(int), np.floor(z).astype(int)
            fy, fz = y - j, z - k
            s = ((1 - fy) * ((1 - fz) * vol[q, j, k] + fz * vol[q, j, k + 1])
                 + fy * ((1 - fz) * vol[q, j + 1, k] + fz * vol[q, j + 1, k + 1]))
            out[r, col] = s.sum() * np.linalg.norm(pix_w[r, col] - src_w) / abs(d[a])
    return out


@pytest.fixture(scope="module")
def att():
    """Random attenuation in an off-centre blob with a gap (empty planes along every axis), an
    anisotropic grid rotated out of the world axes."""
    rng = np.random.default_rng(11)
    shape = (34, 30, 26)
    mu = rng.uniform(0.01, 0.05, shape).astype(np.float32)
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    blob = ((ii - 20) / 12.0) ** 2 + ((jj - 13) / 11.0) ** 2 + ((kk - 12) / 10.0) ** 2 <= 1.0
    mu[~blob] = 0.0
    mu[18:20] = 0.0  # empty planes along i
    mu[:, 9:11] = 0.0  # along j
    mu[:, :, 15] = 0.0  # along k
    c, s = math.cos(0.3), math.sin(0.3)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = R @ np.diag([1.0, 0.8, 1.7])
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) - 1) / 2 + np.array([3.0, -2.0, 1.0])
    return AttenuationVolume(np.ascontiguousarray(mu), affine, Spectrum(), 0.025)


GEOM = CarmGeometry(sdd_mm=400.0, sod_mm=250.0, rows=21, cols=23, pixel_spacing_mm=(2.4, 2.1))
POSES = {
    "ap-ish": CarmPose(math.radians(170.0), math.radians(5.0)),
    "lateral-ish": CarmPose(math.radians(95.0), math.radians(-8.0)),
    "axial (sweeps k)": CarmPose(math.radians(20.0), math.radians(75.0)),
    "oblique 45": CarmPose(math.radians(135.0), math.radians(35.0)),
    "source inside the volume": CarmPose(math.radians(170.0), math.radians(5.0), (0.0, 8.0, 0.0)),
    "ap, fine pixels (16-ray blocks)": CarmPose(math.radians(180.0), 0.0),
}
#: Pixels 0.35 mm at the detector (0.22 mm at the isocentre): 16 neighbouring rays of a line
#: span < 15 voxels, so the sweep's 16-ray vector blocks are taken wherever they share rows.
FINE = CarmGeometry(sdd_mm=400.0, sod_mm=250.0, rows=48, cols=40, pixel_spacing_mm=(0.8, 0.35))


@pytest.mark.parametrize("name", list(POSES))
def test_sweep_matches_per_ray_reference(att, name):
    pose = POSES[name]
    geom = GEOM
    if name == "source inside the volume":  # source 12 mm from the isocentre: inside the blob's extent
        geom = CarmGeometry(sdd_mm=60.0, sod_mm=12.0, rows=21, cols=23, pixel_spacing_mm=(8.0, 7.0))
    elif "fine" in name:
        geom = FINE
    ref = joseph_reference(att, geom, pose)
    img = render_line_integrals(att, geom, pose)
    assert (ref > 0).mean() > 0.3, "the pose misses the object: nothing tested"
    assert_allclose(img, ref, rtol=2e-4, atol=2e-5 * ref.max())
    if name == "axial (sweeps k)":
        assert "padded_k" in att._padded  # the transposed copy for sweeps along k was used


def test_moved_affine_reuses_the_caches_and_stays_exact(att):
    """Registration moves a vertebra by replacing ``affine``: the padded copies and boxes depend
    on the voxels only, so the copy shares them and still renders exactly."""
    render_line_integrals(att, GEOM, POSES["ap-ish"])
    T = np.eye(4)
    T[:3, :3] = np.array([[math.cos(0.2), 0.0, math.sin(0.2)], [0.0, 1.0, 0.0], [-math.sin(0.2), 0.0, math.cos(0.2)]])
    T[:3, 3] = (4.0, -3.0, 2.0)
    moved = replace(att, affine=T @ att.affine)
    assert moved._padded is att._padded
    for pose in (POSES["ap-ish"], POSES["lateral-ish"]):
        assert_allclose(render_line_integrals(moved, GEOM, pose), joseph_reference(moved, GEOM, pose),
                        rtol=2e-4, atol=2e-5)


@numba.njit
def _try_block(flat, b0, rb, c0, rc, acc, q, base, s_b):
    return drr._block16(flat, b0, rb, c0, rc, acc, 0, np.float32(q), base, s_b)


@pytest.mark.skipif(not drr._AVX512, reason="the 16-ray vector block needs AVX-512 (elsewhere: gathers only)")
def test_block16_samples_like_the_scalar_loop():
    """The vector block's bilinear samples equal the scalar formula; it declines (and leaves
    ``acc`` alone) when the 16 rays do not share their voxel rows or span > 15 voxels."""
    rng = np.random.default_rng(5)
    plane = rng.uniform(0.0, 1.0, (6, 40)).astype(np.float32)  # one padded plane, rows of 40
    flat = np.concatenate([plane.ravel(), np.zeros(drr._SLACK, np.float32)])
    q = 3.0
    b0 = np.full(16, 2.3, np.float32) - np.float32(q) * np.float32(0.01)
    rb = np.full(16, 0.01, np.float32)
    c0 = np.linspace(4.1, 17.6, 16).astype(np.float32)
    rc = np.zeros(16, np.float32)
    acc = np.ones(16, np.float32)
    assert _try_block(flat, b0, rb, c0, rc, acc, q, 0, 40)
    y, z = b0 + np.float32(q) * rb, c0 + np.float32(q) * rc
    j, k = y.astype(int), z.astype(int)
    fy, fz = y - j, z - k
    v = [plane[j + dj, k + dk] for dj in (0, 1) for dk in (0, 1)]
    lo, hi = v[0] + (v[1] - v[0]) * fz, v[2] + (v[3] - v[2]) * fz
    assert_allclose(acc, 1.0 + lo + (hi - lo) * fy, rtol=1e-6)
    for bad_b0, bad_c0 in ((b0 + np.linspace(0, 1.5, 16).astype(np.float32), c0),  # rows differ
                           (b0, np.linspace(4.1, 21.6, 16).astype(np.float32))):  # spans 17 voxels
        before = acc.copy()
        assert not _try_block(flat, bad_b0, rb, bad_c0, rc, acc, q, 0, 40)
        assert_allclose(acc, before)
