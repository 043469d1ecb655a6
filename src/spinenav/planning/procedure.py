"""`plan_procedure`: one call from a CT, its label map and SpineModel to a :class:`SurgicalPlan`.

>>> plan = plan_procedure(ct, spine, labels, levels="L4-L5", procedure="tlif", side="left")  # doctest: +SKIP
>>> [s.catalogue_item for s in plan.screws], plan.cages[0].catalogue_item                  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from spinenav import __version__
from spinenav.anatomy.labels import level_order, normalize_level
from spinenav.anatomy.model import SpineModel
from spinenav.imaging.volume import Volume
from spinenav.planning.access import corridor_flags, plan_cage, plan_corridor
from spinenav.planning.catalogue import Catalogue, default_catalogue
from spinenav.planning.incisions import SkinEntry, plan_incisions
from spinenav.planning.plan import (PROCEDURES, PlanFlag, PlanningError, PlanningParameters, ProcedureRequest,
                                    SurgicalPlan, ct_fingerprint)
from spinenav.planning.screws import BODY_DEPTH_FRACTION, plan_rods, plan_screws
from spinenav.planning.tissue import compare_tissue

SIDES = ("left", "right", "both")

DEFINITIONS = [
    "Positions are LPS world mm (x patient left, y posterior, z head); angles degrees.",
    "Screw: entry_bone = where the axis enters the posterior bone surface (the head sits there); "
    "length = entry_bone to tip; margins are to the vertebra's boundary in the label map, refined "
    "to the CT's bone edge where the CT shows one (planning/fields.py).",
    "Cortical margin: smallest distance from the screw surface to the boundary, from the seat (where "
    "the screw is wholly inside the bone) to the tip; negative = breach. Grade: Gertzbein-Robbins "
    "A none, B < 2, C < 4, D < 6, E >= 6 mm [GR-2024]. margin_unverified: the margin was measured on a "
    "segmentation whose boundary is not validated (builtin) and does not also cover that boundary's "
    "measured error (planning/screws.py BOUNDARY_UNCERTAINTY_MM): check it on the images.",
    "Convergence: in the vertebra's axial plane from the sagittal midline, positive = medial going "
    "anterior; sagittal angle: from the axial plane, positive = the tip caudal of the entry.",
    "Corridor: tube from the skin entry to the docking point on the lamina-facet junction; working axis "
    "on to the target; laminotomy volume = bone of the posterior elements in the tube's cylinder from "
    "the docking point to the target (an upper bound).",
]


def parse_levels(levels: str | Sequence[str]) -> list[str]:
    """'L4-L5' or ('L4', 'L5') or 'L4' -> vertebra names from the top to the bottom, inclusive."""
    from spinenav.anatomy.labels import STANDARD_LEVELS

    if isinstance(levels, str):
        parts = [p.strip() for p in levels.replace(",", "-").split("-") if p.strip()]
    else:
        parts = [str(p).strip() for p in levels]
    if not parts or len(parts) > 2:
        raise PlanningError(f"levels: expected one level or TOP-BOTTOM such as L4-L5, got {levels!r}")
    names = []
    for p in parts:
        n = normalize_level(p)
        if n is None or n == "sacrum":
            raise PlanningError(f"levels: {p!r} is not a vertebral level (C1-C7, T1-T12, L1-L5, S1)")
        names.append(n)
    ordered = sorted(names, key=level_order)
    top, bottom = ordered[0], ordered[-1]
    all_levels = [n for n in STANDARD_LEVELS]
    if top not in all_levels or bottom not in all_levels:
        return [top] if top == bottom else [top, bottom]
    return all_levels[all_levels.index(top): all_levels.index(bottom) + 1]


def plan_procedure(ct: Volume, spine: SpineModel, labels: Volume, *, levels: str | Sequence[str], procedure: str,
                   side: str = "both", over_the_top: bool = False, params: PlanningParameters | None = None,
                   catalogue: Catalogue | None = None) -> SurgicalPlan:
    """Plan one procedure on a CT.

    Parameters
    ----------
    ct : Volume
        The CT in HU.
    spine : SpineModel
        Its anatomy (:func:`spinenav.anatomy.segment.measure_segmentation` or
        :func:`spinenav.anatomy.measure_spine`), on the same grid as `labels`.
    labels : Volume
        The vertebra label map on the CT's grid (TotalSegmentator v2 ids; the autochthon and
        spinal-cord labels are used when present).
    levels : str or sequence of str
        "L4-L5" (top-bottom, inclusive) or ("L4", "L5"): screws go into every vertebra of the
        range; access and TLIF go to every disc between consecutive vertebrae.
    procedure : {"screws", "microdiscectomy", "decompression", "tlif"}
    side : {"left", "right", "both"}
        Screws: the sides to instrument. Access: the approach side(s). TLIF: the approach side of
        the facetectomy (the four percutaneous screws are always bilateral).
    over_the_top : bool
        Decompression only: bilateral decompression through a unilateral approach.
    params, catalogue : optional
        Planning parameters and implant catalogue (defaults: :class:`PlanningParameters`, the
        shipped catalogue).

    Raises
    ------
    PlanningError
        Unknown procedure or side, conflicting options, a level not in view, a disc procedure
        on a single level, a pedicle or landmark the plan needs that was not found.
    """
    started = time.perf_counter()
    if procedure not in PROCEDURES:
        raise PlanningError(f"unknown procedure {procedure!r}; choose one of {', '.join(PROCEDURES)}")
    if side not in SIDES:
        raise PlanningError(f"unknown side {side!r}; choose left, right or both")
    if over_the_top and procedure != "decompression":
        raise PlanningError(f"conflicting options: bilateral decompression over the top applies to "
                            f"procedure decompression, not {procedure}")
    if over_the_top and side == "both":
        raise PlanningError("conflicting options: over-the-top decompression reaches both sides from one; give "
                            "--side left or right, not both")
    if procedure == "tlif" and side == "both":
        raise PlanningError("conflicting options: a TLIF is approached from one side; give --side left or right")
    if ct.shape != labels.shape or not np.allclose(ct.affine, labels.affine, atol=1e-3):
        raise PlanningError(f"the label map {labels.shape} is not on the CT's grid {ct.shape}; import it with "
                            "spinenav.anatomy.import_label_map first")
    catalogue = catalogue or default_catalogue()
    params = params or PlanningParameters()
    params = params.model_copy(update={
        "body_depth_fraction": params.body_depth_fraction or dict(BODY_DEPTH_FRACTION),
        "tube_diameter_mm": {**catalogue.tube_default_mm, **params.tube_diameter_mm},
        "bilateral_over_the_top": over_the_top, "catalogue": catalogue.label})
    names = parse_levels(levels)
    spine.require_levels(names, PlanningError)
    sides = ["left", "right"] if side == "both" else [side]
    discs = [f"{a}-{b}" for a, b in zip(names, names[1:])]
    if procedure != "screws" and not discs:
        raise PlanningError(f"{procedure} works on a disc: give two adjacent levels such as "
                            f"{names[0]}-{_next(names[0])}, not {names[0]} alone")
    timings: dict[str, float] = {}
    flags: list[PlanFlag] = []
    screws, corridors, cages = [], [], []
    t0 = time.perf_counter()
    if procedure == "screws":
        screws, f = plan_screws(ct, labels, spine, names, sides, params=params, catalogue=catalogue)
        flags += f
    elif procedure == "tlif":
        screws, f = plan_screws(ct, labels, spine, names, ["left", "right"], params=params, catalogue=catalogue)
        flags += f
    timings["screws_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if procedure != "screws":
        for d in discs:
            for sd in sides:
                c = plan_corridor(ct, labels, spine, d, sd, procedure=procedure, params=params, catalogue=catalogue,
                                  over_the_top=over_the_top)
                corridors.append(c)
                flags += corridor_flags(c)
            if procedure == "tlif":
                cage = plan_cage(spine, d, sides[0], catalogue=catalogue)
                cages.append(cage)
                flags += [PlanFlag(code=code, level=d, side=cage.side, item=cage.id, message=f"{d} cage: {cage.reason}",
                                   source="assumed") for code in cage.flags]
    timings["access_s"] = time.perf_counter() - t0
    rods, f = plan_rods(screws, spine, catalogue=catalogue)
    flags += f
    # incisions
    t0 = time.perf_counter()
    lr, ap, cc, mid = _axes(spine, names)
    entries = [SkinEntry(s.id, np.asarray(s.entry_skin_world_mm), s.side, params.screw_incision_mm)
               for s in screws if s.accepted and s.entry_skin_world_mm is not None]
    entries += [SkinEntry(c.id, np.asarray(c.skin_entry_world_mm), c.side, c.tube_diameter_mm)
                for c in corridors if c.skin_entry_world_mm is not None]
    incisions, total = plan_incisions(entries, cranial_world=cc, posterior_world=ap, left_world=lr,
                                      midline_world_mm=mid, merge_distance_mm=params.incision_merge_distance_mm)
    timings["incisions_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tissue = compare_tissue(ct, labels, spine, levels=names, procedures=[procedure], sides=sides, screws=screws,
                            corridors=corridors, incisions=incisions, dilator_diameter_mm=params.dilator_diameter_mm)
    timings["tissue_s"] = time.perf_counter() - t0
    for n in names:
        v = spine.vertebra(n)
        if v.label.ambiguous or v.label.confidence < 0.8:
            flags.append(PlanFlag(code="level_uncertain", level=n, severity="critical",
                                  message=(f"{n}: the level's name is uncertain (confidence {v.label.confidence:.2f}); "
                                           "count the levels on the images (wrong-level surgery)")))
    timings["total_s"] = time.perf_counter() - started
    return SurgicalPlan(
        spinenav_version=__version__, source_ct=ct_fingerprint(ct), spine=spine, levels=names,
        procedures=[ProcedureRequest(procedure=procedure, levels=names if procedure == "screws" else discs,  # type: ignore[arg-type]
                                     sides=sides, bilateral_over_the_top=over_the_top)],  # type: ignore[arg-type]
        screws=screws, rods=rods, corridors=corridors, cages=cages, incisions=incisions,
        total_incision_length_mm=total, tissue=tissue, flags=flags, parameters=params,
        warnings=list(spine.warnings), definitions=DEFINITIONS + tissue.definitions,
        timings_s={k: round(v, 4) for k, v in timings.items()})


def _next(level: str) -> str:
    from spinenav.anatomy.labels import next_level

    try:
        return next_level(level)
    except (KeyError, ValueError):
        return "the next level"


def _axes(spine: SpineModel, names: list[str]):
    from spinenav.planning.tissue import _axes as axes

    lr, ap, cc, centre = axes(spine, names)
    canals = [spine.vertebra(n).landmarks.canal for n in names]  # type: ignore[union-attr]
    pts = [c.centre_world_mm for c in canals if c is not None]
    mid = np.mean(pts, axis=0) if pts else centre
    return lr, ap, cc, mid


def unfit_levels(plan: SurgicalPlan) -> list[str]:
    """Levels where no requested pedicle takes a screw (every screw there is flagged)."""
    out = []
    for lv in dict.fromkeys(s.level for s in plan.screws):
        if not any(s.accepted for s in plan.screws if s.level == lv):
            out.append(lv)
    return out
