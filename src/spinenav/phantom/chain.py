"""The spine as a chain of vertebra frames, built from S1 upwards.

Each vertebra has a frame ``T_world_from_vertebra``: origin at the body centre (midway between
the endplate centres), x (lr) towards the patient's left, y (ap) posterior, z (cc) cranial;
for an upright, straight spine it equals the LPS world axes. S1 is the root: it is tilted
forward by the sacral slope, and its superior endplate centre is the world origin.

Across each disc the upper vertebra's inferior endplate frame is::

    T_world_from_upper_inf = T_world_from_lower_sup @ trans(0, -slip, 0)
                             @ R_half @ trans(0, 0, d) @ R_half,
    R_half = rot_x(-sagittal / 2) @ rot_y(coronal / 2)

so `d` is the height along the disc's bisector, a lordotic (positive) `sagittal` angle opens
the disc anteriorly, a positive `coronal` angle tilts the upper spine towards the patient's
left, and a slip translates the upper vertebra (and everything above) anteriorly along the
lower vertebra's superior endplate (the Meyerding direction; for the wedged L5 this differs
from L5's ap axis by half its wedge), shearing the disc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from spinenav.phantom.anatomy import (DISC_HEIGHT_MM, DISC_NAMES, KYPHOSIS_DISCS, LEVELS,
                                      LORDOSIS_SHARE, MIN_DISC_HEIGHT_MM, VERTEBRA_NAMES, LevelDims)
from spinenav.phantom.params import PhantomParams
from spinenav.phantom.shapes import apply_dir, apply_point, rot_x, rot_y, trans

_LENGTH_FIELDS = ("body_width_mm", "body_depth_mm", "body_height_mm", "pedicle_width_mm",
                  "pedicle_height_mm", "canal_width_mm", "canal_ap_mm", "tp_reach_mm",
                  "spinous_length_mm", "spinous_height_mm")


def scaled_dims(name: str, scale: float) -> LevelDims:
    """The level's design dimensions with every length multiplied by `scale`."""
    d = LEVELS[name]
    return replace(d, **{f: getattr(d, f) * scale for f in _LENGTH_FIELDS})


def T_vertebra_from_superior(dims: LevelDims) -> NDArray[np.float64]:
    """Superior endplate frame in the vertebra frame: origin at the endplate centre, z the
    outward (cranial) normal."""
    return trans(0, 0, dims.body_height_mm / 2) @ rot_x(-math.radians(dims.body_wedge_deg) / 2)


def T_vertebra_from_inferior(dims: LevelDims) -> NDArray[np.float64]:
    """Inferior endplate frame in the vertebra frame: origin at the endplate centre, z the
    inward (cranial) normal, so both endplate frames of a disc point cranially."""
    return trans(0, 0, -dims.body_height_mm / 2) @ rot_x(math.radians(dims.body_wedge_deg) / 2)


@dataclass(frozen=True)
class DiscGeometry:
    """One intervertebral disc as generated (radians and mm)."""

    name: str
    upper: str
    lower: str
    sagittal_rad: float  # lordotic (opens anteriorly) > 0
    coronal_rad: float  # tilts the upper spine to the patient's left > 0
    slip_mm: float
    mid_height_mm: float  # along the disc bisector, after height loss
    height_loss: float


@dataclass(frozen=True)
class SpineChain:
    """Frames of every modelled vertebra (T10 to S1), as generated and without slips."""

    dims: dict[str, LevelDims]
    T_world_from_vertebra: dict[str, NDArray[np.float64]]
    T_world_from_vertebra_unslipped: dict[str, NDArray[np.float64]]
    discs: dict[str, DiscGeometry]

    def T_world_from_superior(self, name: str) -> NDArray[np.float64]:
        return self.T_world_from_vertebra[name] @ T_vertebra_from_superior(self.dims[name])

    def T_world_from_inferior(self, name: str) -> NDArray[np.float64]:
        return self.T_world_from_vertebra[name] @ T_vertebra_from_inferior(self.dims[name])


def _rim_min_height_mm(mid_mm: float, sagittal_rad: float, coronal_rad: float, slip_mm: float,
                       a_mm: float, b_mm: float) -> float:
    """Smallest height around the rim of a lower endplate (ellipse a x b) for one disc in
    isolation (lower endplate = local z = 0), along the lower normal (mm)."""
    half = rot_x(-sagittal_rad / 2) @ rot_y(coronal_rad / 2)
    T_up = trans(0, -slip_mm, 0) @ half @ trans(0, 0, mid_mm) @ half
    m, q = T_up[:3, 2], T_up[:3, 3]
    ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    p = np.stack([a_mm * np.cos(ang), b_mm * np.sin(ang), np.zeros_like(ang)], axis=1)
    return float((((q - p) @ m) / m[2]).min())


