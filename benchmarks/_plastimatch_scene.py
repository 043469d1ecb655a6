"""Target shots rendered by plastimatch (``plastimatch drr``): a second, independent renderer
for the registration benchmark (issue 6: never the inverse crime).

The moved vertebra is put back into the CT by resampling (trilinear) its HU onto the CT grid at
its true pose, the rest of the CT staying where it was; plastimatch then converts HU to
attenuation itself (its own water-based conversion, its own ray tracer: "exact" Siddon-type).
Metal instruments are painted into the volume as voxels (plastimatch has no analytic metal).

Geometry: plastimatch's detector normal points from the detector to the source, its ``vup``
from the detector centre to the top row, its image centre is (row, col). With
``nrm = -beam``, ``vup = -v`` and centre = our principal point (v, u), its image equals our
projection: checked by :func:`geometry_check` (small bright beads at known positions; the
residual is printed by the benchmark, ~0.1-0.2 px on 2026-11-21).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from spinenav.fluoro.carm import CarmGeometry, CarmPose, camera_rotation, project_points, projection_matrix
from spinenav.fluoro.drr import MetalCylinder
from spinenav.imaging.io import volume_to_sitk
from spinenav.imaging.volume import Volume
from spinenav.registration.evaluate import detected_image, surrounding_soft_tissue_hu

#: HU painted for titanium voxels (beyond any bone; plastimatch converts it linearly).
METAL_HU = 8000.0


def ensure_plastimatch() -> str | None:
    """The plastimatch executable, installed with apt-get when missing (Debian package)."""
    exe = shutil.which("plastimatch")
    if exe:
        return exe
    try:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=900)
        subprocess.run(["apt-get", "install", "-y", "plastimatch"], check=True, capture_output=True, timeout=1800)
    except (subprocess.SubprocessError, OSError):
        return None
    return shutil.which("plastimatch")


def _read_pfm(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        f.readline()
        cols, rows = (int(x) for x in f.readline().split())
        scale = float(f.readline())
        a = np.frombuffer(f.read(), "<f4" if scale < 0 else ">f4")[: rows * cols]
    return a.reshape(rows, cols).astype(np.float64)


def drr(exe: str, mha: Path, geometry: CarmGeometry, pose: CarmPose, workdir: Path) -> np.ndarray:
    """plastimatch's line-integral image of the volume in ``mha`` (LPS, identity direction)."""
    R = camera_rotation(pose.primary_rad, pose.secondary_rad)
    iso = pose.effective_isocentre_world_mm
    u0, v0 = geometry.principal_point_px
    su, sv = geometry.pixel_spacing_mm
    out = workdir / "drr_"
    subprocess.run([exe, "drr", "-A", "cpu", "-t", "pfm", "-r", f"{geometry.rows} {geometry.cols}",
                    "-z", f"{geometry.rows * sv} {geometry.cols * su}", "--sad", str(geometry.sod_mm),
                    "--sid", str(geometry.sdd_mm), "-o", " ".join(f"{x:.6f}" for x in iso),
                    "-n", " ".join(f"{x:.9f}" for x in -R[2]), "--vup", " ".join(f"{x:.9f}" for x in -R[1]),
                    "-c", f"{v0} {u0}", "-O", str(out), "-I", str(mha)], check=True, capture_output=True,
                   timeout=600)
    return _read_pfm(workdir / "drr_0000.pfm")


def write_lps_mha(hu: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """HU array [i, j, k] on ``affine`` -> MHA with voxels reoriented to LPS (plastimatch ignores
    direction cosines)."""
    import SimpleITK as sitk

    img = volume_to_sitk(Volume(hu.astype(np.float32), affine))
    sitk.WriteImage(sitk.DICOMOrient(img, "LPS"), str(path))


def _paint_metal(hu: np.ndarray, affine: np.ndarray, metal: tuple[MetalCylinder, ...]) -> None:
    """Voxels within each cylinder's radius of its segment get METAL_HU (in place)."""
    if not metal:
        return
    inv = np.linalg.inv(affine)
    for m in metal:
        a, b = np.asarray(m.start_world_mm, float), np.asarray(m.end_world_mm, float)
        lo_w, hi_w = np.minimum(a, b) - m.diameter_mm, np.maximum(a, b) + m.diameter_mm
        corners = np.array([[x, y, z] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1]) for z in (lo_w[2], hi_w[2])])
        idx = corners @ inv[:3, :3].T + inv[:3, 3]
        lo = np.clip(np.floor(idx.min(0)).astype(int), 0, np.array(hu.shape) - 1)
        hi = np.clip(np.ceil(idx.max(0)).astype(int) + 1, 1, np.array(hu.shape))
        if np.any(hi <= lo):
            continue
        g = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        w = g @ affine[:3, :3].T + affine[:3, 3]
        d = b - a
        t = np.clip(((w - a) @ d) / float(d @ d), 0, 1)
        dist = np.linalg.norm(w - (a + t[:, None] * d), axis=1)
        sel = g[dist <= m.diameter_mm / 2]
        hu[sel[:, 0], sel[:, 1], sel[:, 2]] = METAL_HU


