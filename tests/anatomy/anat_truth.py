"""Compare landmarks and measurements with a phantom's ground truth: one row of errors per
vertebra and per disc (mm, degrees, percent), used by the tests and by the report script."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from spinenav.anatomy.model import SpineModel, VertebraLandmarks
from spinenav.phantom import PhantomParams, PhantomTruth
from spinenav.phantom.chain import build_chain, disc_height_along_normal_mm
from spinenav.phantom.skeleton import build_skeleton
from spinenav.phantom.truth import DISC_EDGE_INSET_MM

#: sampling of the joint plane for the facets' contact centres (mm)
_FACET_STEP_MM = 0.25
_FACET_HALF_MM = 14.0
_FACET_REACH_MM = 2.5  # each articular surface within this of the joint's mid-plane


def _d(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _ang(a, b) -> float:
    return math.degrees(math.acos(float(np.clip(np.dot(a, b), -1.0, 1.0))))


def facet_contact_centres(params: PhantomParams) -> dict[str, np.ndarray]:
    """"level:superior_left" etc. -> world centre of the facet joint: the centroid of the
    overlap of its two articular surfaces seen along the joint's normal (the points of the
    joint's mid-plane with the lower vertebra's bone within _FACET_REACH_MM on one side and
    the upper's on the other; largest connected part), from the phantom's exact solids.

    Why not the truth's design point: `FacetTruth.centre_world_mm` is the point the phantom
    builds the joint plane through (at the height of the mid-disc), not the centre of where
    the two processes face each other; they lie 0.35-1.56 mm apart in the joint plane on the
    default phantom (lumbar 1.0-1.56 mm), 3.25 mm at the pathology phantom's slipped L4-L5.
    And a slipped vertebra's inferior facet truth moves with the vertebra while its
    articular process is clipped by the joint plane of the vertebra below, so that point is
    off the joint by the slip (L4's: 4.6 mm across the joint plane). The landmark is the joint's centre,
    so it is compared with this centre; both facets of a joint share it (the plane and its
    normal are the truth's: the design point lies on the mid-plane).
    """
    return _facet_contact_centres(params.model_dump_json())


@functools.cache
def _facet_contact_centres(params_json: str) -> dict[str, np.ndarray]:
    params = PhantomParams.model_validate_json(params_json)
    sk = build_skeleton(build_chain(params), params)
    names = list(sk.vertebrae)
    ax = np.arange(-_FACET_HALF_MM, _FACET_HALF_MM + _FACET_STEP_MM / 2, _FACET_STEP_MM)
    steps = np.arange(0.0, _FACET_REACH_MM + 1e-9, _FACET_STEP_MM)
    out: dict[str, np.ndarray] = {}
    for up, lo in zip(names[:-1], names[1:]):
        if up not in sk.drawn or lo not in sk.drawn:
            continue
        vu, vl = sk.vertebrae[up], sk.vertebrae[lo]
        for side, (J_l, n_l) in vl.superior_facets_local.items():
            J, n = vl.world(J_l), vl.world_dir(n_l)  # n: from the lower's process to the upper's
            e1 = np.cross(n, vl.world_dir((0.0, 0.0, 1.0)))
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(n, e1)
            u, v = np.meshgrid(ax, ax, indexing="ij")
            plane = J + u[..., None] * e1 + v[..., None] * e2
            flat = plane.reshape(-1, 3)
            hit_u = np.zeros(len(flat), bool)
            hit_l = np.zeros(len(flat), bool)
            for t in steps:
                hit_u |= vu.solid.sdf_points(flat + t * n) <= 0.0
                hit_l |= vl.solid.sdf_points(flat - t * n) <= 0.0
            both = (hit_u & hit_l).reshape(u.shape)
            lab, k = ndimage.label(both, structure=np.ones((3, 3)))
            if k == 0:
                continue
            biggest = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
            c = plane[biggest].mean(axis=0)
            out[f"{lo}:superior_{side}"] = c
            out[f"{up}:inferior_{side}"] = c
    return out


def vertebra_errors(truth: PhantomTruth, lms: dict[int, VertebraLandmarks], *,
                    params: PhantomParams | None = None) -> dict[str, dict[str, float]]:
    """level -> {quantity: error}; distances mm, angles deg, area percent (signed where it says).
    With the phantom's `params`, facet centres are compared with the joints' contact centres
    (see :func:`facet_contact_centres`); without, with the truth's design points."""
    contacts = facet_contact_centres(params) if params is not None else {}
    out: dict[str, dict[str, float]] = {}
    for v in truth.vertebrae:
        lm = lms.get(v.label_id)
        if lm is None or not v.in_field_of_view:
            continue
        T = np.array(v.T_world_from_vertebra)
        e: dict[str, float] = {
            "body_centroid_mm": _d(lm.body_centroid_world_mm, v.centre_world_mm),
            "origin_mm": _d(lm.frame.origin_world_mm, T[:3, 3]),
            "cc_deg": _ang(lm.frame.axis_cc_world, v.axis_cc_world),
            "ap_deg": _ang(lm.frame.axis_ap_world, v.axis_ap_world),
            "lr_deg": _ang(lm.frame.axis_lr_world, v.axis_lr_world),
        }
        for key in ("superior", "inferior"):
            ep, tep = getattr(lm, f"{key}_endplate"), getattr(v, f"{key}_endplate")
            if ep is not None:
                e[f"{key}_endplate_mm"] = _d(ep.centre_world_mm, tep.centre_world_mm)
                e[f"{key}_normal_deg"] = _ang(ep.normal_world, tep.normal_world)
        if lm.canal is not None:
            c = lm.canal
            e["canal_centre_mm"] = _d(c.centre_world_mm, v.canal.centre_world_mm)
            e["canal_area_pct"] = 100.0 * (c.area_mm2 / v.canal.area_mm2 - 1.0)
            e["interpedicular_mm"] = c.interpedicular_mm - v.canal.interpedicular_mm
            if c.ap_diameter_mm is not None:
                e["canal_ap_mm"] = c.ap_diameter_mm - v.canal.ap_diameter_mm
        for side, tp in v.pedicles.items():
            p = lm.pedicles.get(side)
            if p is None:
                continue
            a = np.array(tp.axis_world)
            dv = np.subtract(p.isthmus_centre_world_mm, tp.isthmus_centre_world_mm)
            s = side[0]
            e[f"pedicle_{s}_centre_perp_mm"] = float(np.linalg.norm(dv - (dv @ a) * a))
            e[f"pedicle_{s}_centre_along_mm"] = float(dv @ a)
            e[f"pedicle_{s}_width_mm"] = p.width_mm - tp.width_mm
            e[f"pedicle_{s}_height_mm"] = p.height_mm - tp.height_mm
            e[f"pedicle_{s}_tpa_deg"] = p.transverse_angle_deg - tp.transverse_angle_deg
            e[f"pedicle_{s}_sagittal_deg"] = p.sagittal_angle_deg - tp.sagittal_angle_deg
            e[f"pedicle_{s}_chord_mm"] = p.chord_length_mm - tp.chord_length_mm
        if lm.spinous_tip is not None:
            e["spinous_tip_mm"] = _d(lm.spinous_tip.position_world_mm, v.spinous_tip_world_mm)
        for side, t in v.transverse_process_tips_world_mm.items():
            if side in lm.transverse_process_tips:
                e[f"transverse_tip_{side[0]}_mm"] = _d(lm.transverse_process_tips[side].position_world_mm, t)
        for key, f in v.facets.items():
            if key in lm.facets:
                dv = np.subtract(lm.facets[key].centre_world_mm, contacts.get(f"{v.name}:{key}", f.centre_world_mm))
                n = np.array(f.normal_world)
                e[f"facet_{key}_across_mm"] = abs(float(dv @ n))  # across the joint plane
                e[f"facet_{key}_in_plane_mm"] = float(np.linalg.norm(dv - (dv @ n) * n))
        out[v.name] = e
    return out


def disc_heights_at_bony_edges(params: PhantomParams) -> dict[str, tuple[float, float, float]]:
    """disc name -> true (anterior, middle, posterior) heights (mm) at the points the
    measurement defines: on the lower endplate's mid-sagittal line, DISC_EDGE_INSET_MM inside
    the front and back of its bone (just under the endplate), the middle halfway between.

    Why not `DiscTruth`'s heights: they are taken `DISC_EDGE_INSET_MM` inside the body's
    nominal depth (+-depth / 2 about the frame origin); on the mid-sagittal line the canal
    cuts the back of the body 1.5 mm short of that (default L3: bone from -17.4 to +16.0 mm
    for a 35 mm depth), so its posterior point lies 1.5 mm behind the one 3 mm inside the
    endplate's real posterior edge (~0.2 mm of height, ~3 % at a lordotic lumbar disc)."""
    return _disc_heights_at_bony_edges(params.model_dump_json())


@functools.cache
def _disc_heights_at_bony_edges(params_json: str) -> dict[str, tuple[float, float, float]]:
    params = PhantomParams.model_validate_json(params_json)
    chain = build_chain(params)
    sk = build_skeleton(chain, params)
    ys = np.arange(-40.0, 40.0, 0.02)
    out = {}
    for name, g in chain.discs.items():
        if g.upper not in sk.drawn or g.lower not in sk.drawn:
            continue
        T = chain.T_world_from_superior(g.lower)
        line = np.c_[np.zeros_like(ys), ys, np.full_like(ys, -0.5), np.ones_like(ys)] @ T.T
        inside = sk.vertebrae[g.lower].solid.sdf_points(line[:, :3]) <= 0.0
        lab, _ = ndimage.label(inside)
        run = ys[lab == lab[np.argmin(np.abs(ys))]]  # the run of bone through the centre
        y0, y1 = float(run.min()), float(run.max())
        pts = (y0 + DISC_EDGE_INSET_MM, 0.5 * (y0 + y1), y1 - DISC_EDGE_INSET_MM)
        out[name] = tuple(disc_height_along_normal_mm(chain, name, (0.0, y, 0.0)) for y in pts)
    return out


def disc_errors(truth: PhantomTruth, model: SpineModel, *,
                params: PhantomParams | None = None) -> dict[str, dict[str, float]]:
    """disc name -> {quantity: error}: heights in percent of the truth, angles and slip
    absolute (deg, mm). With the phantom's `params`, heights are compared at the bony edges
    (see :func:`disc_heights_at_bony_edges`); without, with `DiscTruth`'s."""
    edges = disc_heights_at_bony_edges(params) if params is not None else {}
    out: dict[str, dict[str, float]] = {}
    names = {d.name for d in model.discs}
    for d in truth.discs:
        if d.name not in names:
            continue
        m = model.disc(d.name)
        e: dict[str, float] = {}
        for i, k in enumerate(("anterior", "middle", "posterior")):
            got = getattr(m, f"{k}_height_mm")
            want = edges[d.name][i] if d.name in edges else getattr(d, f"{k}_height_mm")
            if got is not None:
                e[f"{k}_height_pct"] = 100.0 * (got / want - 1.0)
                e[f"{k}_height_mm"] = got - want
        if m.segmental_lordosis_deg is not None:
            e["segmental_lordosis_deg"] = m.segmental_lordosis_deg - d.sagittal_angle_deg
            e["coronal_angle_deg"] = m.coronal_angle_deg - d.coronal_angle_deg
        if m.slip_mm is not None:
            e["slip_mm"] = m.slip_mm - d.slip_mm
        out[d.name] = e
    return out


def worst(errors: dict[str, dict[str, float]], key_part: str, *, signed: bool = False) -> tuple[float, str]:
    """Largest |error| of the quantities whose name contains `key_part`: (value, 'level:key')."""
    best = (0.0, "")
    for lvl, e in errors.items():
        for k, v in e.items():
            if key_part in k and abs(v) >= abs(best[0]):
                best = (v if signed else abs(v), f"{lvl}:{k}")
    return best


# ----------------------------------------------------------------------------- report
QUANTITIES = [
    ("body centroid (mm)", "body_centroid_mm"), ("frame origin (mm)", "origin_mm"), ("cc axis (deg)", "cc_deg"),
    ("ap axis (deg)", "ap_deg"), ("endplate centre (mm)", "_endplate_mm"), ("endplate normal (deg)", "_normal_deg"),
    ("canal centre (mm)", "canal_centre_mm"), ("canal area (%)", "canal_area_pct"),
    ("canal AP (mm)", "canal_ap_mm"), ("interpedicular (mm)", "interpedicular_mm"),
    ("isthmus centre, across the axis (mm)", "centre_perp_mm"), ("isthmus centre, along the axis (mm)", "centre_along_mm"),
    ("pedicle width (mm)", "_width_mm"), ("pedicle height (mm)", "_height_mm"), ("TPA (deg)", "tpa_deg"),
    ("pedicle sagittal angle (deg)", "_sagittal_deg"), ("chord (mm)", "chord_mm"), ("spinous tip (mm)", "spinous_tip_mm"),
    ("transverse tips (mm)", "transverse_tip"), ("facet, across the joint (mm)", "across_mm"),
    ("facet, in the joint plane (mm)", "in_plane_mm"),
]
DISC_QUANTITIES = [("disc heights, lumbar (%)", "height_pct"), ("disc heights (mm)", "height_mm"),
                   ("segmental lordosis (deg)", "segmental_lordosis_deg"), ("disc coronal angle (deg)", "coronal_angle_deg"),
                   ("slip (mm)", "slip_mm")]


def report(names=("default", "aniso", "noisy", "scoliosis", "pathology", "small")) -> str:
    """Markdown table of the largest |error| per quantity and phantom variant (and where)."""
    from anat_cases import phantom, phantom_model

    cols = {}
    for n in names:
        ph, sm = phantom(n), phantom_model(n)
        ve = vertebra_errors(ph.truth, {v.label_id: v.landmarks for v in sm.vertebrae}, params=ph.params)
        de = disc_errors(ph.truth, sm, params=ph.params)
        lumbar = {k: v for k, v in de.items() if k.split("-")[0].startswith("L")}
        col = {}
        for title, key in QUANTITIES:
            v, where = worst(ve, key)
            col[title] = f"{v:.2f} ({where.split(':')[0]})" if where else "-"
        for title, key in DISC_QUANTITIES:
            v, where = worst(lumbar if "lumbar" in title else de, key)
            col[title] = f"{v:.2f} ({where.split(':')[0]})" if where else "-"
        tr = ph.truth.curve
        if sm.spine.lumbar_lordosis_deg is not None:
            col["lumbar lordosis (deg)"] = f"{abs(sm.spine.lumbar_lordosis_deg - tr.lordosis_l1_s1_deg):.2f}"
        col["Cobb (deg)"] = f"{abs(sm.spine.cobb_angle_deg - tr.scoliosis_cobb_deg):.2f}"
        for s in ph.truth.slips:
            d = sm.disc(f"{s.level}-{s.over}")
            col["slipped level: slip (mm), grade"] = f"{abs(d.slip_mm - s.slip_mm):.2f}, {d.meyerding_grade} vs {s.meyerding_grade}"
        cols[n] = col
    rows = list(dict.fromkeys(k for c in cols.values() for k in c))
    out = ["| largest abs. error | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        out.append(f"| {r} | " + " | ".join(cols[n].get(r, "") for n in names) + " |")
    return "\n".join(out)


if __name__ == "__main__":  # .venv/bin/python tests/anatomy/anat_truth.py
    print(report())
