"""Phantoms, real data and synthetic shapes shared by the anatomy tests.

Each case is built once per test session (``functools.cache``): the test modules ask for the
same phantom and the same SpineModel, so the suite generates and measures each only once.
"""

from __future__ import annotations

import functools

import numpy as np

from spinenav.anatomy.labelmap import ImportedLabels, import_label_map
from spinenav.anatomy.measure import measure_spine
from spinenav.anatomy.model import SpineModel
from spinenav.imaging import read_volume
from spinenav.imaging.volume import Volume
from spinenav.phantom import Phantom, PhantomParams, generate_phantom

#: The phantom's label 79 marks the whole dural sac (truth notes), so it is the sac here.
DURAL_SAC = 79

PHANTOMS: dict[str, dict] = {
    # the reference: T10-S1 at 1 mm, default noise (20 HU) and blur
    "default": dict(spacing_mm=1.0, organs=False, seed=1),
    # stenosis (absolute at L3, relative at L5), half-height L3-L4 disc, L4 slipped 6 mm on L5
    "pathology": dict(levels=("L2", "S1"), spacing_mm=1.0, organs=False, seed=2,
                      stenosis={"L3": 0.4, "L5": 0.25}, disc_height_loss={"L3-L4": 0.5}, slip_mm={"L4": 6.0}),
    "scoliosis": dict(levels=("T11", "L3"), spacing_mm=1.0, organs=False, seed=3, scoliosis_deg=20.0),
    "aniso": dict(levels=("L3", "L5"), spacing_mm=(0.8, 0.8, 2.0), organs=False, seed=4),
    "noisy": dict(levels=("L1", "L3"), spacing_mm=1.0, organs=False, seed=5, noise_hu=60.0),
    # a small adult: T10's pedicles are 4.5 mm wide
    "small": dict(levels=("T10", "T12"), spacing_mm=1.0, organs=False, seed=6, scale=0.75),
}


@functools.cache
def phantom(name: str) -> Phantom:
    return generate_phantom(PhantomParams(**PHANTOMS[name]))


@functools.cache
def phantom_model(name: str) -> SpineModel:
    ph = phantom(name)
    return measure_spine(ph.ct, ph.labels, dural_sac_label=DURAL_SAC)


@functools.cache
def chest(ct_path: str, labels_path: str) -> tuple[Volume, ImportedLabels, SpineModel]:
    ct = read_volume(ct_path)
    imp = import_label_map(labels_path, ct)
    return ct, imp, measure_spine(ct, imp.labels, names=imp.names)


def box_vertebra(*, shape=(60, 70, 50), spacing=(1.0, 1.0, 1.0), label=31, tilt_deg: float = 0.0
                 ) -> tuple[Volume, dict]:
    """A synthetic 'vertebra' label map: an elliptic-cylinder body, a ring (arch) enclosing a
    canal behind it, two pedicle bars, a spinous plate and two transverse bars; tilted
    forward by `tilt_deg` about the left-right axis. Returns (labels, design numbers)."""
    sp = np.asarray(spacing, float)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    centre = (np.array(shape) - 1) / 2 * sp
    p = idx * sp - centre  # world mm around the grid centre
    t = np.radians(tilt_deg)
    # vertebra frame: rotate world points back by the tilt about x
    c, s = np.cos(t), np.sin(t)
    y = c * p[..., 1] + s * p[..., 2]
    z = -s * p[..., 1] + c * p[..., 2]
    x = p[..., 0]
    body = ((x / 16.0) ** 2 + ((y + 8.0) / 12.0) ** 2 <= 1.0) & (np.abs(z) <= 11.0)
    yc, A, B = 10.0, 8.0, 6.0  # canal centre (y), half-width, half-AP
    canal = (x / A) ** 2 + ((y - yc) / B) ** 2 <= 1.0
    ring = ((x / (A + 5.0)) ** 2 + ((y - yc) / (B + 5.0)) ** 2 <= 1.0) & (np.abs(z - 2.0) <= 6.0) & ~canal
    pedicles = (np.abs(np.abs(x) - (A + 2.5)) <= 2.5) & (y > 2.0) & (y < yc) & (np.abs(z - 2.0) <= 5.0)
    spinous = (np.abs(x) <= 2.0) & (y >= yc + B) & (y <= yc + B + 14.0) & (np.abs(z - 1.0) <= 5.0)
    tps = (np.abs(x) >= A + 4.0) & (np.abs(x) <= A + 16.0) & (np.abs(y - yc) <= 2.5) & (np.abs(z - 2.0) <= 3.0)
    m = (body | ring | pedicles | spinous | tps) & ~canal
    arr = np.where(m, label, 0).astype(np.uint8)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -centre
    design = {"body_centre_local": (0.0, -8.0, 0.0), "canal_area_mm2": np.pi * A * B, "canal_ap_mm": 2 * B,
              "interpedicular_mm": 2 * A, "tilt_deg": tilt_deg, "spinous_tip_local": (0.0, yc + B + 14.0, 1.0)}
    return Volume(arr, affine, modality="SEG", is_label=True), design
