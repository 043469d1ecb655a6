"""The ``spinenav fluoro`` command (registered on the shared Typer app): simulate one C-arm shot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from spinenav.app.common import app, handled, out
from spinenav.errors import SpinenavError


def _spine_from(spine: Path | None, plan_doc: Any, ct_path: Path, ct: Any) -> Any:
    """The SpineModel: from the plan, from spine.json (or a 'spinenav segment' folder), or measured now."""
    from spinenav.anatomy.model import load_spine_model

    if plan_doc is not None:
        return plan_doc.spine
    if spine is not None:
        return load_spine_model(spine / "spine.json" if spine.is_dir() else spine)
    from spinenav.app.cli import _segment_and_measure

    _, _, model = _segment_and_measure(ct_path, backend="builtin", labelmap=None, mapping=None,
                                       lowest_level=None, level_at=None)
    return model


def _screw_ends(plan_doc: Any, model: Any, level: str, side: str, notes: list[str]) -> tuple[Any, Any]:
    if plan_doc is not None:
        for s in plan_doc.screws:
            if s.level == level and s.side == side:
                return s.entry_bone_world_mm, s.tip_world_mm
        raise SpinenavError(f"the plan has no {level} {side} screw (has "
                            f"{', '.join(s.id for s in plan_doc.screws) or 'none'})")
    lm = model.vertebra(level).landmarks if level in {v.name for v in model.vertebrae} else None
    ped = lm.pedicles.get(side) if lm is not None else None
    if ped is None:
        raise SpinenavError(f"no {level} {side} pedicle was found to aim the bull's-eye view at; pass --plan")
    notes.append(f"no plan: bull's-eye along the measured {side} pedicle axis (entry to anterior cortex)")
    return ped.entry_world_mm, ped.exit_world_mm


@app.command()
def fluoro(
    ct: Annotated[Path, typer.Argument(exists=True, help="The patient's CT (file or DICOM folder).")],
    out_path: Annotated[Path, typer.Option("--out", help="Output PNG (a spinenav.carm/1 JSON sidecar is written beside it).")],
    view: Annotated[str, typer.Option(help="ap, lateral, oblique, bullseye, inlet or outlet.")] = "ap",
    level: Annotated[Optional[str], typer.Option(help="Vertebra to aim at, e.g. L4.")] = None,
    side: Annotated[str, typer.Option(help="left or right: lateral detector side, oblique side, bull's-eye screw.")] = "left",
    plan: Annotated[Optional[Path], typer.Option(exists=True, help="plan.json: its screws are drawn as metal and overlaid.")] = None,
    spine: Annotated[Optional[Path], typer.Option(exists=True, help="spine.json or a 'spinenav segment' folder (skips segmentation).")] = None,
    lao_deg: Annotated[Optional[float], typer.Option(help="Manual pose: DICOM primary angle, LAO positive (deg).")] = None,
    cranial_deg: Annotated[Optional[float], typer.Option(help="Manual pose: DICOM secondary angle, cranial positive (deg).")] = None,
    pixels: Annotated[int, typer.Option(help="Detector pixels per side.")] = 512,
    kvp: Annotated[float, typer.Option(help="Tube voltage, kV (effective energy kVp/3).")] = 90.0,
    method: Annotated[str, typer.Option(help="joseph (default), trilinear or siddon.")] = "joseph",
) -> None:
    """Simulate a C-arm shot (DRR) of a CT: a standard view of a level or a manual pose.

    The patient lies prone with the tube under the table; angles follow DICOM (primary LAO+,
    secondary cranial+, patient-relative); the image is the beam's-eye view with the head up.
    """
    from spinenav.fluoro.carm import CarmGeometry, CarmPose
    from spinenav.fluoro.dose import DoseLog
    from spinenav.fluoro.drr import MetalCylinder, Spectrum, prepare_attenuation, render_line_integrals, to_display
    from spinenav.fluoro.overlay import plan_items, write_overlay_png
    from spinenav.fluoro.shots import write_shot_png
    from spinenav.fluoro.views import VIEW_KINDS, standard_view
    from spinenav.imaging import read_volume

    with handled():
        if view not in VIEW_KINDS:
            raise SpinenavError(f"--view must be one of {', '.join(VIEW_KINDS)}, got {view!r}")
        if side not in ("left", "right"):
            raise SpinenavError(f"--side must be left or right, got {side!r}")
        if (lao_deg is None) != (cranial_deg is None):
            raise SpinenavError("give both --lao-deg and --cranial-deg for a manual pose, or neither")
        if not 16 <= pixels <= 2048:
            raise SpinenavError(f"--pixels must be within 16-2048, got {pixels}")
        if out_path.suffix.lower() != ".png":
            raise SpinenavError(f"--out must be a .png file, got {out_path.name}")
        plan_doc = None
        if plan is not None:
            from spinenav.planning.plan import load_plan

            plan_doc = load_plan(plan)
        volume = read_volume(ct)
        notes: list[str] = []
        manual = lao_deg is not None
        model = None
        if not manual or level is not None:
            if level is None:
                raise SpinenavError(f"--view {view} needs --level (e.g. --level L4)")
            model = _spine_from(spine, plan_doc, ct, volume)
        if manual:
            iso = (model.vertebra(level).landmarks.frame.origin_world_mm
                   if model is not None and level in {v.name for v in model.vertebrae}
                   and model.vertebra(level).landmarks is not None else tuple(volume.center_world_mm))
            if model is not None and level not in {v.name for v in model.vertebrae}:
                raise SpinenavError(f"level {level} is not in this CT (have "
                                    f"{', '.join(v.name for v in model.vertebrae)})")
            pose = CarmPose(math.radians(lao_deg), math.radians(cranial_deg), tuple(iso))  # type: ignore[arg-type]
            kind = "manual"
        else:
            opts: dict[str, Any] = {"side": side}
            if view == "bullseye":
                entry, tip = _screw_ends(plan_doc, model, level, side, notes)  # type: ignore[arg-type]
                opts.update(screw_entry_world_mm=entry, screw_tip_world_mm=tip)
            v = standard_view(model, view, level, **opts)  # type: ignore[arg-type]
            pose, kind = v.pose, view
            notes.extend(v.notes)
        geometry = CarmGeometry.square(pixels)
        metal = tuple(MetalCylinder(tuple(s.entry_bone_world_mm), tuple(s.tip_world_mm), s.diameter_mm)
                      for s in plan_doc.screws) if plan_doc is not None else ()
        att = prepare_attenuation(volume, spectrum=Spectrum(kvp=kvp))
        image = render_line_integrals(att, geometry, pose, method=method, metal=metal)
        u8 = to_display(image)
        dose = DoseLog()
        dap = dose.add_shot(geometry, kvp=kvp, label=kind)
        png, sidecar = write_shot_png(out_path, u8, geometry, pose, known={"kvp": kvp, "dap_gy_cm2_estimate": dap},
                                      notes=notes + [f"DRR of {ct.name}, method {method}"])
        written = [png.name, sidecar.name]
        if plan_doc is not None:
            ov = write_overlay_png(out_path.with_name(out_path.stem + "_overlay.png"), u8, geometry, pose,
                                   plan_items(plan_doc), title=f"{kind} {level or ''}")
            written.append(ov.name)
    out.print(json.dumps({"view": kind, "level": level, "primary_deg": round(math.degrees(pose.primary_rad), 3),
                          "secondary_deg": round(math.degrees(pose.secondary_rad), 3),
                          "isocentre_world_mm": [round(x, 2) for x in pose.isocentre_world_mm],
                          "dap_gy_cm2_estimate": round(dap, 5), "written": written, "notes": notes}),
              highlight=False, markup=False, soft_wrap=True)
