"""One self-contained HTML page per surgical plan, for a surgeon who never opens the JSON.

:func:`render_plan_report` reads a :class:`~spinenav.planning.plan.SurgicalPlan`, the CT it
was made on and the label map, draws the figures (:mod:`spinenav.app.report.figures`) and
fills ``templates/plan.html.j2``. The page has no external resource (images are PNG data
URIs, the style sheet is inline, there is no script), so it can be mailed or archived as one
file and opened offline.

What it shows: the procedures, levels and sides; an overall status; a summary table; every
flag of the plan and every anatomical finding in plain words (critical first); per screw two
oblique reformats along it and its numbers; rods; access corridors; TLIF cages; the incisions
on the patient's back; the tissue comparison; the measurements per level; the parameters and
definitions. Results the planner doubted are marked in words and colour ("CHECK", "NOT SAFE"),
never only by colour.

No patient identifiers: the plan carries none (a hash of the voxels identifies the CT), the
report prints no file name, no path and no date, and free text taken from the plan is passed
through :func:`scrub_paths` so a file name that happens to hold a patient's name cannot leak.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

import spinenav
from spinenav.anatomy.export import DOUBTFUL_CONFIDENCE
from spinenav.app.report import figures as F
from spinenav.atomic import write_text_atomic
from spinenav.errors import SpinenavError
from spinenav.imaging.volume import Volume
from spinenav.planning.plan import Corridor, PlanFlag, Screw, SurgicalPlan, ct_fingerprint

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "plan.html.j2"

#: Plain-words names of the procedures, as a surgeon says them.
PROCEDURE_NAMES = {
    "screws": "percutaneous pedicle screws",
    "microdiscectomy": "tubular microdiscectomy",
    "decompression": "tubular decompression",
    "tlif": "MIS TLIF (transforaminal lumbar interbody fusion)",
}
TARGET_NAMES = {
    "disc_space": "disc space",
    "lateral_recess": "lateral recess",
    "interlaminar_window": "interlaminar window",
    "kambin_triangle": "Kambin's triangle",
}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "severe": 1, "moderate": 2, "mild": 3, "info": 4}

_EXT = r"(?:nii\.gz|nii|nrrd|nhdr|mha|mhd|dcm|json|csv|stl|png|html|txt|gz|zip)"
_PATH_RE = re.compile(
    r"(?<![\w.\-])(?:[A-Za-z]:[/\\]|[/\\~])[^\s'\",;()\[\]]+"  # absolute: /x, ~/x, C:\\x
    r"|[\w.\-]+(?:[/\\][\w.\-]+){2,}[/\\]?"  # relative, two folders or more (not "L/R")
    rf"|(?:[\w.\-]+[/\\])?[\w.\-]+\.{_EXT}\b",  # a file name, maybe in one folder
    re.IGNORECASE)


class ReportError(SpinenavError):
    """The report cannot be made from these inputs (the message says which and why)."""


def scrub_paths(text: str) -> str:
    """Replace file names and paths in free text by "[file]" (they may hold a patient's name).

    >>> scrub_paths("could not read /data/DOE_JANE/labels.nii.gz; used ct.nrrd")
    'could not read [file]; used [file]'
    """
    # a sentence's full stop after a path is not part of it
    return _PATH_RE.sub(lambda m: "[file]" + ("." if m.group(0).endswith(".") else ""), text)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("png_data_uri: the bytes are not a PNG image")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ----------------------------------------------------------------------------- formatting
def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    """A number for a table cell: fixed digits and unit; "—" for a missing value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) and digits == 0:
        text = f"{int(value)}"
    else:
        text = f"{float(value):.{digits}f}"
        if text.startswith("-") and float(text) == 0.0:
            text = text[1:]  # "-0.0" reads as a sign that is not there
    return f"{text} {unit}".rstrip() if unit else text


def fmt_point(p: Sequence[float] | None) -> str:
    if p is None:
        return "—"
    return "(" + ", ".join(f"{float(x):.1f}" for x in p) + ") mm"


