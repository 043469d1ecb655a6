"""Soft tissues of the phantom: body outline, muscles, canal contents, discs and organs.

Tubes that follow the spine (muscles, the canal's fat and dural sac, the aorta and vena cava)
are chains of :class:`~spinenav.phantom.shapes.SweptEllipse` between stations placed in the
vertebra frames, so they bend with lordosis, scoliosis and slips. The body outline is a
superellipse per axial slice whose back follows the spinous processes and whose width
covers the ribs and iliac crests. All sizes are assumed (typical adult CT anatomy) and scale
with ``PhantomParams.scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinenav.phantom.anatomy import (AUTOCHTHON_LABELS, ILIOPSOAS_LABELS, ORGAN_LABELS, SPINAL_CORD_LABEL,
                                      VERTEBRA_NAMES, Tissue, disc_label)
from spinenav.phantom.chain import T_vertebra_from_inferior, T_vertebra_from_superior
from spinenav.phantom.params import PhantomParams
from spinenav.phantom.shapes import (Ellipsoid, EllipticCylinder, Segment, Solid, SweptEllipse, Union,
                                     apply_point, rot_y, trans)
from spinenav.phantom.skeleton import Skeleton
from spinenav.phantom.vertebra import SIDES

SKIN_MM = 2.0
SUBCUTANEOUS_FAT_MM = 18.0
MUSCLE_WALL_MM = 9.0
BACK_COVER_MM = 28.0  # skin surface behind the spinous process tips
SIDE_COVER_MM = 24.0  # skin surface beyond the ribs
HIP_COVER_MM = 40.0  # skin surface beyond the iliac crests


@dataclass(frozen=True)
class Paint:
    """One structure to draw: its solid, tissue, label (None: unlabelled) and whether it is
    confined to the inside of the body wall (inside the subcutaneous fat)."""

    name: str
    solid: Solid
    tissue: Tissue
    label: int | None = None
    within_core: bool = True


# ----------------------------------------------------------------------------- body outline
@dataclass(frozen=True)
class Torso:
    """Body outline: per axial slice a superellipse |x/a|^p + |(y - yc)/b|^p = 1 (world mm)."""

    z_mm: NDArray[np.float64]
    half_width_mm: NDArray[np.float64]
    half_depth_mm: NDArray[np.float64]
    centre_y_mm: NDArray[np.float64]
    exponent: float = 2.5

    def params_at(self, z):
        zz = np.asarray(z)
        dt = zz.dtype if zz.dtype == np.float32 else np.float64
        return tuple(np.interp(zz, self.z_mm, f).astype(dt)
                     for f in (self.half_width_mm, self.half_depth_mm, self.centre_y_mm))

    def sdf(self, x, y, z):
        """Approximate distance to the outline (mm, negative inside) for broadcast x (n,1,1),
        y (1,m,1), z (1,1,k): one Newton step on the implicit function, exact sign."""
        a, b, yc = self.params_at(z)
        p = self.exponent
        u = np.abs(x) / a
        v = np.abs(y - yc) / b
        up, vp = u ** p, v ** p  # 2D (x, z) and (y, z)
        gu = p * u ** (p - 1) / a
        gv = p * v ** (p - 1) / b
        s = up + vp - 1.0
        g = np.sqrt(gu * gu + gv * gv)
        return s / np.maximum(g, 1e-3)


def build_torso(sk: Skeleton, params: PhantomParams, z_lo: float, z_hi: float) -> Torso:
    """Outline covering the bones: back behind the spinous processes (and the sacrum and
    posterior iliac spines), sides beyond ribs and iliac crests."""
    sc = params.scale
    post: list[tuple[float, float]] = []  # (z, y) of posterior bone landmarks
    for name in VERTEBRA_NAMES:
        v = sk.vertebrae[name]
        tip = v.world(v.spinous_tip_local_mm)
        post.append((tip[2], tip[1]))
    for _, T_c, H in sk.sacrum_segments:
        p = apply_point(T_c, (0.0, 30.0 * sc, 0.0))
        post.append((p[2], p[1]))
    post.sort()
    pz = np.array([p[0] for p in post])
    py = np.array([p[1] for p in post])
    zs = np.arange(z_lo - 40.0, z_hi + 40.0, 4.0)
    y_back = np.interp(zs, pz, py) + BACK_COVER_MM * sc
    width = np.full_like(zs, 150.0 * sc)
    for rib in sk.ribs:  # ribs: only near their own height
        for q in rib.centreline_world_mm:
            near = np.abs(zs - q[2]) <= 30.0 * sc
            width[near] = np.maximum(width[near], abs(q[0]) + SIDE_COVER_MM * sc)
    for crest in sk.iliac_crest_world_mm.values():  # the pelvis widens below the crest
        for q in crest:
            near = (zs <= q[2] + 30.0 * sc) & (zs >= q[2] - 200.0 * sc)
            width[near] = np.maximum(width[near], abs(q[0]) + HIP_COVER_MM * sc)
    width = _smooth(width, 5)
    y_back = _smooth(y_back, 3)
    depth = np.full_like(zs, 122.0 * sc)
    return Torso(zs, width, depth, y_back - depth)


def _smooth(a: NDArray, n: int) -> NDArray:
    k = np.ones(2 * n + 1) / (2 * n + 1)
    pad = np.pad(a, n, mode="edge")
    return np.convolve(pad, k, mode="valid")


# ----------------------------------------------------------------------------- tubes
def _tube(stations: list[tuple[NDArray, tuple[float, float, float, float]]]) -> Solid:
    """Union of swept ellipses between consecutive stations (caudal first, frames z cranial)."""
    segs = [SweptEllipse(Ta, Tb, ea, eb) for (Ta, ea), (Tb, eb) in zip(stations[:-1], stations[1:])]
    return Union(segs)


def _stations(sk: Skeleton, table: dict[str, tuple[float, float, float, float]], *, side: float,
              above: tuple[float, tuple] | None = None,
              below: tuple[NDArray, tuple] | None = None) -> list:
    """Stations at the body centres of the levels in `table` ((cx, cy, a, b) in the vertebra
    frame, cx mirrored by `side`), caudal first."""
    out = []
    if below is not None:
        T_rel, e = below
        out.append((sk.vertebrae["S1"].T_world_from_vertebra @ T_rel, (side * e[0], *e[1:])))
    for name in reversed(VERTEBRA_NAMES):
        if name in table:
            e = table[name]
            out.append((sk.vertebrae[name].T_world_from_vertebra, (side * e[0], *e[1:])))
    if above is not None:
        dz, e = above
        top = next(n for n in VERTEBRA_NAMES if n in table)
        out.append((sk.vertebrae[top].T_world_from_vertebra @ trans(0, 0, dz), (side * e[0], *e[1:])))
    return out


def _muscles(sk: Skeleton, sc: float) -> list[Paint]:
    out: list[Paint] = []
    v = sk.vertebrae

    def back(name, x, off, a, b):  # autochthon relative to the canal
        vm = v[name]
        return (x * sc, vm.canal_centre_local_mm[1] + vm.canal_b_nominal_mm + off * sc, a * sc, b * sc)

    auto = {"T10": back("T10", 26, 14, 22, 17), "T11": back("T11", 28, 15, 24, 18),
            "T12": back("T12", 30, 16, 26, 19), "L1": back("L1", 33, 17, 29, 21),
            "L2": back("L2", 35, 17, 31, 22), "L3": back("L3", 36, 17, 32, 23),
            "L4": back("L4", 36, 16, 32, 23), "L5": back("L5", 34, 14, 30, 21),
            "S1": back("S1", 29, 10, 24, 14)}
    y_s1 = v["S1"].canal_centre_local_mm[1] + v["S1"].canal_b_nominal_mm
    for side, s in SIDES.items():
        st = _stations(sk, auto, side=s, above=(35.0 * sc, auto["T10"]),
                       below=(trans(0, 5.0 * sc, -45.0 * sc), (22 * sc, y_s1 + 6 * sc, 15 * sc, 7 * sc)))
        out.append(Paint(f"autochthon_{side}", _tube(st), Tissue.MUSCLE, AUTOCHTHON_LABELS[side]))

    def lat(name, dx, cy, a, b):
        return (v[name].dims.body_width_mm / 2 + dx * sc, cy * sc, a * sc, b * sc)

    psoas = {"T12": lat("T12", 1, 2, 4, 5), "L1": lat("L1", 4, 0, 8, 9), "L2": lat("L2", 8, -2, 11, 13),
             "L3": lat("L3", 12, -4, 14, 16), "L4": lat("L4", 16, -7, 17, 19),
             "L5": lat("L5", 21, -11, 19, 21), "S1": lat("S1", 34, -24, 20, 21)}
    ql = {"T12": lat("T12", 22, 14, 5, 4), "L1": lat("L1", 26, 16, 9, 7), "L2": lat("L2", 30, 17, 11, 8),
          "L3": lat("L3", 32, 18, 12, 8), "L4": lat("L4", 30, 18, 11, 7), "L5": lat("L5", 28, 16, 8, 5)}
    for side, s in SIDES.items():
        st = _stations(sk, psoas, side=s, below=(trans(0, -20.0 * sc, -55.0 * sc),
                                                 lat("S1", 55, -30, 21, 22)))
        out.append(Paint(f"iliopsoas_{side}", _tube(st), Tissue.MUSCLE, ILIOPSOAS_LABELS[side]))
        out.append(Paint(f"quadratus_lumborum_{side}", _tube(_stations(sk, ql, side=s)), Tissue.MUSCLE))
    return out


def _canal_contents(sk: Skeleton, sc: float) -> list[Paint]:
    """Epidural fat filling each drawn vertebra's bony canal (and the spaces between them) and
    the dural sac inside it (label 79, 'spinal_cord': the whole sac)."""
    drawn = [n for n in sk.drawn]
    fat: list[Solid] = []
    sac: list[Solid] = []

    def ellipses(name):
        """Canal (fat) and sac ellipses: the fat fills the canal's AP extent (its anterior
        half-ellipse is exact; the bone carves the rest), the sac sits inside with >= 1 mm of
        fat behind and in front."""
        vm = sk.vertebrae[name]
        A, Bp, Bn, y_c = vm.canal_a_mm, vm.canal_b_mm, vm.canal_b_nominal_mm, vm.canal_centre_local_mm[1]
        half = (Bn + Bp) / 2
        y_m = y_c + (Bp - Bn) / 2
        b_sac = max(min(0.8 * Bn, half - 1.0 * sc), 0.6 * sc)
        a_sac = 0.72 * A
        while not _inside_canal(a_sac, b_sac, y_m, A, Bn, Bp, y_c) and b_sac > 0.6 * sc:
            a_sac, b_sac = 0.95 * a_sac, 0.95 * b_sac
        return (0.0, y_c, A, Bn), (0.0, y_m, a_sac, b_sac)

    for i, name in enumerate(drawn):
        vm = sk.vertebrae[name]
        T = vm.T_world_from_vertebra
        H = vm.dims.body_height_mm
        ef, es = ellipses(name)
        fat.append(EllipticCylinder(T, ef[2], ef[3], -H / 2, H / 2, ef[:2]))
        sac.append(EllipticCylinder(T, es[2], es[3], -H / 2, H / 2, es[:2]))
        # towards the next vertebra down, or beyond the ends of the drawn range
        T_bot = T @ trans(0, 0, -H / 2)
        if i + 1 < len(drawn):
            low = sk.vertebrae[drawn[i + 1]]
            fl, sl = ellipses(low.name)
            T_top = low.T_world_from_vertebra @ trans(0, 0, low.dims.body_height_mm / 2)
            fat.append(SweptEllipse(T_top, T_bot, fl, ef))
            sac.append(SweptEllipse(T_top, T_bot, sl, es))
        elif name != "S1":
            fat.append(SweptEllipse(T_bot @ trans(0, 0, -30 * sc), T_bot, ef, ef))
            sac.append(SweptEllipse(T_bot @ trans(0, 0, -30 * sc), T_bot, es, es))
        if i == 0:
            T_up = T @ trans(0, 0, H / 2)
            fat.append(SweptEllipse(T_up, T_up @ trans(0, 0, 30 * sc), ef, ef))
            sac.append(SweptEllipse(T_up, T_up @ trans(0, 0, 30 * sc), es, es))
    if "S1" in drawn:  # sacral canal: fat all the way, the sac ends at S2
        prev_T = sk.vertebrae["S1"].T_world_from_vertebra @ trans(0, 0, -sk.vertebrae["S1"].dims.body_height_mm / 2)
        _, es1 = ellipses("S1")
        prev_e = ellipses("S1")[0]
        for k, (T_c, A, B, y_c, H) in enumerate(sk.sacral_canals):
            e = (0.0, y_c, A, B)
            T_top = T_c @ trans(0, 0, H / 2)
            fat.append(SweptEllipse(T_top, prev_T, e, prev_e))
            fat.append(EllipticCylinder(T_c, A, B, -H / 2, H / 2, (0.0, y_c)))
            if k == 0:
                sac.append(SweptEllipse(T_top, prev_T, (0.0, y_c, 0.5 * A, 0.6 * B), es1))
            prev_T, prev_e = T_c @ trans(0, 0, -H / 2), e
    return [Paint("epidural_fat", Union(fat), Tissue.EPIDURAL_FAT, None, within_core=False),
            Paint("dural_sac", Union(sac), Tissue.CSF, SPINAL_CORD_LABEL, within_core=False)]


def _inside_canal(a_s, b_s, y_s, A, Bn, Bp, y_c, margin=0.8) -> bool:
    """Whether the sac ellipse (a_s, b_s at y_s) lies inside the canal (anterior half-ellipse
    B_n, posterior B_p, centre y_c) with `margin` mm to spare (sampled check)."""
    t = np.linspace(0, 2 * np.pi, 90)
    x, y = (a_s + margin) * np.cos(t), y_s + (b_s + margin) * np.sin(t)
    b = np.where(y >= y_c, Bp, Bn)
    return bool(np.all((x / A) ** 2 + ((y - y_c) / b) ** 2 <= 1.0))


def disc_solid(sk: Skeleton, disc_name: str) -> Solid:
    """The disc between two endplates: the lower endplate ellipse blending into the upper's,
    bulging 3% at mid-height."""
    up, low = disc_name.split("-")
    vu, vl = sk.vertebrae[up], sk.vertebrae[low]
    T_lo = vl.T_world_from_vertebra @ T_vertebra_from_superior(vl.dims)
    T_up = vu.T_world_from_vertebra @ T_vertebra_from_inferior(vu.dims)
    return SweptEllipse(T_lo, T_up, (0, 0, vl.dims.body_width_mm / 2, vl.dims.body_depth_mm / 2),
                        (0, 0, vu.dims.body_width_mm / 2, vu.dims.body_depth_mm / 2), bulge=0.03)


def _discs(sk: Skeleton) -> list[Paint]:
    out = []
    for up, low in zip(sk.drawn[:-1], sk.drawn[1:]):
        name = f"{up}-{low}"
        out.append(Paint(f"disc_{name}", disc_solid(sk, name), Tissue.DISC, disc_label(name), within_core=False))
    return out


def _vessels(sk: Skeleton, sc: float) -> list[Paint]:
    v = sk.vertebrae

    def front(name, cx, gap, a, b):
        return (cx * sc, -(v[name].dims.body_depth_mm / 2 + gap * sc), a * sc, b * sc)

    aorta = {n: front(n, 9, 14, 11, 11) for n in ("T10", "T11", "T12", "L1", "L2", "L3", "L4")}
    ivc = {n: front(n, -21, 11, 13, 9) for n in ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")}
    out = [Paint("aorta", _tube(_stations(sk, aorta, side=1.0, above=(40.0 * sc, aorta["T10"]))), Tissue.BLOOD,
                 ORGAN_LABELS["aorta"]),
           Paint("inferior_vena_cava", _tube(_stations(sk, ivc, side=1.0, above=(40.0 * sc, ivc["T10"]))),
                 Tissue.BLOOD, ORGAN_LABELS["inferior_vena_cava"])]
    # common iliac arteries and veins (unlabelled)
    fork = v["L4"].world(aorta["L4"][:2] + (0.0,))
    vfork = v["L5"].world(ivc["L5"][:2] + (0.0,))
    s1 = v["S1"]
    iliac = []
    for s in (1.0, -1.0):
        a1 = v["L5"].world((s * 24 * sc, -(v["L5"].dims.body_depth_mm / 2 + 16 * sc), -5 * sc))
        a2 = s1.world((s * 55 * sc, -40 * sc, -35 * sc))
        iliac += [Segment(fork, a1, 7 * sc, 6.5 * sc), Segment(a1, a2, 6.5 * sc, 6 * sc)]
        b1 = s1.world((s * 35 * sc, -(s1.dims.body_depth_mm / 2 + 8 * sc), 5 * sc))
        b2 = s1.world((s * 58 * sc, -30 * sc, -35 * sc))
        iliac += [Segment(vfork, b1, 8 * sc, 7.5 * sc), Segment(b1, b2, 7.5 * sc, 7 * sc)]
    out.append(Paint("iliac_vessels", Union(iliac), Tissue.BLOOD))
    return out


def _organs(sk: Skeleton, params: PhantomParams, rng: np.random.Generator) -> list[Paint]:
    sc = params.scale
    v = sk.vertebrae
    out: list[Paint] = []

    def at(name, off, radii, tilt_deg=0.0):
        c = v[name].T_world_from_vertebra[:3, 3] + np.asarray(off, float) * sc
        return Ellipsoid(trans(*c) @ rot_y(math.radians(tilt_deg)), np.asarray(radii, float) * sc)

    out.append(Paint("liver", at("T11", (-72, -75, 5), (88, 82, 95)), Tissue.LIVER, ORGAN_LABELS["liver"]))
    out.append(Paint("spleen", at("T11", (82, -5, -5), (28, 48, 55)), Tissue.SPLEEN, ORGAN_LABELS["spleen"]))
    # bowel loops, seeded
    l1, s1 = v["L1"].T_world_from_vertebra[:3, 3], v["S1"].T_world_from_vertebra[:3, 3]
    y_front = min(v[n].T_world_from_vertebra[1, 3] - v[n].dims.body_depth_mm / 2 for n in ("L2", "L3", "L4"))
    loops = []
    gas = []
    for _ in range(30):
        c = np.array([rng.uniform(-105, 105) * sc, y_front - rng.uniform(40, 140) * sc, rng.uniform(s1[2], l1[2])])
        r = rng.uniform(13, 24) * sc * np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.2)])
        loops.append(Ellipsoid(trans(*c), r))
        if rng.uniform() < 0.3:
            gas.append(Ellipsoid(trans(*c), 0.45 * r))
    out.append(Paint("bowel", Union(loops), Tissue.BOWEL))
    if gas:
        out.append(Paint("bowel_gas", Union(gas), Tissue.BOWEL_GAS))
    out.append(Paint("kidney_right", at("L2", (-74, 10, 2), (27, 24, 55), -12), Tissue.KIDNEY,
                     ORGAN_LABELS["kidney_right"]))
    out.append(Paint("kidney_left", at("L1", (74, 10, 0), (27, 24, 55), 12), Tissue.KIDNEY,
                     ORGAN_LABELS["kidney_left"]))
    return out


def soft_tissue_paints(sk: Skeleton, params: PhantomParams, rng: np.random.Generator) -> list[Paint]:
    """Everything but the body outline and the bones, in painting order (later wins)."""
    sc = params.scale
    out: list[Paint] = []
    if params.organs:
        out += _organs(sk, params, rng)
    out += _vessels(sk, sc)
    out += _muscles(sk, sc)
    out += _canal_contents(sk, sc)
    out += _discs(sk)
    return out
