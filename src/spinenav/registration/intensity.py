"""Intensity-based 2D/3D rigid registration of one vertebra to one or two C-arm shots.

Model
-----
The vertebra's CT (its label dilated by ``margin_mm``, everything else vacuum) moves rigidly:
``T_world_from_ct`` maps the CT's LPS mm to the frame the shots' C-arm poses are expressed in
(the "world"; before registration, the CT frame itself or a plan-based guess). A moved vertebra
is rendered by giving its :class:`~spinenav.fluoro.drr.AttenuationVolume` the affine
``T_world_from_ct @ att.affine`` (the renderer maps rays through ``inv(att.affine)``; the test
``test_moved_affine_equals_inverse_camera_motion`` checks this against moving the camera).
``T_carm_from_ct = T_camera_from_world(shot) @ T_world_from_ct`` is the pose in the first
shot's C-arm frame.

Parameters: 6 numbers about the vertebra's centroid, in the first shot's camera axes (u, v,
beam): a rotation vector (rad) and a translation (mm). The beam-axis translation is the
single-view depth, the weakly determined direction of a monoplane registration
(clinical-reference.md 4.3, [BIFULCO10]: depth ~10 mm from one view).

Optimisation (multi-resolution)
-------------------------------
1. Coarse: the shots binned to ``coarse_pixel_mm`` (2.4 mm at the isocentre), collimated to
   the vertebra's projection + the search margin (the renderer's ``region``); global CMA-ES
   (``cma``; sigma 0.3 of the box) within +-``search_mm`` / +-``search_rad`` (default 20 mm /
   20 deg, covering the required 15 mm / 15 deg capture range).
2. Fine: binned to ``fine_pixel_mm`` (0.8 mm; never upsampled), region re-centred on the
   estimate; a narrow CMA-ES, then Powell (scipy) for the last fraction of a millimetre.
3. When the GC is still below the threshold: ``restarts`` more global searches (other seed,
   population 16), keeping the best.
Similarity: gradient correlation, mean over the shots (:mod:`spinenav.registration.similarity`).
Monoplane: a weak quadratic prior on the depth (beam-axis) translation keeps it near the start.

Quality
-------
``uncertainty``: for each parameter, the half-width of the region where the GC stays within
``GC_NOISE`` = 0.01 of its peak, from the full 6x6 Hessian (central differences, +-1 mm /
+-1 deg; ``sqrt(2 GC_NOISE inv(H)_ii)``, so correlated directions such as monoplane depth vs
tilt are not hidden): mm and deg, in the first shot's (u, v, beam) axes.
``ok`` is False, with the reason, when: the best GC is below ``gc_threshold`` (calibrated on
deliberately failed cases: ``benchmarks/bench_register.py``), the solution sits at the edge
of the search box, the vertebra's projection is mostly outside the valid image (cut off by
the detector or by collimation), or (biplane) one view disagrees.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.ndimage import binary_dilation, generate_binary_structure, uniform_filter
from scipy.spatial.transform import Rotation
from skimage.transform import resize

from spinenav.errors import SpinenavError
from spinenav.fluoro.carm import CarmGeometry, CarmPose, T_camera_from_world, project_points, projection_matrix
from spinenav.fluoro.drr import AttenuationVolume, Spectrum, prepare_attenuation, render_line_integrals
from spinenav.imaging.volume import Volume
from spinenav.registration.similarity import gradient_correlation, image_gradients

#: GC below this is reported as a failed registration. Calibrated on the failure set of
#: benchmarks/bench_register.py (phantom, wrong level / far start / cut off; see its output).
DEFAULT_GC_THRESHOLD = 0.45
#: The GC drop taken as "indistinguishable" when turning the peak's curvature into an uncertainty.
GC_NOISE = 0.01


class RegistrationError(SpinenavError, ValueError):
    """Bad input to a 2D/3D registration (missing level, shot without geometry, ...)."""


@dataclass(frozen=True, eq=False)
class VertebraVolume:
    """One vertebra ready for 2D/3D registration.

    Attributes
    ----------
    level : str
    attenuation : AttenuationVolume
        The masked CT (label dilated by the margin), affine T_ct_from_index.
    centroid_ct_mm : (3,) ndarray
        Centroid of the vertebra's label, CT LPS mm (the centre of rotation).
    points_ct_mm : (N, 3) ndarray
        Points of the vertebra (voxel centres, subsampled) for the mTRE, CT mm.
    excess : AttenuationVolume or None
        What moves when the vertebra moves inside the patient (:mod:`.incontext`): the
        attenuation above the surrounding soft tissue's (``soft_tissue_hu``) on the same grid,
        the margin without other labelled structures (a neighbour's facet, a rib head).
    soft_tissue_hu : float
        Median HU of the soft tissue in the vertebra's margin (what fills its place when it moves).
    partial : str
        Non-empty when the CT holds only part of the vertebra (its label reaches the edge of the
        CT's field of view): says where. A registration of it is not trusted (``ok`` False).
    """

    level: str
    attenuation: AttenuationVolume
    centroid_ct_mm: NDArray[np.float64]
    points_ct_mm: NDArray[np.float64]
    excess: AttenuationVolume | None = None
    soft_tissue_hu: float = math.nan
    partial: str = ""


def prepare_vertebra(ct: Volume, labels: Volume, level: str, *, margin_mm: float = 3.0,
                     spectrum: Spectrum = Spectrum(), label_id: int | None = None,
                     n_points: int = 2000) -> VertebraVolume:
    """Mask one vertebra (label ``level``, TotalSegmentator ids) out of the CT for registration.

    Raises
    ------
    RegistrationError
        Unknown level, level absent from the label map, or label map on another grid.
    """
    from spinenav.anatomy.labels import ts_id

    if labels.shape != ct.shape or not np.allclose(labels.affine, ct.affine, atol=1e-4):
        raise RegistrationError(f"label map grid {labels.shape} does not match the CT grid {ct.shape}")
    if label_id is None:
        try:
            label_id = ts_id(level)
        except (ValueError, KeyError) as exc:
            raise RegistrationError(f"unknown vertebral level {level!r}") from exc
    lab = np.asarray(labels.array)
    mask = np.ascontiguousarray(lab == label_id)
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise RegistrationError(f"level {level} (label {label_id}) is not in the label map")
    spacing = np.linalg.norm(ct.affine[:3, :3], axis=0)
    it = max(int(round(margin_mm / float(spacing.min()))), 0)
    keep = mask
    if it:  # dilated within the label's box (+ the margin): not over the whole CT
        lo = np.maximum(idx.min(axis=0) - it - 1, 0)
        hi = np.minimum(idx.max(axis=0) + it + 2, np.array(mask.shape))
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        keep = np.zeros_like(mask)
        keep[box] = binary_dilation(mask[box], generate_binary_structure(3, 1), iterations=it)
    keep_vol = Volume(keep.view(np.uint8), ct.affine, is_label=True)
    att = prepare_attenuation(ct, spectrum=spectrum, labels=keep_vol, keep_labels=[1])
    centroid = ct.affine[:3, :3] @ idx.mean(axis=0) + ct.affine[:3, 3]
    rng = np.random.default_rng(0)
    sel = idx[rng.choice(len(idx), size=min(n_points, len(idx)), replace=False)]
    pts = sel @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    excess, soft_hu = _excess_over_soft_tissue(ct, lab, keep, mask, att, spectrum)
    return VertebraVolume(level, att, centroid, pts, excess, soft_hu, _cut_by_field_of_view(lab, idx, label_id, spacing))


#: A vertebra whose label reaches the CT's edge is taken as cut off when its extent along that
#: axis is below this fraction of the median extent of the vertebrae the CT holds whole.
PARTIAL_EXTENT_FRACTION = 0.8


def _cut_by_field_of_view(lab: NDArray, idx: NDArray, label_id: int, spacing: NDArray[np.float64]) -> str:
    """Where the CT cuts the vertebra off ('' when it holds it whole, or nearly: a label that
    touches the edge but is as long along that axis as the other vertebrae)."""
    from scipy.ndimage import find_objects

    from spinenav.anatomy.labels import is_vertebra_id

    shape = np.array(lab.shape)
    axes = [a for a in range(3) if idx[:, a].min() == 0 or idx[:, a].max() == shape[a] - 1]
    if not axes:
        return ""
    boxes = [(i + 1, b) for i, b in enumerate(find_objects(lab)) if b is not None and is_vertebra_id(i + 1)
             and i + 1 != label_id]
    whole = [b for _, b in boxes if all(b[a].start > 0 and b[a].stop < shape[a] for a in range(3))]
    out = []
    for a in axes:
        ext = (idx[:, a].max() - idx[:, a].min() + 1) * spacing[a]
        ref = float(np.median([(b[a].stop - b[a].start) * spacing[a] for b in whole])) if whole else math.nan
        if not ref > 0 or ext < PARTIAL_EXTENT_FRACTION * ref:
            side = "first" if idx[:, a].min() == 0 else "last"
            out.append(f"its label reaches the CT's {side} plane along {'ijk'[a]}, {ext:.0f} mm long there"
                       + (f" vs {ref:.0f} mm for the vertebrae held whole" if ref > 0 else ""))
    return "; ".join(out)


#: The soft tissue around a vertebra: margin voxels in this HU range (fat to muscle and disc)
#: give the level that fills the vertebra's place when it moves (their median).
SOFT_TISSUE_HU_RANGE = (-150.0, 150.0)


def _excess_over_soft_tissue(ct: Volume, lab: NDArray, keep: NDArray[np.bool_], mask: NDArray[np.bool_],
                             att: AttenuationVolume, spectrum: Spectrum) -> tuple[AttenuationVolume | None, float]:
    """The vertebra's attenuation above the soft tissue around it (clipped at 0), on ``att``'s
    grid, the margin without other labels. A vertebra moving inside the patient displaces soft
    tissue, not vacuum: rendering this excess over a background in which the vertebra's place
    holds soft tissue adds no edge at the margin's outer surface (the masked CT's DRR has one
    there, at whatever pose the margin is). None when the margin holds no soft tissue."""
    from spinenav.fluoro.drr import hu_to_mu_per_mm

    lo = np.rint(np.linalg.solve(ct.affine, att.affine[:, 3])[:3]).astype(int)
    box = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, att.mu_per_mm.shape))
    hu = np.asarray(ct.array)[box]
    shell = keep[box] & ~mask[box] & (lab[box] == 0)
    soft = hu[shell & (hu >= SOFT_TISSUE_HU_RANGE[0]) & (hu <= SOFT_TISSUE_HU_RANGE[1])]
    if soft.size < 50:
        return None, math.nan
    soft_hu = float(np.median(soft))
    mu_soft = float(hu_to_mu_per_mm(np.array([soft_hu], np.float32), spectrum)[0])
    own = mask[box] | shell
    mu = np.where(own, np.maximum(att.mu_per_mm - np.float32(mu_soft), np.float32(0.0)), np.float32(0.0))
    return AttenuationVolume(np.ascontiguousarray(mu, dtype=np.float32), att.affine.copy(), att.spectrum,
                             att.mu_water_per_mm, att.notes + (f"excess over soft tissue at {soft_hu:.0f} HU",)), \
        soft_hu


@dataclass(frozen=True, eq=False)
class ShotView:
    """A shot as the registration sees it: attenuation-polarity image (bone high) + geometry,
    and optionally the pixels to leave out of the comparison (``ignore``: e.g. an instrument
    that is not in the CT, found by :func:`spinenav.registration.incontext.subtract_background`)."""

    image: NDArray[np.float32]
    geometry: CarmGeometry
    pose: CarmPose
    ignore: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        im = np.asarray(self.image, dtype=np.float32)
        if im.shape != (self.geometry.rows, self.geometry.cols):
            raise RegistrationError(f"shot image {im.shape} does not match its geometry "
                                    f"{self.geometry.rows}x{self.geometry.cols}")
        if not np.all(np.isfinite(im)):
            raise RegistrationError(f"shot image has {int(np.sum(~np.isfinite(im)))} non-finite pixels (NaN or "
                                    "infinite: e.g. the log of a zero transmission); clip the image first")
        object.__setattr__(self, "image", im)
        if self.ignore is not None:
            ign = np.asarray(self.ignore, dtype=bool)
            if ign.shape != im.shape:
                raise RegistrationError(f"ignore mask {ign.shape} does not match the shot {im.shape}")
            object.__setattr__(self, "ignore", ign if ign.any() else None)


def moved_attenuation(att: AttenuationVolume, T_world_from_ct: NDArray[np.float64]) -> AttenuationVolume:
    """The attenuation volume carried rigidly by ``T_world_from_ct`` (render it at the shot's pose)."""
    return replace(att, affine=np.asarray(T_world_from_ct, dtype=np.float64) @ att.affine)


def pose_from_params(params: ArrayLike, T_init_world_from_ct: NDArray[np.float64], centre_world_mm: ArrayLike,
                     R_axes_from_world: NDArray[np.float64]) -> NDArray[np.float64]:
    """T_world_from_ct for parameters (rotation vector rad, translation mm) in the given axes,
    rotating about ``centre_world_mm`` (the initial centroid) after ``T_init_world_from_ct``."""
    p = np.asarray(params, dtype=np.float64)
    Ra = R_axes_from_world
    R = Ra.T @ Rotation.from_rotvec(p[:3]).as_matrix() @ Ra
    t = Ra.T @ p[3:]
    c = np.asarray(centre_world_mm, dtype=np.float64)
    D = np.eye(4)
    D[:3, :3] = R
    D[:3, 3] = c + t - R @ c
    return D @ T_init_world_from_ct


def _valid_mask(image: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Pixels carrying an image (not a flat collimated / blanked border): local 5x5 variance > 0."""
    im = image.astype(np.float64)
    m = uniform_filter(im, 5, mode="nearest")
    v = uniform_filter(im * im, 5, mode="nearest") - m * m
    scale = max(float(np.var(im)), 1e-12)
    return v > 1e-6 * scale


@dataclass
class _Level:
    geometry: CarmGeometry
    pose: CarmPose
    fixed: NDArray[np.float32]
    ignore: NDArray[np.bool_] | None = None
    region: tuple[int, int, int, int] = (0, 0, 1, 1)
    grads: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
    keep: NDArray[np.bool_] | None = None  # compared pixels of the region (None: all)

    def set_region(self, region: tuple[int, int, int, int]) -> None:
        self.region = region
        u0, v0, u1, v1 = region
        self.grads = image_gradients(self.fixed[v0:v1, u0:u1])
        self.keep = None
        if self.ignore is not None and self.ignore[v0:v1, u0:u1].any():
            # the shot's gradients (1 px smoothing, central differences) reach 2 px beyond a pixel;
            # a region mostly ignored compares nothing (keep all False) rather than the ignored pixels
            keep = ~binary_dilation(self.ignore[v0:v1, u0:u1], iterations=2)
            self.keep = keep if keep.sum() >= 0.25 * keep.size else np.zeros_like(keep)


def _compare(drr: NDArray[np.float32], lv: _Level) -> float:
    """GC of a DRR of ``lv``'s region with its shot (its ignored pixels left out; 0 when nothing is left)."""
    u0, v0, u1, v1 = lv.region
    if lv.keep is not None and not lv.keep.any():
        return 0.0
    return gradient_correlation(drr, lv.fixed[v0:v1, u0:u1], lv.keep, b_gradients=lv.grads, a_sigma_px=0.5)


def _downsample(view: ShotView, factor: float) -> _Level:
    if factor <= 1.0:
        return _Level(view.geometry, view.pose, view.image, view.ignore)
    rows = max(int(round(view.geometry.rows / factor)), 16)
    cols = max(int(round(view.geometry.cols / factor)), 16)
    g = view.geometry.with_size(rows, cols)
    img = resize(view.image, (rows, cols), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    ign = None
    if view.ignore is not None:  # a binned pixel touching an ignored one is ignored
        ign = resize(view.ignore.astype(np.float32), (rows, cols), order=1, anti_aliasing=False) > 0.01
    return _Level(g, view.pose, img, ign)


def _box_corners(points: NDArray[np.float64]) -> NDArray[np.float64]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _region_for(level: _Level, points_world_mm: NDArray[np.float64], margin_mm: float) -> tuple[int, int, int, int]:
    """Detector box of the projection of ``points`` + ``margin_mm`` (at the isocentre), clipped."""
    P = projection_matrix(level.geometry, level.pose)
    uv = project_points(P, _box_corners(points_world_mm))
    if not np.all(np.isfinite(uv)):
        raise RegistrationError("the vertebra is behind the X-ray source in this geometry")
    pad_px = margin_mm * level.geometry.magnification / min(level.geometry.pixel_spacing_mm)
    u0 = int(max(math.floor(uv[:, 0].min() - pad_px), 0))
    v0 = int(max(math.floor(uv[:, 1].min() - pad_px), 0))
    u1 = int(min(math.ceil(uv[:, 0].max() + pad_px) + 1, level.geometry.cols))
    v1 = int(min(math.ceil(uv[:, 1].max() + pad_px) + 1, level.geometry.rows))
    if u1 - u0 < 8 or v1 - v0 < 8:
        raise RegistrationError("the vertebra does not project onto the detector (check the initial pose)")
    return u0, v0, u1, v1


@dataclass(frozen=True)
class IntensityResult:
    """Result of :func:`register_vertebra`.

    Attributes
    ----------
    level : str
    T_world_from_ct : (4, 4) ndarray
        The vertebra's pose: CT LPS mm -> the shots' world frame.
    T_carm_from_ct : (4, 4) ndarray
        The same in the first shot's C-arm camera frame (source origin, z = beam), mm.
    similarity : float
        Gradient correlation at the result (mean over the shots), full resolution.
    similarity_per_shot : tuple of float
    uncertainty : dict
        (``{'not_computed': True}`` with ``compute_uncertainty=False``.)
        Peak half-widths per parameter (first shot's axes u, v, beam): ``rot_deg`` (3,),
        ``trans_mm`` (3,); inf where the similarity is flat.
    coverage : float
        Fraction of the vertebra's points that project onto valid image pixels (min over shots).
    ok : bool
    reason : str
    n_evaluations : int
    seconds : float
    seed : int
    """

    level: str
    T_world_from_ct: NDArray[np.float64]
    T_carm_from_ct: NDArray[np.float64]
    similarity: float
    similarity_per_shot: tuple[float, ...]
    uncertainty: dict[str, list[float]]
    coverage: float
    ok: bool
    reason: str
    n_evaluations: int
    seconds: float
    seed: int
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (degrees and mm at this edge)."""
        return {"level": self.level, "T_world_from_ct": self.T_world_from_ct.tolist(),
                "T_carm_from_ct": self.T_carm_from_ct.tolist(), "gradient_correlation": self.similarity,
                "gradient_correlation_per_shot": list(self.similarity_per_shot),
                "uncertainty": self.uncertainty, "coverage_fraction": self.coverage, "ok": self.ok,
                "reason": self.reason, "n_evaluations": self.n_evaluations, "seconds": self.seconds,
                "seed": self.seed, "notes": list(self.notes)}


class _Problem:
    """Renders the moved vertebra in each shot's region and scores it (negative GC, to minimise)."""

    def __init__(self, vert: VertebraVolume, levels: list[_Level], T_init: NDArray[np.float64],
                 centre_w: NDArray[np.float64], Ra: NDArray[np.float64], scale: NDArray[np.float64]):
        self.vert, self.levels, self.T_init = vert, levels, T_init
        self.centre_w, self.Ra, self.scale = centre_w, Ra, scale
        self.n_eval = 0
        self.depth_weight = 0.0
        self.penalty: Callable[[NDArray[np.float64]], float] | None = None

    def T(self, x: ArrayLike) -> NDArray[np.float64]:
        return pose_from_params(np.asarray(x) * self.scale, self.T_init, self.centre_w, self.Ra)

    def per_shot(self, x: ArrayLike) -> list[float]:
        att = moved_attenuation(self.vert.attenuation, self.T(x))
        out = []
        for lv in self.levels:
            out.append(_compare(render_line_integrals(att, lv.geometry, lv.pose, region=lv.region), lv))
        self.n_eval += 1
        return out

    def __call__(self, x: ArrayLike) -> float:
        # monoplane: a weak prior keeps the ill-determined depth (beam axis) near the start
        prior = self.depth_weight * float(np.asarray(x)[5]) ** 2
        if self.penalty is not None:  # e.g. multi-level: the neighbours' relative motion beyond bounds
            prior += float(self.penalty(self.T(x)))
        return -float(np.mean(self.per_shot(x))) + prior


def similarity_at(vert: VertebraVolume, shots: Sequence[ShotView], T_world_from_ct: ArrayLike, *,
                  pixel_mm: float = 1.5) -> list[float]:
    """Gradient correlation per shot of the vertebra rendered at ``T_world_from_ct``, over each
    WHOLE detector binned to ``pixel_mm`` at the isocentre: a score that is comparable between
    poses (the registration's own scores use pose-dependent regions and are not)."""
    att = moved_attenuation(vert.attenuation, np.asarray(T_world_from_ct, dtype=np.float64))
    out = []
    for s in shots:
        iso_px = min(s.geometry.pixel_spacing_mm) / s.geometry.magnification
        lv = _downsample(s, pixel_mm / iso_px)
        out.append(gradient_correlation(render_line_integrals(att, lv.geometry, lv.pose), lv.fixed))
    return out


def _cma(fun, x0, sigma, bound, maxfevals, seed, popsize=None):
    import cma

    opts = {"bounds": [-bound, bound], "maxfevals": maxfevals, "seed": seed + 1, "verbose": -9,
            "tolfun": 1e-4, "tolx": 1e-3}
    if popsize:
        opts["popsize"] = popsize
    es = cma.CMAEvolutionStrategy(np.asarray(x0, float), sigma, opts)
    es.optimize(fun)
    return np.asarray(es.result.xbest), float(es.result.fbest)


@contextmanager
def _numba_threads(n: int | None) -> Iterator[None]:
    """Run the block with numba's thread count set to ``n`` (None: unchanged), then restore it."""
    if n is None:
        yield
        return
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def register_vertebra(vert: VertebraVolume, shots: Sequence[ShotView], *,
                      T_init_world_from_ct: ArrayLike | None = None, search_mm: float = 20.0,
                      search_rad: float = math.radians(20.0), coarse_pixel_mm: float = 2.4,
                      fine_pixel_mm: float = 0.8, region_margin_mm: float = 8.0,
                      gc_threshold: float = DEFAULT_GC_THRESHOLD, min_coverage: float = 0.8,
                      max_view_disagreement: float = 0.25, seed: int = 0,
                      coarse_evaluations: int = 600, fine_evaluations: int = 250, restarts: int = 1,
                      monoplane_depth_weight: float = 0.05, compute_uncertainty: bool = True,
                      powell_evaluations: int = 150,
                      penalty: Callable[[NDArray[np.float64]], float] | None = None,
                      render_threads: int | None = 1) -> IntensityResult:
    """Register one vertebra's CT to one (monoplane) or two (biplane) shots.

    Parameters
    ----------
    vert : VertebraVolume
        From :func:`prepare_vertebra`.
    shots : sequence of ShotView
        1 or 2 shots, each with its image in attenuation polarity (bone high) and geometry.
    T_init_world_from_ct : (4, 4), optional
        Starting pose (default identity: the CT frame is the world frame).
    search_mm, search_rad : float
        Half-widths of the global search box about the start (translation, rotation).
    coarse_pixel_mm, fine_pixel_mm : float
        Pixel sizes at the isocentre of the coarse and fine levels (the detector is binned to
        reach them; never upsampled).
    gc_threshold, min_coverage, max_view_disagreement : float
        Failure tests (see the module docstring).
    seed : int
        CMA-ES seed (recorded in the result).
    restarts : int
        Further global searches (other seed, larger population) when the GC stays below the
        threshold.
    monoplane_depth_weight : float
        With one shot, GC penalty ``w (t_depth / search_mm)^2`` that keeps the depth (beam
        axis, barely visible in one projection) near the start.
    penalty : callable, optional
        ``penalty(T_world_from_ct) -> float`` added to the cost (-GC) at every evaluation, e.g.
        the neighbours' relative motion beyond physiological bounds
        (:func:`spinenav.registration.multilevel.register_levels`). Not part of the reported GC.
    render_threads : int or None
        numba threads for the renderer during the registration (default 1; None = leave
        numba's setting). Each evaluation renders a small region (~100 x 100 px), where the
        renderer's parallel loop costs more than it saves: on this shared 2-core machine, 2
        threads took the median biplane registration from 1.6 s to 4.1 s wall and from 1.6 s to
        5.7 s CPU (benchmarks/bench_register.py, 2026-11-21, load ~2-4).
    """
    with _numba_threads(render_threads):
        t0 = time.perf_counter()
        if not 1 <= len(shots) <= 2:
            raise RegistrationError(f"need one or two shots, got {len(shots)}")
        T_init = np.eye(4) if T_init_world_from_ct is None else np.asarray(T_init_world_from_ct, dtype=np.float64)
        if T_init.shape != (4, 4) or not np.all(np.isfinite(T_init)):
            raise RegistrationError("T_init_world_from_ct must be a finite 4x4 matrix")
        if not (search_mm > 0 and search_rad > 0):
            raise RegistrationError("search_mm and search_rad must be > 0")
        Ra = T_camera_from_world(shots[0].geometry, shots[0].pose)[:3, :3]
        centre_w = T_init[:3, :3] @ vert.centroid_ct_mm + T_init[:3, 3]
        scale = np.array([search_rad] * 3 + [search_mm] * 3)
        pts_init_w = vert.points_ct_mm @ T_init[:3, :3].T + T_init[:3, 3]

        def levels_for(pixel_mm: float) -> list[_Level]:
            out = []
            for s in shots:
                iso_px = min(s.geometry.pixel_spacing_mm) / s.geometry.magnification
                out.append(_downsample(s, pixel_mm / iso_px))
            return out

        # --- coarse, global
        coarse = levels_for(coarse_pixel_mm)
        for lv in coarse:
            lv.set_region(_region_for(lv, pts_init_w, search_mm + region_margin_mm))
        depth_weight = monoplane_depth_weight if len(shots) == 1 else 0.0
        fine = levels_for(fine_pixel_mm)
        n_eval = 0
        best: tuple[float, NDArray[np.float64], list[float], _Problem] | None = None
        notes: list[str] = []
        for attempt in range(1 + max(int(restarts), 0)):
            prob = _Problem(vert, coarse, T_init, centre_w, Ra, scale)
            prob.depth_weight = depth_weight
            prob.penalty = penalty
            x, _ = _cma(prob, np.zeros(6), 0.3, 1.0, coarse_evaluations * (1 + attempt), seed + 1000 * attempt,
                        popsize=None if attempt == 0 else 16)
            n_eval += prob.n_eval
            # --- fine, local
            T_mid = prob.T(x)
            pts_w = vert.points_ct_mm @ T_mid[:3, :3].T + T_mid[:3, 3]
            for lv in fine:
                lv.set_region(_region_for(lv, pts_w, region_margin_mm))
            probf = _Problem(vert, fine, T_init, centre_w, Ra, scale)
            probf.depth_weight = depth_weight
            probf.penalty = penalty
            x2, f2 = _cma(probf, x, 0.03, 1.05, fine_evaluations, seed, popsize=8)
            x_att = x2
            if powell_evaluations > 0:
                res = minimize(probf, x2, method="Powell",
                               options={"xtol": 1e-3, "ftol": 1e-5, "maxfev": powell_evaluations,
                                        "direc": np.eye(6) * 0.01})
                x_att = res.x if res.fun <= f2 else x2
            per_att = probf.per_shot(x_att)
            n_eval += probf.n_eval
            gc_att = float(np.mean(per_att))
            if best is None or gc_att > best[0]:
                best = (gc_att, x_att, per_att, probf)
            if gc_att >= gc_threshold:
                break
            notes.append(f"attempt {attempt + 1}: GC {gc_att:.3f} below {gc_threshold:.2f}, "
                         "restarting the global search")
        gc, x_best, per, probf = best  # type: ignore[misc]
        probf.n_eval = 0
        # --- uncertainty: Hessian of -GC at the optimum (central differences, +-1 mm / +-1 deg),
        # extent of the region where GC is within GC_NOISE of the peak: sqrt(2 GC_NOISE inv(H)_ii)
        uncertainty: dict[str, Any] = {"not_computed": True}
        if compute_uncertainty:
            h = np.array([math.radians(1.0)] * 3 + [1.0] * 3) / scale
            f0 = -gc
            H = np.zeros((6, 6))
            fpm = {}
            for i in range(6):
                for sgn in (1, -1):
                    e = np.zeros(6)
                    e[i] = sgn * h[i]
                    fpm[(i, sgn)] = float(-np.mean(probf.per_shot(x_best + e)))
                H[i, i] = (fpm[(i, 1)] + fpm[(i, -1)] - 2 * f0) / (h[i] * scale[i]) ** 2
            for i in range(6):
                for j in range(i + 1, 6):
                    vals = []
                    for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                        e = np.zeros(6)
                        e[i], e[j] = si * h[i], sj * h[j]
                        vals.append(float(-np.mean(probf.per_shot(x_best + e))))
                    H[i, j] = H[j, i] = ((vals[0] - vals[1] - vals[2] + vals[3])
                                         / (4 * h[i] * scale[i] * h[j] * scale[j]))
            w, V = np.linalg.eigh(H)
            if np.all(w > 0):
                half = list(np.sqrt(2 * GC_NOISE * np.diag(V @ np.diag(1.0 / w) @ V.T)))
            else:  # flat or saddle along some direction: unbounded there
                half = [math.inf] * 6
                notes.append("similarity not peaked in every direction "
                             f"(Hessian eigenvalues {np.round(w, 5).tolist()})")
            uncertainty = {"rot_deg": [math.degrees(a) for a in half[:3]], "trans_mm": [float(a) for a in half[3:]],
                           "axes": ["u (image right)", "v (image down)", "beam (depth)"]}
        n_eval += probf.n_eval
        T_best = probf.T(x_best)
        # --- checks
        reasons = []
        coverage = 1.0
        pts_best = vert.points_ct_mm @ T_best[:3, :3].T + T_best[:3, 3]
        for s in shots:
            uv = project_points(projection_matrix(s.geometry, s.pose), pts_best)
            inside = np.all(np.isfinite(uv), axis=1)
            uvr = np.round(uv[inside]).astype(int)
            inside_det = ((uvr[:, 0] >= 0) & (uvr[:, 0] < s.geometry.cols) & (uvr[:, 1] >= 0)
                          & (uvr[:, 1] < s.geometry.rows))
            valid = _valid_mask(s.image) if s.ignore is None else _valid_mask(s.image) & ~s.ignore
            hit = np.zeros(len(pts_best), bool)
            ok_idx = np.flatnonzero(inside)[inside_det]
            hit[ok_idx] = valid[uvr[inside_det, 1], uvr[inside_det, 0]]
            coverage = min(coverage, float(hit.mean()))
        if coverage < min_coverage:
            hidden = " or hidden by what is not in the CT (e.g. instruments)" if any(
                s.ignore is not None for s in shots) else ""
            reasons.append(f"vertebra cut off{hidden}: only {coverage:.0%} of it projects onto the usable image")
        if vert.partial:
            reasons.append(f"the CT holds only part of {vert.level} ({vert.partial}): its pose is not trusted")
        if gc < gc_threshold:
            reasons.append(f"gradient correlation {gc:.3f} < {gc_threshold:.2f}: the DRR does not match the shot "
                           "(wrong level, start outside the capture range, or the vertebra is hidden)")
        if np.any(np.abs(x_best) > 0.98):  # the depth too: a monoplane depth at the bound is not trustworthy
            reasons.append("the solution is at the edge of the search range: start closer to the vertebra")
        if len(per) == 2 and abs(per[0] - per[1]) > max_view_disagreement:
            reasons.append(f"the two views disagree (GC {per[0]:.2f} vs {per[1]:.2f})")
        T_carm = T_camera_from_world(shots[0].geometry, shots[0].pose) @ T_best
        return IntensityResult(vert.level, T_best, T_carm, gc, tuple(float(p) for p in per), uncertainty, coverage,
                               ok=not reasons, reason="; ".join(reasons), n_evaluations=n_eval,
                               seconds=time.perf_counter() - t0, seed=seed, notes=tuple(notes))