# ----------------------------------------------------------------------------- status
@dataclass
class Status:
    """How much to trust an item: "ok", "check" (doubtful) or "unsafe", with the reasons."""

    level: str = "ok"
    reasons: list[str] = field(default_factory=list)

    def worse(self, level: str, reason: str) -> None:
        rank = {"ok": 0, "check": 1, "unsafe": 2}
        if rank[level] > rank[self.level]:
            self.level = level
        reason = reason.strip().rstrip(".")
        if reason and reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def label(self) -> str:
        return {"ok": "OK", "check": "CHECK", "unsafe": "NOT SAFE"}[self.level]

    @property
    def figure_status(self) -> str:
        return {"ok": "ok", "check": "doubtful", "unsafe": "unsafe"}[self.level]


def _item_status(confidence: float | None, flags: Iterable[PlanFlag], codes: Iterable[str],
                 reason: str | None) -> Status:
    st = Status()
    for f in flags:
        if f.severity == "critical":
            st.worse("unsafe", f.message)
        elif f.severity == "warning":
            st.worse("check", f.message)
    if confidence is not None and confidence < DOUBTFUL_CONFIDENCE:
        st.worse("check", f"confidence {confidence:.2f} is below {DOUBTFUL_CONFIDENCE}")
    if list(codes) and st.level == "ok":
        st.worse("check", reason or "the planner raised flags on this item")
    return st


def _flags_for(plan: SurgicalPlan, item_id: str) -> list[PlanFlag]:
    return sorted((f for f in plan.flags if f.item == item_id), key=lambda f: SEVERITY_ORDER.get(f.severity, 5))


def _unexplained(codes: Iterable[str], flags: Sequence[PlanFlag]) -> list[str]:
    """Flag codes on an item that no plan flag explains in words."""
    known = {f.code for f in flags}
    return [c for c in codes if c not in known]


def explain_codes(plan: SurgicalPlan, item_id: str, codes: Iterable[str]) -> list[dict[str, str]]:
    """Plain words for an item's flags: the plan flags about `item_id`, then, for each code
    they do not cover, a plan flag with that code elsewhere in the plan, else the code itself
    with a note that the planner gave no words for it. Rows: severity, message."""
    own = _flags_for(plan, item_id) if item_id else []
    rows = [{"severity": f.severity, "message": scrub_paths(f.message)} for f in own]
    for code in _unexplained(codes, own):
        same = [f for f in plan.flags if f.code == code]
        if same:
            rows += [{"severity": f.severity, "message": scrub_paths(f.message)} for f in same]
        else:
            rows.append({"severity": "warning",
                         "message": f"{code.replace('_', ' ')} (no further explanation from the planner)"})
    return rows


# ----------------------------------------------------------------------------- geometry
def _frame(plan: SurgicalPlan, level: str) -> tuple[np.ndarray, np.ndarray, int | None, str]:
    """(lr, cc, label id, note) of a vertebra for the reformats; world axes when the spine
    model has no frame for it (said in the note)."""
    try:
        v = plan.spine.vertebra(level)
    except KeyError:
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), None, (
            f"{level} is not in the spine model: the views use the CT's left-right and head-foot axes")
    if v.landmarks is None:
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), v.label_id, (
            f"{level} has no landmarks: the views use the CT's left-right and head-foot axes")
    fr = v.landmarks.frame
    return np.asarray(fr.axis_lr_world, float), np.asarray(fr.axis_cc_world, float), v.label_id, ""


def _vertebra_of_disc(disc: str) -> str:
    return disc.split("-")[0]


def _neighbour_levels(plan: SurgicalPlan) -> list[str]:
    """The plan's levels and one vertebra either side, cranial first, as named in the model."""
    names = [v.name for v in plan.spine.vertebrae]
    wanted = set(plan.levels)
    for lvl in list(plan.levels):
        if lvl in names:
            i = names.index(lvl)
            wanted.update(names[max(0, i - 1):i + 2])
    return [n for n in names if n in wanted]


def _level_marks(plan: SurgicalPlan, levels: Sequence[str]) -> list[F.LevelMark]:
    out = []
    for name in levels:
        v = plan.spine.vertebra(name)
        if v.landmarks is not None:
            out.append(F.LevelMark(name, tuple(v.landmarks.frame.origin_world_mm)))
    return out


