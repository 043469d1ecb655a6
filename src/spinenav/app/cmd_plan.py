"""The ``spinenav plan`` command (registered on the shared Typer app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from spinenav.app.common import app, err, handled, out
from spinenav.errors import SpinenavError


@app.command()
def plan(
    ct: Annotated[Path, typer.Argument(help="CT: a DICOM series folder, .nii/.nii.gz, .nrrd or .mha.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (written all or nothing).")],
    levels: Annotated[str, typer.Option(help="Levels, TOP-BOTTOM (e.g. L4-L5): screws in each vertebra, "
                                             "access at each disc between them.")],
    procedure: Annotated[str, typer.Option(help="screws, microdiscectomy, decompression or tlif.")] = "screws",
    side: Annotated[str, typer.Option(help="left, right or both (TLIF and over-the-top: one side).")] = "both",
    over_the_top: Annotated[bool, typer.Option(help="Decompression: both sides through a unilateral approach.")] = False,
    backend: Annotated[str, typer.Option(help="Segmentation: builtin (CT only), labelmap, or totalsegmentator.")] = "builtin",
    labelmap: Annotated[Optional[Path], typer.Option(help="--backend labelmap: a label map file or a TotalSegmentator folder.")] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="--backend labelmap: a JSON/CSV file mapping your ids to levels.")] = None,
    margin_mm: Annotated[float, typer.Option(help="Cortical margin every screw must keep, mm.")] = 1.0,
    allow_unfit: Annotated[bool, typer.Option(help="Write the plan even when a level takes no screw (flagged).")] = False,
    report: Annotated[bool, typer.Option(help="Also write report.html, the plan for the surgeon (one self-contained page).")] = True,
) -> None:
    """Plan an MIS procedure on a CT: screws, tubes, TLIF cage, incisions, tissue spared.

    Writes plan.json, markups/*.mrk.json (3D Slicer, LPS), models/*.stl, corridors.nii.gz and
    report.html into the output folder.
    """
    from spinenav.app.cli import _segment_and_measure
    from spinenav.planning import PlanningParameters, plan_procedure, unfit_levels, write_plan
    from spinenav.planning.plan import PROCEDURES

    with handled():
        # refuse bad options before the (slow) segmentation
        if procedure not in PROCEDURES:
            raise SpinenavError(f"--procedure: unknown procedure {procedure!r}; choose one of {', '.join(PROCEDURES)}")
        if side not in ("left", "right", "both"):
            raise SpinenavError(f"--side: expected left, right or both, got {side!r}")
        if over_the_top and procedure != "decompression":
            raise SpinenavError(f"conflicting options: --over-the-top applies to --procedure decompression, "
                                f"not {procedure}")
        if (over_the_top or procedure == "tlif") and side == "both":
            raise SpinenavError(f"conflicting options: {'--over-the-top' if over_the_top else 'a TLIF'} is "
                                "approached from one side; give --side left or right")
        if backend != "labelmap" and labelmap is not None:
            raise SpinenavError("conflicting options: --labelmap applies only to --backend labelmap")
        if not 0.0 <= margin_mm <= 5.0:
            raise SpinenavError(f"--margin-mm: expected 0 to 5 mm, got {margin_mm}")
        from spinenav.planning.procedure import parse_levels

        parse_levels(levels)
        ct_vol, seg, model = _segment_and_measure(ct, backend=backend, labelmap=labelmap, mapping=mapping,
                                                  lowest_level=None, level_at=None)
        result = plan_procedure(ct_vol, model, seg.labels, levels=levels, procedure=procedure, side=side,
                                over_the_top=over_the_top,
                                params=PlanningParameters(required_margin_mm=margin_mm))
        unfit = unfit_levels(result)
        if unfit and not allow_unfit:
            s = next(x for x in result.screws if x.level == unfit[0])
            alts = "; ".join(a.message for a in s.alternatives if a.kind != "skip_level") or "none found"
            raise SpinenavError(f"{', '.join(unfit)}: no pedicle takes a screw ({s.reason}); alternatives: {alts}; "
                                "choose other levels, or pass --allow-unfit to write the plan with the flags")
        paths = write_plan(result, out_dir, ct_vol, seg.labels)
        if report:
            from spinenav.app.report import render_plan_report

            paths["report"] = render_plan_report(result, ct_vol, seg.labels, Path(out_dir) / "report.html")
    for s in result.screws:
        tone = "green" if s.accepted else "red"
        out.print(f"[{tone}]{escape(s.id)}[/] {s.catalogue_item} margin {s.min_cortical_margin_mm:.1f} mm "
                  f"({escape(s.min_margin_direction)}), grade {s.predicted_grade}"
                  + ("" if s.accepted else " NOT ACCEPTED"), highlight=False)
    for c in result.corridors:
        out.print(f"{escape(c.id)}: {c.tube_catalogue_item}, offset "
                  f"{'?' if c.paramedian_offset_mm is None else f'{c.paramedian_offset_mm:.0f}'} mm, "
                  f"bone {c.laminotomy_volume_mm3:.0f} mm3", highlight=False)
    for g in result.cages:
        out.print(f"{escape(g.id)}: {g.catalogue_item}", highlight=False)
    out.print(f"incisions: {len(result.incisions)}, total {result.total_incision_length_mm:.0f} mm", highlight=False)
    if result.tissue is not None:
        t = result.tissue
        out.print(f"muscle disrupted: MIS {t.mis_muscle_disrupted_cm3:.1f} cm3 vs open {t.open_muscle_disrupted_cm3:.1f} cm3 "
                  f"({t.muscle_source})", highlight=False)
    for f in result.flags:
        out.print(f"[yellow]flag[/] {escape(f.message)}", highlight=False)
    for line in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    out.print(f"written to {out_dir}: plan.json, markups/, models/, corridors.nii.gz"
              + (", report.html" if report else "") + f" ({len(paths)} files)", highlight=False, markup=False)