def _max_wedge_rad(mid_mm, sign, coronal_rad, slip_mm, a_mm, b_mm) -> float:
    """Largest sagittal wedge (rad, of the given sign) that leaves the rim >= the minimum
    height plus 0.5 mm."""
    floor = MIN_DISC_HEIGHT_MM + 0.5
    if _rim_min_height_mm(mid_mm, 0.0, coronal_rad, slip_mm, a_mm, b_mm) < floor:
        return 0.0
    lo, hi = 0.0, math.radians(40.0)
    for _ in range(40):
        m = 0.5 * (lo + hi)
        if _rim_min_height_mm(mid_mm, sign * m, coronal_rad, slip_mm, a_mm, b_mm) >= floor:
            lo = m
        else:
            hi = m
    return lo


def _share_out(total_rad: float, shares: dict[str, float], cap_rad: dict[str, float]) -> dict[str, float]:
    """Split `total_rad` by `shares`, capping each disc at `cap_rad` and handing what a capped
    disc cannot take to the others (in proportion to their shares)."""
    out: dict[str, float] = {}
    free = dict(shares)
    left = total_rad
    while free:
        norm = sum(free.values())
        over = {d: sh for d, sh in free.items() if abs(left * sh / norm) > cap_rad[d]}
        if not over:
            out.update({d: left * sh / norm for d, sh in free.items()})
            return out
        for d in over:
            out[d] = math.copysign(cap_rad[d], left)
            left -= out[d]
            del free[d]
    if abs(left) > 1e-9:
        raise ValueError(
            f"the discs {', '.join(shares)} cannot carry {math.degrees(total_rad):.1f} deg between them "
            f"with their heights ({math.degrees(left):.1f} deg left over); reduce disc_height_loss or "
            "lordosis_deg/kyphosis_deg")
    return out


def _sagittal_angles(params: PhantomParams, dims: dict[str, LevelDims], mid_mm: dict[str, float],
                     coronal: dict[str, float]) -> dict[str, float]:
    """Disc sagittal angles (rad, lordotic > 0): lumbar discs share the L1-S1 lordosis left
    after the body wedges (LORDOSIS_SHARE), T10-T11 to T12-L1 share the kyphosis equally. A
    disc too thin for its share (height loss) takes what it can; the others take the rest."""
    wedges_deg = sum(LEVELS[n].body_wedge_deg for n in ("L1", "L2", "L3", "L4", "L5"))
    groups = ((math.radians(params.lordosis_deg - wedges_deg), LORDOSIS_SHARE),
              (-math.radians(params.kyphosis_deg), {d: 1.0 for d in KYPHOSIS_DISCS}))
    out: dict[str, float] = {}
    for total, shares in groups:
        sign = 1.0 if total >= 0 else -1.0
        cap = {}
        for d in shares:
            low = dims[d.split("-")[1]]
            cap[d] = _max_wedge_rad(mid_mm[d], sign, coronal[d], params.slip_mm.get(d.split("-")[0], 0.0),
                                    low.body_width_mm / 2, low.body_depth_mm / 2)
        out.update(_share_out(total, shares, cap))
    return out


def _coronal_angles(params: PhantomParams) -> dict[str, float]:
    """Disc coronal angles (rad) of a single curve of Cobb angle `scoliosis_deg` centred on
    `scoliosis_apex`, with half the Cobb angle undone by the discs above and below the curve."""
    out = {d: 0.0 for d in DISC_NAMES}
    cobb = math.radians(params.scoliosis_deg)
    if cobb == 0.0:
        return out
    apex = VERTEBRA_NAMES.index(params.scoliosis_apex)
    hs = params.scoliosis_half_span
    # disc k lies between vertebrae k and k+1 (cranial first): position k + 0.5
    weights = {DISC_NAMES[k]: hs - abs(k + 0.5 - apex) for k in range(len(DISC_NAMES))}
    curve = {d: w for d, w in weights.items() if w > 0}
    total = sum(curve.values())
    first = min(DISC_NAMES.index(d) for d in curve)
    last = max(DISC_NAMES.index(d) for d in curve)
    above = DISC_NAMES[:first]
    below = DISC_NAMES[last + 1:]
    # The chain is built caudal to cranial; R_y(+) tilts the upper spine to the patient's left.
    # A curve convex to the right bends to the left going up: positive within the curve.
    for d, w in curve.items():
        out[d] = cobb * w / total
    for group in (above, below):
        for d in group:
            out[d] = -0.5 * cobb / len(group)
    return out