def _check_inputs(plan: SurgicalPlan, ct: Volume, labels: Volume) -> None:
    if not isinstance(plan, SurgicalPlan):
        raise ReportError(f"render_plan_report: plan must be a SurgicalPlan, got {type(plan).__name__}")
    fp = plan.source_ct
    if tuple(ct.shape) != tuple(fp.shape) or not np.allclose(ct.affine, np.asarray(fp.T_world_from_index),
                                                             atol=1e-3):
        raise ReportError(
            f"the CT given to the report (grid {ct.shape}, spacing {tuple(np.round(ct.spacing_mm, 3))} mm) is not "
            f"the one the plan was made on (grid {tuple(fp.shape)}, spacing {tuple(np.round(fp.spacing_mm, 3))} mm): "
            "pass the CT the plan was made on")
    got = ct_fingerprint(ct).sha256
    if got != fp.sha256:
        raise ReportError(
            f"the CT given to the report has other voxel values than the plan's CT (fingerprint {got[:12]} vs "
            f"{fp.sha256[:12]}): pass the CT the plan was made on, read the same way")
    if tuple(labels.shape) != tuple(ct.shape) or not np.allclose(labels.affine, ct.affine, atol=1e-3):
        raise ReportError(
            f"the label map (grid {labels.shape}) is not on the CT's grid ({ct.shape}): resample it onto the CT "
            "(spinenav segment writes it there)")


# ----------------------------------------------------------------------------- sections
def _screw_view(plan: SurgicalPlan, s: Screw, ct: Volume, labels: Volume) -> dict[str, Any]:
    flags = _flags_for(plan, s.id)
    st = _item_status(s.confidence, flags, s.flags, s.reason)
    if not s.accepted:
        st.worse("unsafe", s.reason or f"this screw does not keep the required {s.required_margin_mm:.1f} mm margin")
    if s.predicted_grade != "A":
        st.worse("unsafe" if s.predicted_grade in ("C", "D", "E") else "check",
                 f"predicted Gertzbein-Robbins grade {s.predicted_grade} (a breach of {s.max_breach_mm:.1f} mm)")
    lr, cc, label_id, note = _frame(plan, s.level)
    png = F.screw_reformat_png(
        ct, s.entry_bone_world_mm, s.tip_world_mm, s.diameter_mm, lr_world=lr, cc_world=cc, labels=labels,
        vertebra_label=label_id, min_margin_mm=s.min_cortical_margin_mm, min_margin_world_mm=s.min_margin_world_mm,
        min_margin_where=s.min_margin_direction, status=st.figure_status,
        title=f"{s.level} {s.side}: {s.diameter_mm:.1f} x {s.length_mm:.0f} mm ({st.label})")
    numbers = [
        ("Screw", f"{fmt(s.diameter_mm, 1, 'mm')} diameter x {fmt(s.length_mm, 0, 'mm')} length "
                  f"(catalogue {s.catalogue_item})"),
        ("Trajectory", "cortical bone trajectory" if s.trajectory == "cortical" else "transpedicular"),
        ("Convergence (medial angle)", fmt(s.convergence_deg, 1, "°") + " (positive: tip medial of the entry)"),
        ("Sagittal angle", fmt(s.sagittal_deg, 1, "°") + " (positive: tip caudal of the entry)"),
        ("Pedicle isthmus", f"{fmt(s.isthmus_width_mm, 1, 'mm')} wide x {fmt(s.isthmus_height_mm, 1, 'mm')} high"),
        ("Fill (diameter / isthmus width)", fmt(None if s.fill_ratio is None else 100 * s.fill_ratio, 0, "%")),
        ("Largest safe screw on this path", f"{fmt(s.largest_safe_diameter_mm, 1, 'mm')} diameter, "
                                           f"{fmt(s.longest_safe_length_mm, 0, 'mm')} long"),
        ("Smallest cortical margin", f"{fmt(s.min_cortical_margin_mm, 1, 'mm')} at the {s.min_margin_direction} wall, "
                                     f"{fmt(s.min_margin_along_mm, 0, 'mm')} from the bone entry "
                                     f"(required: {fmt(s.required_margin_mm, 1, 'mm')})"),
        ("Predicted grade (Gertzbein-Robbins)", f"{s.predicted_grade}"
         + ("" if s.max_breach_mm <= 0 else f" (breach {fmt(s.max_breach_mm, 1, 'mm')})")),
        ("Skin entry", fmt_point(s.entry_skin_world_mm) + (f", {fmt(s.skin_to_bone_mm, 0, 'mm')} skin to bone"
                                                          if s.skin_to_bone_mm is not None else "")),
        ("Bone entry", fmt_point(s.entry_bone_world_mm)),
        ("Tip", fmt_point(s.tip_world_mm)),
        ("Accepted by the planner", "yes" if s.accepted else "NO"),
        ("Confidence", fmt(s.confidence, 2)),
    ]
    alts = [{
        "kind": a.kind.replace("_", " "), "message": scrub_paths(a.message), "fits": a.fits,
        "size": (f"{fmt(a.diameter_mm, 1, 'mm')} x {fmt(a.length_mm, 0, 'mm')}"
                 if a.diameter_mm is not None else "—"),
        "margin": fmt(a.min_cortical_margin_mm, 1, "mm"), "grade": a.predicted_grade or "—",
    } for a in s.alternatives]
    return {"id": s.id, "anchor": _anchor("screw", s.id), "title": f"{s.level} {s.side} pedicle screw",
            "status": st, "figure": png_data_uri(png), "numbers": numbers, "flags": flags,
            "unexplained": _unexplained(s.flags, flags), "reason": scrub_paths(s.reason or ""),
            "alternatives": alts, "note": note}


