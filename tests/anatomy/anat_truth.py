"""Compare landmarks and measurements with a phantom's ground truth: one row of errors per
vertebra and per disc (mm, degrees, percent), used by the tests and by the report script."""

from __future__ import annotations

import math

import numpy as np

from spinenav.anatomy.model import SpineModel, VertebraLandmarks
from spinenav.phantom import PhantomTruth


def _d(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _ang(a, b) -> float:
    return math.degrees(math.acos(float(np.clip(np.dot(a, b), -1.0, 1.0))))


def vertebra_errors(truth: PhantomTruth, lms: dict[int, VertebraLandmarks]) -> dict[str, dict[str, float]]:
    """level -> {quantity: error}; distances mm, angles deg, area percent (signed where it says)."""
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
                dv = np.subtract(lm.facets[key].centre_world_mm, f.centre_world_mm)
                n = np.array(f.normal_world)
                e[f"facet_{key}_across_mm"] = abs(float(dv @ n))  # across the joint plane
                e[f"facet_{key}_in_plane_mm"] = float(np.linalg.norm(dv - (dv @ n) * n))
        out[v.name] = e
    return out


def disc_errors(truth: PhantomTruth, model: SpineModel) -> dict[str, dict[str, float]]:
    """disc name -> {quantity: error}: heights in percent of the truth, angles and slip
    absolute (deg, mm)."""
    out: dict[str, dict[str, float]] = {}
    names = {d.name for d in model.discs}
    for d in truth.discs:
        if d.name not in names:
            continue
        m = model.disc(d.name)
        e: dict[str, float] = {}
        for k in ("anterior", "middle", "posterior"):
            got = getattr(m, f"{k}_height_mm")
            if got is not None:
                e[f"{k}_height_pct"] = 100.0 * (got / getattr(d, f"{k}_height_mm") - 1.0)
                e[f"{k}_height_mm"] = got - getattr(d, f"{k}_height_mm")
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
        ve = vertebra_errors(ph.truth, {v.label_id: v.landmarks for v in sm.vertebrae})
        de = disc_errors(ph.truth, sm)
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