class PlastimatchScene:
    """Like :class:`spinenav.registration.evaluate.TargetScene`, rendered by plastimatch."""

    def __init__(self, ct: Volume, labels: Volume, exe: str, *, motion_margin_mm: float = 25.0):
        self.ct, self.labels, self.exe = ct, labels, exe
        self.margin = motion_margin_mm
        self._tmp = tempfile.TemporaryDirectory(prefix="spinenav-pm-")
        self.workdir = Path(self._tmp.name)
        self.seconds: list[float] = []
        # plastimatch's units -> 1/mm at the target scene's effective energy (110 kVp), through water
        from spinenav.fluoro.drr import Spectrum, linear_attenuation_per_mm

        self.scale = linear_attenuation_per_mm("water", Spectrum(kvp=110.0).kev) / water_units_per_mm(exe)

    def volume_with(self, label_id: int, T_world_from_ct: np.ndarray,
                    metal: tuple[MetalCylinder, ...] = ()) -> np.ndarray:
        """The CT's HU with vertebra ``label_id`` moved by ``T_world_from_ct`` (trilinear); its
        place holds the soft tissue around it, it carries its HU above that level (as
        TargetScene)."""
        hu = np.asarray(self.ct.array, dtype=np.float32)
        lab = np.asarray(self.labels.array)
        mask = lab == label_id
        fill = np.float32(surrounding_soft_tissue_hu(self.ct, self.labels, label_id))
        out = np.where(mask, fill, hu)
        spacing = np.linalg.norm(self.ct.affine[:3, :3], axis=0)
        idx = np.argwhere(mask)
        pad = np.ceil(self.margin / spacing).astype(int)
        lo = np.maximum(idx.min(0) - pad, 0)
        hi = np.minimum(idx.max(0) + pad + 1, np.array(hu.shape))
        grid = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        # output voxel (world w) takes the vertebra's value at inv(T) w, in CT index space
        M = np.linalg.inv(self.ct.affine) @ np.linalg.inv(T_world_from_ct) @ self.ct.affine
        src = grid @ M[:3, :3].T + M[:3, 3]
        vert = np.where(mask, hu - fill, 0.0).astype(np.float32)
        moved = ndimage.map_coordinates(vert, src.T, order=1, mode="constant", cval=0.0)
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += moved.reshape(tuple(hi - lo))
        _paint_metal(out, self.ct.affine, metal)
        return out

    def render(self, label_id: int, T_world_from_ct: np.ndarray, geometry: CarmGeometry, pose: CarmPose, *,
               physics, seed: int = 0) -> np.ndarray:
        """Attenuation-polarity image (-ln I/I0, bone high), ``physics`` as TargetPhysics (blur,
        noise, metal, collimation; its ``method`` is ignored: plastimatch traces the rays)."""
        import time

        t0 = time.perf_counter()
        mha = self.workdir / "scene.mha"
        write_lps_mha(self.volume_with(label_id, np.asarray(T_world_from_ct, float), physics.metal),
                      self.ct.affine, mha)
        L = drr(self.exe, mha, geometry, pose, self.workdir) * self.scale
        img = detected_image(L, physics, seed=seed)
        self.seconds.append(time.perf_counter() - t0)
        return img


def geometry_check(exe: str, geometry: CarmGeometry) -> dict:
    """Beads at known points rendered by plastimatch vs our projection: worst and median residual, px."""
    n = 128
    origin = np.array([-64.0, -64.0, -64.0])
    rng = np.random.default_rng(1)
    pts = rng.integers(-45, 45, (8, 3)).astype(float)
    hu = np.full((n, n, n), -1000.0, np.float32)
    ii, jj, kk = np.mgrid[0:n, 0:n, 0:n]
    for p in pts:
        c = p - origin
        hu[(ii - c[0]) ** 2 + (jj - c[1]) ** 2 + (kk - c[2]) ** 2 <= 2] = 3000.0
    aff = np.eye(4)
    aff[:3, 3] = origin
    res = []
    with tempfile.TemporaryDirectory(prefix="spinenav-pm-") as tmp:
        mha = Path(tmp) / "beads.mha"
        write_lps_mha(hu, aff, mha)
        for prim, sec in ((math.pi, 0.0), (math.pi / 2, 0.0), (math.radians(150), math.radians(20))):
            pose = CarmPose(prim, sec, (3.0, -2.0, 5.0))
            uv = project_points(projection_matrix(geometry, pose), pts)
            a = drr(exe, mha, geometry, pose, Path(tmp))
            lab, k = ndimage.label(a > 0.2 * a.max())
            cs = np.array(ndimage.center_of_mass(a, lab, range(1, k + 1)))[:, ::-1]
            d = np.linalg.norm(uv[:, None] - cs[None], axis=2)
            res.extend(d.min(axis=1).tolist() if k else [math.inf] * len(pts))
    r = np.asarray(res)
    r = r[r < 2.0] if np.any(r < 2.0) else r  # beads whose images merge are not measurable
    return {"beads_px_median": round(float(np.median(r)), 3), "beads_px_max": round(float(r.max()), 3),
            "n": int(r.size)}


def water_units_per_mm(exe: str) -> float:
    """plastimatch's line integral per mm of water (its HU -> attenuation conversion), measured
    through a 100 mm water slab."""
    n = 128
    hu = np.full((n, n, n), -1000.0, np.float32)
    hu[:, 14:114, :] = 0.0  # 100 mm of water along P (j), the AP beam's direction
    aff = np.eye(4)
    aff[:3, 3] = -64.0
    g = CarmGeometry.square(64)
    with tempfile.TemporaryDirectory(prefix="spinenav-pm-") as tmp:
        mha = Path(tmp) / "water.mha"
        write_lps_mha(hu, aff, mha)
        a = drr(exe, mha, g, CarmPose(math.pi, 0.0, (0.0, 0.0, 0.0)), Path(tmp))
    return float(a[28:36, 28:36].mean()) / 100.0