def _corridor_view(plan: SurgicalPlan, c: Corridor, ct: Volume, labels: Volume) -> dict[str, Any]:
    flags = _flags_for(plan, c.id)
    st = _item_status(c.confidence, flags, c.flags, c.reason)
    if c.crosses_canal:
        st.worse("unsafe", "the tube or its working line enters the spinal canal")
    lr, cc, label_id, note = _frame(plan, _vertebra_of_disc(c.level))
    figure = None
    if c.skin_entry_world_mm is not None:
        png = F.access_corridor_png(ct, c.skin_entry_world_mm, c.docking_world_mm, c.tube_diameter_mm,
                                    lr_world=lr, cc_world=cc, target_world_mm=c.target_world_mm, labels=labels,
                                    vertebra_label=label_id,
                                    title=f"{c.level} {c.side}: {PROCEDURE_NAMES[c.procedure]} ({st.label})")
        figure = png_data_uri(png)
    else:
        st.worse("check", "the skin entry is outside the CT: the tube cannot be drawn from the skin")
    numbers = [
        ("Procedure", PROCEDURE_NAMES[c.procedure]),
        ("Target", f"{TARGET_NAMES.get(c.target_kind, c.target_kind)} at {fmt_point(c.target_world_mm)}"),
        ("Tube", f"{fmt(c.tube_diameter_mm, 0, 'mm')} diameter (catalogue {c.tube_catalogue_item}), "
                 f"{fmt(c.tube_length_mm, 0, 'mm')} long"),
        ("Depth", f"skin to docking point {fmt(c.depth_mm, 0, 'mm')}; "
                  f"skin to target {fmt(c.target_depth_mm, 0, 'mm')}"),
        ("Skin entry", fmt_point(c.skin_entry_world_mm) + (f", {fmt(c.paramedian_offset_mm, 0, 'mm')} from the midline"
                                                           if c.paramedian_offset_mm is not None else "")),
        ("Docking point (lamina-facet junction)", fmt_point(c.docking_world_mm)),
        ("Medial angle", fmt(c.medial_angle_deg, 1, "°") + " (positive: pointing medially going deep)"),
        ("Cranio-caudal angle", fmt(c.craniocaudal_angle_deg, 1, "°") + " (positive: pointing caudally going deep)"),
        ("Bone to remove (laminotomy)", fmt(c.laminotomy_volume_mm3 / 1000.0, 2, "cm³")
         + f" ({fmt(c.laminotomy_volume_mm3, 0, 'mm³')}, an upper bound)"),
        ("Closest distance to the canal", fmt(c.min_canal_distance_mm, 1, "mm")
         + (f" ({c.canal_source})" if c.canal_source else "")),
        ("Enters the canal", "YES" if c.crosses_canal else "no"),
    ]
    if c.bilateral_over_the_top:
        numbers.append(("Bilateral decompression over the top",
                        f"contralateral target {fmt_point(c.contralateral_target_world_mm)}, tube tilted "
                        f"{fmt(c.over_the_top_angle_deg, 0, '°')}"))
    if c.kambin_inscribed_diameter_mm is not None:
        numbers.append(("Kambin's triangle", f"largest inscribed circle {fmt(c.kambin_inscribed_diameter_mm, 1, 'mm')}"
                                             f" at {fmt_point(c.kambin_centre_world_mm)}"))
    numbers.append(("Confidence", fmt(c.confidence, 2)))
    return {"id": c.id, "anchor": _anchor("corridor", c.id),
            "title": f"{c.level} {c.side}: {PROCEDURE_NAMES[c.procedure]}", "status": st, "figure": figure,
            "numbers": numbers, "flags": flags, "unexplained": _unexplained(c.flags, flags),
            "reason": scrub_paths(c.reason or ""), "note": note}