def build_chain(params: PhantomParams) -> SpineChain:
    """Frames of T10-S1 for `params` (always the whole chain; `levels` only selects what is
    drawn, so a vertebra sits in the same place whichever levels are drawn).

    Raises
    ------
    ValueError
        When a disc would be thinner than MIN_DISC_HEIGHT_MM somewhere (too much lordosis,
        scoliosis or height loss for that disc) or a slip exceeds Meyerding grade II.
    """
    dims = {n: scaled_dims(n, params.scale) for n in VERTEBRA_NAMES}
    mid = {d: DISC_HEIGHT_MM[d] * params.scale * (1.0 - params.disc_height_loss.get(d, 0.0)) for d in DISC_NAMES}
    cor = _coronal_angles(params)
    sag = _sagittal_angles(params, dims, mid, cor)
    discs: dict[str, DiscGeometry] = {}
    for i, name in enumerate(DISC_NAMES):
        upper, lower = VERTEBRA_NAMES[i], VERTEBRA_NAMES[i + 1]
        loss = params.disc_height_loss.get(name, 0.0)
        slip = params.slip_mm.get(upper, 0.0)
        if slip > 0.5 * dims[lower].body_depth_mm:
            raise ValueError(
                f"slip_mm[{upper!r}] = {slip} mm is {100 * slip / dims[lower].body_depth_mm:.0f}% of "
                f"{lower}'s endplate ({dims[lower].body_depth_mm:.1f} mm): beyond Meyerding grade II, "
                "which the phantom does not model")
        discs[name] = DiscGeometry(name, upper, lower, sag[name], cor[name], slip, mid[name], loss)

    def chain(with_slip: bool) -> dict[str, NDArray[np.float64]]:
        T = {"S1": rot_x(params.sacral_slope_rad) @ trans(0, 0, -dims["S1"].body_height_mm / 2)}
        for i in range(len(DISC_NAMES) - 1, -1, -1):
            disc = discs[DISC_NAMES[i]]
            T_world_from_lower_sup = T[disc.lower] @ T_vertebra_from_superior(dims[disc.lower])
            half = rot_x(-disc.sagittal_rad / 2) @ rot_y(disc.coronal_rad / 2)
            slip = disc.slip_mm if with_slip else 0.0
            T_world_from_upper_inf = (T_world_from_lower_sup @ trans(0, -slip, 0) @ half
                                      @ trans(0, 0, disc.mid_height_mm) @ half)
            T[disc.upper] = T_world_from_upper_inf @ np.linalg.inv(T_vertebra_from_inferior(dims[disc.upper]))
        return {n: T[n] for n in VERTEBRA_NAMES}

    out = SpineChain(dims, chain(True), chain(False), discs)
    for name in DISC_NAMES:
        lo_mm = min_disc_height_mm(out, name)
        if lo_mm < MIN_DISC_HEIGHT_MM:
            d = discs[name]
            raise ValueError(
                f"disc {name} would be {lo_mm:.1f} mm thin at its edge (minimum "
                f"{MIN_DISC_HEIGHT_MM} mm): its {d.mid_height_mm:.1f} mm height (loss "
                f"{d.height_loss:.0%}) cannot take a {math.degrees(d.sagittal_rad):.1f} deg "
                f"sagittal and {math.degrees(d.coronal_rad):.1f} deg coronal wedge; reduce "
                "disc_height_loss, lordosis_deg/kyphosis_deg or scoliosis_deg")
    return out


def disc_height_along_normal_mm(chain: SpineChain, disc_name: str, point_lower_sup_mm) -> float:
    """Distance from a point on the lower endplate (given in the lower endplate frame, z = 0),
    along that endplate's normal, to the upper vertebra's inferior endplate plane (mm)."""
    d = chain.discs[disc_name]
    T_lo = chain.T_world_from_superior(d.lower)
    T_up = chain.T_world_from_inferior(d.upper)
    p = apply_point(T_lo, point_lower_sup_mm)
    n = apply_dir(T_lo, (0.0, 0.0, 1.0))
    q = T_up[:3, 3]
    m = apply_dir(T_up, (0.0, 0.0, 1.0))
    return float(((q - p) @ m) / (n @ m))


def min_disc_height_mm(chain: SpineChain, disc_name: str) -> float:
    """Smallest endplate-to-endplate height around the rim of the lower endplate (mm)."""
    d = chain.discs[disc_name]
    a = chain.dims[d.lower].body_width_mm / 2
    b = chain.dims[d.lower].body_depth_mm / 2
    ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return min(disc_height_along_normal_mm(chain, disc_name, (a * math.cos(t), b * math.sin(t), 0.0))
               for t in ang)
