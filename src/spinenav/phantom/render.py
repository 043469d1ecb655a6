"""Paint solids into a CT, a label map and a tissue map on one voxel grid.

Painting is in order, later structures over earlier ones. A voxel takes a structure's label
and tissue when its centre is inside (``sdf <= 0``: the exact inside test); its intensity is
blended with the structure's by ``alpha = clip(0.5 - sdf / h, 0, 1)`` (h: the mean voxel
size), which gives edges a sub-voxel partial-volume ramp. Bone intensity depends on depth:
cortical within ``CORTEX_MM`` of the surface, cancellous deeper. After painting the CT is
blurred by a Gaussian point-spread function and Gaussian noise is added (both seeded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinenav.phantom.anatomy import TISSUE_HU, Tissue
from spinenav.phantom.shapes import Grid, Solid
from spinenav.phantom.softtissue import MUSCLE_WALL_MM, SKIN_MM, SUBCUTANEOUS_FAT_MM, Torso

#: Largest block evaluated at once (voxels): bounds the temporary memory of one paint.
CHUNK_VOXELS = 4_000_000


@dataclass(frozen=True)
class BoneShade:
    """Depth-dependent bone intensity: `cortex_hu` within `cortex_mm` of the surface,
    `cancellous_hu` deeper, with a 0.5 mm ramp between."""

    cortex_hu: float
    cancellous_hu: float
    cortex_mm: float

    def value(self, d: NDArray[np.float32]) -> NDArray[np.float32]:
        w = np.clip((d + self.cortex_mm) * 2.0 + 0.5, 0.0, 1.0)
        return (self.cancellous_hu + (self.cortex_hu - self.cancellous_hu) * w).astype(np.float32)


def _chunks(box: tuple[slice, slice, slice]):
    """Split a box along k into pieces of at most CHUNK_VOXELS voxels."""
    plane = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    step = max(1, CHUNK_VOXELS // max(plane, 1))
    for k0 in range(box[2].start, box[2].stop, step):
        yield box[0], box[1], slice(k0, min(k0 + step, box[2].stop))


@numba.njit(cache=True, parallel=True)
def _torso_kernel(up, vp, gu2, gv2, depths, values, tissues, inv_h, core_depth, hu, tissue, core):
    """Per voxel: d = (|x/a|^p + |(y-yc)/b|^p - 1) / |grad| (one Newton step to the outline);
    HU ramps by (0.5 - (d - depth) / h) across each layer boundary; tissue by depth."""
    ni, nj, nk = hu.shape
    nl = depths.shape[0]
    for i in numba.prange(ni):
        for j in range(nj):
            for k in range(nk):
                s = up[i, k] + vp[j, k] - 1.0
                g = math.sqrt(gu2[i, k] + gv2[j, k])
                d = s / max(g, 1e-3)
                val = values[0]
                t = tissues[0]
                for m in range(nl):
                    w = 0.5 - (d - depths[m]) * inv_h
                    if w > 0.0:
                        val += (values[m + 1] - values[m]) * min(w, 1.0)
                    if d <= depths[m]:
                        t = tissues[m + 1]
                hu[i, j, k] = val
                tissue[i, j, k] = t
                core[i, j, k] = d <= core_depth


class Canvas:
    """The three maps being painted: HU (float32), labels (uint8), tissue (uint8), plus the
    'core' mask (inside the subcutaneous fat) that confines muscles and organs."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.hu = np.full(grid.shape, TISSUE_HU[Tissue.AIR], dtype=np.float32)
        self.labels = np.zeros(grid.shape, dtype=np.uint8)
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)
        self.core = np.zeros(grid.shape, dtype=bool)
        self.h_mm = float(np.prod(grid.spacing_mm) ** (1.0 / 3.0))

    def paint_torso(self, torso: Torso, *, scale: float) -> None:
        """Air, skin, subcutaneous fat, the muscular body wall and visceral fat, by depth
        below the body outline (one fused pass over the grid)."""
        layers = [(0.0, Tissue.SKIN), (-SKIN_MM, Tissue.SUBCUTANEOUS_FAT),
                  (-SKIN_MM - SUBCUTANEOUS_FAT_MM * scale, Tissue.MUSCLE),
                  (-SKIN_MM - (SUBCUTANEOUS_FAT_MM + MUSCLE_WALL_MM) * scale, Tissue.VISCERAL_FAT)]
        g = self.grid
        x = g.axis_mm(0).astype(np.float64)
        y = g.axis_mm(1).astype(np.float64)
        z = g.axis_mm(2).astype(np.float64)
        a, b, yc = (np.asarray(q, np.float64) for q in torso.params_at(z))
        p = torso.exponent
        u = np.abs(x)[:, None] / a[None, :]  # (I, K)
        v = np.abs(y[:, None] - yc[None, :]) / b[None, :]  # (J, K)
        up, vp = u ** p, v ** p
        gu, gv = p * u ** (p - 1) / a[None, :], p * v ** (p - 1) / b[None, :]
        depths = np.array([d for d, _ in layers], np.float64)
        values = np.array([TISSUE_HU[Tissue.AIR]] + [TISSUE_HU[t] for _, t in layers], np.float64)
        tissues = np.array([Tissue.AIR] + [t for _, t in layers], np.uint8)
        _torso_kernel(up.astype(np.float32), vp.astype(np.float32), (gu * gu).astype(np.float32),
                      (gv * gv).astype(np.float32), depths, values, tissues, 1.0 / self.h_mm,
                      float(layers[2][0]), self.hu, self.tissue, self.core)

    def paint(self, solid: Solid, *, tissue: Tissue, label: int | None = None, within_core: bool = False,
              shade: BoneShade | None = None, shade_solid: Solid | None = None) -> int:
        """Paint one structure; returns the number of voxels that took its label/tissue.

        With `shade`, the intensity depends on depth below the surface of `shade_solid` (by
        default `solid` itself): a bone split into two labels (S1 and the rest of the sacrum)
        is shaded as one, with no cortex along the split.
        """
        box = self.grid.index_box(solid.bounds(), pad_mm=self.h_mm)
        if box is None:
            return 0
        inv_h = 1.0 / self.h_mm
        count = 0
        for ch in _chunks(box):
            d = solid.sdf_grid(self.grid, ch)
            if not np.any(d < 0.5 * self.h_mm):
                continue
            inside = d <= 0.0
            alpha = np.clip(0.5 - d * inv_h, 0.0, 1.0)
            if within_core:
                core = self.core[ch]
                inside &= core
                alpha *= core
            d_shade = d if shade_solid is None else shade_solid.sdf_grid(self.grid, ch)
            value = TISSUE_HU[tissue] if shade is None else shade.value(d_shade)
            hu = self.hu[ch]
            hu += alpha * (value - hu)
            lab = self.labels[ch]
            tis = self.tissue[ch]
            if label is not None:
                lab[inside] = label
            else:  # unlabelled tissue hides what was under it
                lab[inside] = 0
            if shade is None:
                tis[inside] = tissue
            else:
                cortical = inside & (d_shade > -shade.cortex_mm)
                tis[inside] = Tissue.CANCELLOUS_BONE
                tis[cortical] = Tissue.CORTICAL_BONE
            count += int(inside.sum())
        return count

    def finish_ct(self, *, blur_mm: float, noise_hu: float, rng: np.random.Generator) -> NDArray[np.int16]:
        """Blur (Gaussian PSF, sigma `blur_mm`), add Gaussian noise (SD `noise_hu`, drawn from
        `rng`), round and clip to the int16 CT range [-1024, 3071]. Consumes the float map."""
        hu = self.hu
        if blur_mm > 0:
            sigma = [blur_mm / s for s in self.grid.spacing_mm]
            ndimage.gaussian_filter(hu, sigma=sigma, output=hu, mode="nearest", truncate=3.0)
        if noise_hu > 0:  # in contiguous slabs along i, through one reused buffer
            step = max(1, CHUNK_VOXELS // (hu.shape[1] * hu.shape[2]))
            buf = np.empty((min(step, hu.shape[0]), hu.shape[1], hu.shape[2]), dtype=np.float32)
            for i0 in range(0, hu.shape[0], step):
                b = buf[:min(step, hu.shape[0] - i0)]
                rng.standard_normal(out=b, dtype=np.float32)
                b *= np.float32(noise_hu)
                hu[i0:i0 + len(b)] += b
        np.rint(hu, out=hu)
        np.clip(hu, -1024, 3071, out=hu)
        self.hu = None  # type: ignore[assignment]
        return hu.astype(np.int16)