def _anchor(kind: str, item_id: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_-]", "-", item_id)


def _tissue_view(plan: SurgicalPlan) -> dict[str, Any] | None:
    t = plan.tissue
    if t is None:
        return None
    open_v = {"incision length (cm)": t.open_incision_length_mm / 10.0,
              "muscle disrupted (cm³)": t.open_muscle_disrupted_cm3,
              "bone removed (cm³)": t.open_bone_removed_mm3 / 1000.0}
    mis_v = {"incision length (cm)": t.mis_incision_length_mm / 10.0,
             "muscle disrupted (cm³)": t.mis_muscle_disrupted_cm3,
             "bone removed (cm³)": t.mis_bone_removed_mm3 / 1000.0}
    png = F.tissue_comparison_png(open_v, mis_v, title=f"Open midline vs this MIS plan, {', '.join(t.levels)}")
    rows = [(k, fmt(open_v[k], 1), fmt(mis_v[k], 1),
             fmt(open_v[k] - mis_v[k], 1)) for k in open_v]
    return {"figure": png_data_uri(png), "rows": rows, "t": t,
            "definitions": [scrub_paths(d) for d in t.definitions], "flags": explain_codes(plan, "", t.flags)}


def _measurement_rows(plan: SurgicalPlan) -> tuple[list[dict], list[dict]]:
    shown = _neighbour_levels(plan)
    vrows = []
    for v in plan.spine.vertebrae:
        if v.name not in shown:
            continue
        m = v.measurements
        lab = v.label
        vrows.append({
            "name": v.name, "in_plan": v.name in plan.levels,
            "label": f"{lab.confidence:.2f}" + (" AMBIGUOUS" if lab.ambiguous else ""),
            "label_doubt": lab.ambiguous or lab.confidence < DOUBTFUL_CONFIDENCE,
            "alternatives": ", ".join(f"{a.name} ({a.confidence:.2f})" for a in lab.alternatives),
            "pw": " / ".join(fmt(m.pedicle_width_mm.get(s), 1) for s in ("left", "right")),
            "ph": " / ".join(fmt(m.pedicle_height_mm.get(s), 1) for s in ("left", "right")),
            "canal_ap": fmt(m.canal_ap_diameter_mm, 1), "canal_area": fmt(m.canal_area_mm2, 0),
            "ipd": fmt(m.interpedicular_distance_mm, 1),
            "recess": " / ".join(fmt(m.lateral_recess_depth_mm.get(s), 1) for s in ("left", "right")),
            "body": " / ".join(fmt(x, 1) for x in (m.body_height_anterior_mm, m.body_height_middle_mm,
                                                   m.body_height_posterior_mm)),
            "confidence": fmt(v.landmarks.confidence, 2) if v.landmarks is not None else "—",
            "doubt": v.landmarks is None or v.landmarks.confidence < DOUBTFUL_CONFIDENCE,
        })
    drows = []
    for d in plan.spine.discs:
        if d.upper not in shown or d.lower not in shown:
            continue
        drows.append({
            "name": d.name, "in_plan": d.upper in plan.levels and d.lower in plan.levels,
            "heights": " / ".join(fmt(x, 1) for x in (d.anterior_height_mm, d.middle_height_mm, d.posterior_height_mm)),
            "dhi": fmt(d.disc_height_index, 2), "slip": f"{fmt(d.slip_mm, 1, 'mm')} ({fmt(d.slip_percent, 0, '%')})",
            "meyerding": fmt(d.meyerding_grade, 0), "lordosis": fmt(d.segmental_lordosis_deg, 1, "°"),
            "foramen": " / ".join(fmt(d.foraminal_height_mm.get(s), 1) for s in ("left", "right")),
            "confidence": fmt(d.confidence, 2), "doubt": d.confidence < DOUBTFUL_CONFIDENCE,
        })
    return vrows, drows


