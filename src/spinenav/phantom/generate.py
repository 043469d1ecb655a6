"""Generate a phantom (CT, labels, tissue map, truth) and write it to disk.

>>> from spinenav.phantom import PhantomParams, generate_phantom
>>> ph = generate_phantom(PhantomParams(levels=("L4", "L5"), spacing_mm=1.5, organs=False))
>>> ph.ct.array.dtype, ph.labels.array.dtype, ph.ct.axcodes
(dtype('int16'), dtype('uint8'), ('L', 'P', 'S'))
>>> round(ph.truth.vertebra("L4").pedicles["left"].width_mm, 2)
10.48
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinenav.atomic import atomic_folder, write_json_atomic
from spinenav.errors import SpinenavError
from spinenav.imaging.io import write_nifti
from spinenav.imaging.volume import Volume
from spinenav.phantom.anatomy import CORTEX_MM, PELVIS_CANCELLOUS_HU, RIB_CORTEX_MM, RIB_MARROW_HU, TISSUE_HU, Tissue
from spinenav.phantom.chain import build_chain
from spinenav.phantom.params import PhantomParams, levels_between
from spinenav.phantom.render import BoneShade, Canvas
from spinenav.phantom.shapes import Grid
from spinenav.phantom.skeleton import Skeleton, bone_paint_list, build_skeleton
from spinenav.phantom.softtissue import build_torso, soft_tissue_paints
from spinenav.phantom.truth import PhantomTruth, compute_truth

#: Refuse grids larger than this (voxels): about 1.6 GB of float32 working memory.
MAX_VOXELS = 400_000_000
Progress = Callable[[str, float], None]


class PhantomParameterError(SpinenavError):
    """The parameters are valid one by one but cannot make a phantom together."""


@dataclass(frozen=True)
class Phantom:
    """A generated phantom.

    Attributes
    ----------
    ct : Volume
        int16 HU, modality "CT", ``meta['source_format'] == 'phantom'``.
    labels : Volume
        uint8 TotalSegmentator-v2 ids (discs: 200 + id of the vertebra above), same grid.
    tissue : Volume
        uint8 :class:`~spinenav.phantom.anatomy.Tissue` classes the intensities came from.
    truth : PhantomTruth
        Ground truth (world LPS mm, degrees).
    params : PhantomParams
    """

    ct: Volume
    labels: Volume
    tissue: Volume
    truth: PhantomTruth
    params: PhantomParams


def _z_range(sk: Skeleton, top: str, bottom: str, margin: float) -> tuple[float, float]:
    """World z range (mm) covering the vertebrae top..bottom (for S1: down to mid-S2)."""
    names = levels_between(top, bottom)
    his = [sk.vertebrae[n].solid.bounds()[1][2] for n in names]
    los = [sk.vertebrae[n].solid.bounds()[0][2] for n in names]
    z_hi = max(his) + margin
    if bottom == "S1":  # show the upper sacrum: down to the middle of S2
        z_lo = min(min(los), sk.sacrum_segments[0][1][2, 3]) - margin
    else:
        z_lo = min(los) - margin
    return z_lo, z_hi


def _grid(params: PhantomParams, lo: np.ndarray, hi: np.ndarray) -> Grid:
    sp = np.array(params.spacing_xyz_mm)
    lo = np.floor(lo / sp) * sp  # grids of one spacing share voxel centres
    shape = tuple(int(n) for n in np.floor((hi - lo) / sp + 1e-6).astype(int) + 1)
    n = math.prod(shape)
    if n > MAX_VOXELS:
        raise PhantomParameterError(
            f"the phantom grid would have {n:,} voxels ({shape[0]} x {shape[1]} x {shape[2]} at "
            f"{tuple(sp)} mm), more than {MAX_VOXELS:,}; use a coarser spacing_mm or a smaller fov")
    return Grid(shape, tuple(float(a) for a in lo), tuple(float(s) for s in sp))  # type: ignore[arg-type]


def generate_phantom(params: PhantomParams, *, progress: Progress | None = None) -> Phantom:
    """Generate the phantom described by `params`.

    Parameters
    ----------
    params : PhantomParams
    progress : callable(step_name, fraction), optional
        Called as work proceeds (fraction from 0 to 1); the library prints nothing.

    Returns
    -------
    Phantom

    Raises
    ------
    PhantomParameterError
        Parameters that cannot make a phantom together (a disc squeezed to nothing, a slip
        beyond grade II, a field of view that misses the phantom, too many voxels).
    """
    report = progress or (lambda step, frac: None)
    report("anatomy", 0.0)
    try:
        chain = build_chain(params)
    except ValueError as exc:
        raise PhantomParameterError(str(exc)) from None
    sk = build_skeleton(chain, params)
    z_lo, z_hi = _z_range(sk, *params.levels, margin=10.0)
    torso = build_torso(sk, params, z_lo, z_hi)
    zs = (torso.z_mm >= z_lo - 5) & (torso.z_mm <= z_hi + 5)
    half_w = float(torso.half_width_mm[zs].max()) + 8.0
    y_lo = float((torso.centre_y_mm - torso.half_depth_mm)[zs].min()) - 8.0
    y_hi = float((torso.centre_y_mm + torso.half_depth_mm)[zs].max()) + 8.0
    lo = np.array([-half_w, y_lo, z_lo])
    hi = np.array([half_w, y_hi, z_hi])
    fov = params.fov
    if fov is not None:
        if fov.levels is not None:
            f_lo, f_hi = _z_range(sk, *fov.levels, margin=fov.margin_mm)
            lo[2], hi[2] = max(lo[2], f_lo), min(hi[2], f_hi)
        if fov.box_min_world_mm is not None:
            lo = np.maximum(lo, fov.box_min_world_mm)
            hi = np.minimum(hi, fov.box_max_world_mm)
        if np.any(hi - lo < np.array(params.spacing_xyz_mm)):
            raise PhantomParameterError(
                f"fov: the field of view misses the phantom (phantom spans {np.round(lo, 1).tolist()} to "
                f"{np.round(hi, 1).tolist()} world mm after cropping); check box_min/max_world_mm")
    grid = _grid(params, lo, hi)
    rng = np.random.default_rng(params.seed)  # bowel layout
    canvas = Canvas(grid)
    report("body outline", 0.05)
    canvas.paint_torso(torso, scale=params.scale)
    soft = soft_tissue_paints(sk, params, rng)
    bones = bone_paint_list(sk)
    total = len(soft) + len(bones)
    for i, paint in enumerate(soft):
        report(f"soft tissue: {paint.name}", 0.1 + 0.4 * i / total)
        canvas.paint(paint.solid, tissue=paint.tissue, label=paint.label, within_core=paint.within_core)
    vertebra_shade = BoneShade(TISSUE_HU[Tissue.CORTICAL_BONE], TISSUE_HU[Tissue.CANCELLOUS_BONE],
                               CORTEX_MM * params.scale)
    pelvis_shade = BoneShade(TISSUE_HU[Tissue.CORTICAL_BONE], PELVIS_CANCELLOUS_HU, CORTEX_MM * params.scale)
    rib_shade = BoneShade(TISSUE_HU[Tissue.CORTICAL_BONE], RIB_MARROW_HU, RIB_CORTEX_MM * params.scale)
    for i, (name, solid, label) in enumerate(bones):
        report(f"bone: {name}", 0.1 + 0.4 * (len(soft) + i) / total)
        shade = rib_shade if name.startswith("rib") else pelvis_shade if name.startswith(("hip", "sacrum")) \
            else vertebra_shade
        sacral = name in ("sacrum", "vertebrae_S1")  # one fused bone, two labels
        canvas.paint(solid, tissue=Tissue.CORTICAL_BONE, label=label, shade=pelvis_shade if sacral else shade,
                     shade_solid=sk.sacrum_fused if sacral else None)
    report("blur and noise", 0.6)
    noise_rng = np.random.Generator(np.random.SFC64(params.seed))  # fast, for ~10^8 draws
    ct_array = canvas.finish_ct(blur_mm=params.blur_mm, noise_hu=params.noise_hu, rng=noise_rng)
    report("ground truth", 0.75)
    truth = compute_truth(sk, params, grid)
    report("done", 1.0)
    affine = grid.affine
    ct = Volume(ct_array, affine, modality="CT",
                meta={"source_format": "phantom", "units": "HU", "modality_source": "phantom"})
    labels = Volume(canvas.labels, affine, modality="SEG", is_label=True,
                    meta={"source_format": "phantom", "units": "label"})
    tissue = Volume(canvas.tissue, affine, modality="SEG", is_label=True,
                    meta={"source_format": "phantom", "units": "label"})
    return Phantom(ct, labels, tissue, truth, params)


def write_phantom(phantom: Phantom, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``ct.nii.gz``, ``labels.nii.gz`` and ``truth.json`` into `out_dir`, all or nothing
    (the folder is replaced as a whole). Returns their paths by key ("ct", "labels", "truth")."""
    out = Path(out_dir)
    names = {"ct": "ct.nii.gz", "labels": "labels.nii.gz", "truth": "truth.json"}
    with atomic_folder(out) as tmp:
        write_nifti(phantom.ct, tmp / names["ct"])
        write_nifti(phantom.labels, tmp / names["labels"])
        write_json_atomic(tmp / names["truth"], phantom.truth.to_json_dict())
    return {k: out / n for k, n in names.items()}