def _all_flags(plan: SurgicalPlan) -> tuple[list[dict], list[dict]]:
    """(plan flags, anatomical findings) as rows, most severe first; each with its message."""
    rows = []
    for f in plan.flags:
        where = " ".join(x for x in (f.level, f.side or "") if x) or "whole plan"
        rows.append({"severity": f.severity, "where": where, "item": f.item, "message": scrub_paths(f.message),
                     "code": f.code, "source": f.source,
                     "value": (f"{fmt(f.value, 1)} {f.unit}".strip() if f.value is not None else ""),
                     "threshold": (f"{fmt(f.threshold, 1)} {f.unit}".strip() if f.threshold is not None else "")})
    rows.sort(key=lambda r: SEVERITY_ORDER.get(r["severity"], 5))
    seen: set[str] = set()
    findings = []
    spine = plan.spine
    candidates = list(spine.flags) + [f for v in spine.vertebrae for f in v.flags] + [
        f for d in spine.discs for f in d.findings]
    for f in candidates:
        key = f"{f.level}|{f.code}|{f.message}"
        if key in seen:
            continue
        seen.add(key)
        findings.append({"severity": f.severity, "where": f.level, "message": scrub_paths(f.message),
                         "code": f.code, "source": f.source})
    findings.sort(key=lambda r: SEVERITY_ORDER.get(r["severity"], 5))
    return rows, findings


def _summary(plan: SurgicalPlan, screws: list[dict], corridors: list[dict]) -> dict[str, Any]:
    n_crit = sum(f.severity == "critical" for f in plan.flags)
    n_warn = sum(f.severity == "warning" for f in plan.flags)
    unsafe = [x["title"] for x in screws + corridors if x["status"].level == "unsafe"]
    check = [x["title"] for x in screws + corridors if x["status"].level == "check"]
    rod_bad = [r.id for r in plan.rods if not r.ok]
    empty = not (plan.screws or plan.corridors or plan.cages)
    level = "unsafe" if (n_crit or unsafe or rod_bad) else "check" if (n_warn or check or empty) else "ok"
    words = {
        "ok": "Every planned item passed the planner's checks. Review the images before use.",
        "check": "Some results are doubtful (marked CHECK): read the flags and look at the images before use.",
        "unsafe": "Some planned items are NOT SAFE as planned (marked NOT SAFE): read the flags first.",
    }[level]
    if empty:
        words = "The plan holds no screw, corridor or cage: read the flags for the reason. " + words
    return {"level": level, "words": words, "n_critical": n_crit, "n_warning": n_warn, "unsafe": unsafe,
            "check": check, "n_screws": len(plan.screws), "n_accepted": len(plan.accepted_screws),
            "rod_bad": rod_bad}


def plan_report_html(plan: SurgicalPlan, ct: Volume, labels: Volume) -> str:
    """The report page as a string (see the module docstring); :func:`render_plan_report`
    writes it. Raises :class:`ReportError` when the CT or labels do not belong to the plan."""
    _check_inputs(plan, ct, labels)
    screws = [_screw_view(plan, s, ct, labels) for s in plan.screws]
    corridors = [_corridor_view(plan, c, ct, labels) for c in plan.corridors]
    shown_levels = _neighbour_levels(plan)
    marks = _level_marks(plan, shown_levels)

    label_ids = [plan.spine.vertebra(n).label_id for n in shown_levels]
    drawings = [F.ScrewDrawing(tuple(s.entry_bone_world_mm), tuple(s.tip_world_mm), s.diameter_mm, s.id,
                               v["status"].figure_status) for s, v in zip(plan.screws, screws)]
    tubes = [F.TubeDrawing(tuple(c.skin_entry_world_mm), tuple(c.docking_world_mm), c.tube_diameter_mm,
                           tuple(c.target_world_mm), c.id) for c in plan.corridors if c.skin_entry_world_mm is not None]
    overview = None
    if label_ids or drawings or tubes:
        overview = png_data_uri(F.overview_3d_png(labels, label_ids, screws=drawings, tubes=tubes, levels=marks))
    incisions = [F.IncisionDrawing(tuple(i.start_world_mm), tuple(i.end_world_mm), i.id, i.length_mm)
                 for i in plan.incisions]
    entries = [s.entry_skin_world_mm for s in plan.screws if s.entry_skin_world_mm is not None]
    entries += [c.skin_entry_world_mm for c in plan.corridors if c.skin_entry_world_mm is not None]
    skin = None
    if incisions or entries or marks:
        skin = png_data_uri(F.posterior_skin_png(ct, incisions=incisions, levels=marks,
                                                 entries_world_mm=np.array(entries) if entries else None))
    plan_flags, findings = _all_flags(plan)
    vrows, drows = _measurement_rows(plan)
    fp = plan.source_ct
    context = {
        "plan": plan,
        "title": "; ".join(f"{PROCEDURE_NAMES[p.procedure]} {', '.join(p.levels)} ({' and '.join(p.sides)})"
                           for p in plan.procedures) or "surgical plan",
        "procedures": [{"name": PROCEDURE_NAMES[p.procedure], "levels": ", ".join(p.levels),
                        "sides": " and ".join(p.sides), "over_the_top": p.bilateral_over_the_top}
                       for p in plan.procedures],
        "report_version": spinenav.__version__,
        "ct": {"hash": fp.sha256[:16], "shape": " x ".join(str(n) for n in fp.shape),
               "spacing": " x ".join(f"{s:.2f}" for s in fp.spacing_mm), "axcodes": fp.axcodes},
        "summary": _summary(plan, screws, corridors),
        "screws": screws, "corridors": corridors, "overview": overview, "skin": skin,
        "incisions": plan.incisions, "tissue": _tissue_view(plan),
        "plan_flags": plan_flags, "findings": findings, "vertebra_rows": vrows, "disc_rows": drows,
        "rods": [{"r": r, "flags": explain_codes(plan, r.id, r.flags)} for r in plan.rods],
        "cages": [{"g": g, "flags": explain_codes(plan, g.id, g.flags),
                   "doubt": g.confidence < DOUBTFUL_CONFIDENCE or bool(g.flags)
                   or any(f.severity != "info" for f in _flags_for(plan, g.id))} for g in plan.cages],
        "warnings": [scrub_paths(w) for w in dict.fromkeys(list(plan.warnings) + list(plan.spine.warnings))],
        "definitions": [scrub_paths(d) for d in plan.definitions],
        "parameters": plan.parameters, "backend": plan.spine.backend.name,
        "fmt": fmt, "fmt_point": fmt_point, "doubtful_confidence": DOUBTFUL_CONFIDENCE,
        "screw_by_id": {v["id"]: v for v in screws}, "corridor_by_id": {v["id"]: v for v in corridors},
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["scrub"] = scrub_paths
    return env.get_template(TEMPLATE_NAME).render(**context)


def render_plan_report(plan: SurgicalPlan, ct: Volume, labels: Volume, out_path: str | os.PathLike[str]) -> Path:
    """Write the HTML report of `plan` to `out_path` (atomically) and return the path.

    Parameters
    ----------
    plan : SurgicalPlan
        The plan (``plan.json``, loaded with :func:`~spinenav.planning.plan.load_plan`).
    ct : Volume
        The CT the plan was made on (same grid and voxels: checked against
        ``plan.source_ct``).
    labels : Volume
        The vertebra label map on the CT's grid (vertebra contours and the 3D surfaces).
    out_path : path-like
        The ``.html`` file to write; its folder is created.

    Raises
    ------
    ReportError
        The CT is not the plan's CT, or the labels are not on its grid.
    """
    html = plan_report_html(plan, ct, labels)
    return write_text_atomic(out_path, html)
