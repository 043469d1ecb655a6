"""The ``spinenav register`` and ``spinenav levelcheck`` commands (on the shared Typer app):
2D/3D registration of one vertebra to one or two C-arm shots, and the level under a marker."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from spinenav.app.common import app, handled, out
from spinenav.errors import SpinenavError

REGISTRATION_SCHEMA = "spinenav.registration/1"
LEVELCHECK_SCHEMA = "spinenav.levelcheck/1"


def _labels_for(ct_path: Path, ct: Any, labels: Path | None) -> Any:
    """The vertebra label map on the CT grid: read (and resampled if needed) or segmented now."""
    from spinenav.imaging import read_volume
    from spinenav.imaging.resample import resample_like

    if labels is not None:
        lab = read_volume(labels)
        if lab.shape != ct.shape or not np.allclose(lab.affine, ct.affine, atol=1e-4):
            lab = resample_like(lab, ct, order=0)
        return lab
    from spinenav.app.cli import _segment_and_measure

    _, seg, _ = _segment_and_measure(ct_path, backend="builtin", labelmap=None, mapping=None, lowest_level=None,
                                     level_at=None)
    return seg.labels


def _shot_view(path: Path, *, bone_dark: bool | None, lao_deg: float | None, cranial_deg: float | None,
               notes: list[str]) -> Any:
    from dataclasses import replace

    from spinenav.fluoro.shots import read_shot
    from spinenav.registration.intensity import ShotView
    from spinenav.registration.similarity import as_attenuation_image

    shot = read_shot(path, require_geometry=True)
    pose = shot.pose
    if lao_deg is not None:
        pose = replace(pose, primary_rad=math.radians(lao_deg))
        notes.append(f"{shot.source}: primary angle set to {lao_deg:.1f} deg (--init-lao-deg)")
    if cranial_deg is not None:
        pose = replace(pose, secondary_rad=math.radians(cranial_deg))
        notes.append(f"{shot.source}: secondary angle set to {cranial_deg:.1f} deg (--init-cranial-deg)")
    # spinenav's DRR PNGs are windowed line integrals (bone bright); raw X-ray pixels are
    # transmitted signal (bone dark, MONOCHROME2)
    bright = (shot.modality == "DRR") if bone_dark is None else not bone_dark
    notes.append(f"{shot.source}: read as {'attenuation (bone bright)' if bright else 'transmission (bone dark)'}")
    return ShotView(as_attenuation_image(shot.image, bone_bright=bright), shot.geometry, pose), shot


def _overlay_png(path: Path, shot_view: Any, verts: Any, poses: Any, results: Any) -> None:
    """The shot with each registered vertebra's outline (its DRR's footprint at the pose found)
    drawn over it, one colour per level, named, with ok / NOT OK (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from skimage.measure import find_contours

    from spinenav.atomic import atomic_output
    from spinenav.fluoro.drr import render_line_integrals, to_display
    from spinenav.registration.intensity import moved_attenuation

    g = shot_view.geometry
    scale = max(1.0, 512.0 / g.cols)
    fig = plt.figure(figsize=(g.cols * scale / 100, g.rows * scale / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(to_display(shot_view.image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    colours = ("#33ff55", "#33ccff", "#ffcc33", "#ff66cc", "#cc99ff")
    for i, (vert, T_world_from_ct, res) in enumerate(zip(verts, poses, results)):
        drr = render_line_integrals(moved_attenuation(vert.attenuation, T_world_from_ct), g, shot_view.pose)
        if not drr.max() > 0:
            continue
        col = colours[i % len(colours)] if res.ok else "#ff3333"
        for c in find_contours(drr, 0.15 * float(drr.max())):
            if len(c) > 20:
                ax.plot(c[:, 1], c[:, 0], color=col, lw=1.2)
        rr, cc = np.nonzero(drr > 0.15 * float(drr.max()))
        label = f"{vert.level} {'ok' if res.ok else 'NOT OK'}\nGC {res.similarity:.2f}"
        ax.text(float(cc.max()) + 4, float(rr.mean()), label, color=col, fontsize=8, va="center",
                path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    ax.set_xlim(-0.5, g.cols - 0.5)
    ax.set_ylim(g.rows - 0.5, -0.5)
    ax.axis("off")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


@app.command()
def register(
    ct: Annotated[Path, typer.Argument(exists=True, help="The patient's CT (file or DICOM folder).")],
    shot: Annotated[Path, typer.Argument(exists=True, help="C-arm shot: DICOM, or PNG/TIFF with its JSON sidecar.")],
    shot2: Annotated[Optional[Path], typer.Argument(exists=True, help="Second shot (biplane), e.g. the lateral.")] = None,
    level: Annotated[str, typer.Option(help="Vertebra to register, e.g. L4; several adjacent ones 'L3,L4' (multi-level).")] = ...,  # type: ignore[assignment]
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (poses JSON + overlay PNGs).")] = ...,  # type: ignore[assignment]
    labels: Annotated[Optional[Path], typer.Option(exists=True, help="Vertebra label map (TotalSegmentator ids); default: segment now.")] = None,
    method: Annotated[str, typer.Option(help="'context': the whole patient first, then the vertebra against the shot minus its background (default); 'vertebra': the masked vertebra alone.")] = "context",
    confirm: Annotated[bool, typer.Option("--confirm-level/--no-confirm-level", help="Check that the neighbours agree with the level found (wrong-level detector; needs them in the label map).")] = True,
    init_lao_deg: Annotated[Optional[float], typer.Option(help="Override the first shot's primary (LAO+) angle, deg.")] = None,
    init_cranial_deg: Annotated[Optional[float], typer.Option(help="Override the first shot's secondary (cranial+) angle, deg.")] = None,
    init_offset_mm: Annotated[str, typer.Option(help="Starting CT->world translation 'x,y,z' (LPS mm).")] = "0,0,0",
    search_mm: Annotated[float, typer.Option(help="Half-width of the translation search, mm.")] = 20.0,
    search_deg: Annotated[float, typer.Option(help="Half-width of the rotation search, deg.")] = 20.0,
    bone_dark: Annotated[Optional[bool], typer.Option("--bone-dark/--bone-bright", help="Shot polarity (default: bone bright for spinenav DRRs, dark otherwise).")] = None,
    seed: Annotated[int, typer.Option(help="Optimiser seed (recorded).")] = 0,
) -> None:
    """Register vertebrae of the CT to one shot (monoplane) or two (biplane).

    Writes DIR/registration.json (per level: T_world_from_ct and T_carm_from_ct, the gradient
    correlation, the uncertainty, ok and the reason; with several levels also their relative
    motion) and DIR/overlay_1.png (and _2): each registered vertebra's outline over each shot
    (red where not ok).
    Exit code 0 even when the registration is not trusted: read 'ok' (printed).
    """
    from spinenav.anatomy.labels import normalize_level
    from spinenav.atomic import atomic_folder, write_json_atomic
    from spinenav.imaging import read_volume
    from spinenav.registration.incontext import (prepare_patient, register_levels_in_context,
                                                 register_vertebra_in_context)
    from spinenav.registration.intensity import prepare_vertebra, register_vertebra
    from spinenav.registration.levelcheck import confirm_level, prepare_spine
    from spinenav.registration.multilevel import register_levels

    with handled():
        try:
            offset = np.array([float(x) for x in init_offset_mm.split(",")])
            assert offset.shape == (3,) and np.all(np.isfinite(offset))
        except (ValueError, AssertionError):
            raise SpinenavError(f"--init-offset-mm must be 'x,y,z' in mm, got {init_offset_mm!r}") from None
        if not (search_mm > 0 and 0 < search_deg <= 45):
            raise SpinenavError("--search-mm must be > 0 and --search-deg within (0, 45]")
        if method not in ("context", "vertebra"):
            raise SpinenavError(f"--method must be 'context' or 'vertebra', got {method!r}")
        names = [normalize_level(x.strip()) or x.strip() for x in level.split(",") if x.strip()]
        if not names or len(set(names)) != len(names):
            raise SpinenavError(f"--level must name one or more different vertebrae, got {level!r}")
        notes: list[str] = []
        views = [_shot_view(shot, bone_dark=bone_dark, lao_deg=init_lao_deg, cranial_deg=init_cranial_deg,
                            notes=notes)]
        if shot2 is not None:
            views.append(_shot_view(shot2, bone_dark=bone_dark, lao_deg=None, cranial_deg=None, notes=notes))
        shots = [v for v, _ in views]
        volume = read_volume(ct)
        lab = _labels_for(ct, volume, labels)
        spine = None
        if confirm:  # the neighbours for the level check; the registered vertebrae are among them
            try:
                spine = prepare_spine(volume, lab)
            except SpinenavError as exc:
                notes.append(f"level not confirmed: {exc}")
        verts = [spine.vertebrae[n] if spine is not None and n in spine.vertebrae else prepare_vertebra(volume, lab, n)
                 for n in names]
        T0 = np.eye(4)
        T0[:3, 3] = offset
        kw = {"T_init_world_from_ct": T0, "search_mm": search_mm, "search_rad": math.radians(search_deg),
              "seed": seed}
        patient = prepare_patient(volume) if method == "context" else None
        multi = None
        if len(verts) > 1:
            multi = (register_levels_in_context(verts, patient, shots, **kw) if patient is not None
                     else register_levels(verts, shots, **kw))
            results = dict(multi.results)
        else:
            results = {names[0]: (register_vertebra_in_context(verts[0], patient, shots, **kw) if patient is not None
                                  else register_vertebra(verts[0], shots, **kw))}
        if spine is not None:
            results = {n: confirm_level(r, spine, shots, patient=patient) for n, r in results.items()}
        ok = all(r.ok for r in results.values()) and (multi is None or multi.ok)
        doc = {"schema": REGISTRATION_SCHEMA, "ct": ct.name, "shots": [s.source for _, s in views],
               "mode": "biplane" if len(views) == 2 else "monoplane", "method": method,
               "level_confirmed": spine is not None,
               "ok": ok, "levels": {n: r.to_dict() for n, r in results.items()}, "input_notes": notes}
        if multi is not None:
            doc["relative_motion"] = [m.to_dict() for m in multi.relative_motion]
            doc["multilevel_reason"] = multi.reason
        if len(results) == 1:  # the single-level layout of schema 1: the result's fields at the top
            doc.update({k: v for k, v in results[names[0]].to_dict().items() if k != "ok"})
        with atomic_folder(out_dir) as tmp:
            write_json_atomic(Path(tmp) / "registration.json", doc)
            for i, (v, s) in enumerate(views, 1):
                _overlay_png(Path(tmp) / f"overlay_{i}.png", v, verts, [results[n].T_world_from_ct for n in names],
                             [results[n] for n in names])
        for n, res in results.items():
            tone = "green" if res.ok else "red"
            out.print(f"[{tone}]{n}: {'ok' if res.ok else 'NOT OK'}[/] GC {res.similarity:.3f}, "
                      f"{res.seconds:.1f} s{': ' + res.reason if res.reason else ''}", highlight=False)
        if multi is not None:
            for m in multi.relative_motion:
                out.print(f"{m.cranial}-{m.caudal}: {m.translation_mm:.1f} mm / {m.rotation_deg:.1f} deg relative "
                          f"motion{'' if m.within_bounds else ' [red]beyond the bounds[/]'}", highlight=False)
        out.print(f"wrote {out_dir}", highlight=False)


@app.command()
def levelcheck(
    ct: Annotated[Path, typer.Argument(exists=True, help="The patient's CT (file or DICOM folder).")],
    shot: Annotated[Path, typer.Argument(exists=True, help="C-arm shot: DICOM, or PNG/TIFF with its JSON sidecar.")],
    marker_px: Annotated[str, typer.Option(help="Instrument tip on the shot, 'u,v' pixels (column, row).")] = ...,  # type: ignore[assignment]
    labels: Annotated[Optional[Path], typer.Option(exists=True, help="Vertebra label map; default: segment now.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Write the result as JSON here.")] = None,
    bone_dark: Annotated[Optional[bool], typer.Option("--bone-dark/--bone-bright", help="Shot polarity (default: by modality).")] = None,
    method: Annotated[str, typer.Option(help="'context': each level hypothesis registered and scored with all the CT's bone above soft tissue: ribs, sternum, pelvis (default); 'vertebrae': with the spine's bone and each vertebra alone.")] = "context",
    seed: Annotated[int, typer.Option(help="Optimiser seed (recorded).")] = 0,
) -> None:
    """Which vertebra is under the marker? Prints the level, the runner-up and the confidence,
    or refuses (AMBIGUOUS, exit code 3) when the answer cannot be trusted."""
    from spinenav.atomic import write_json_atomic
    from spinenav.imaging import read_volume
    from spinenav.registration.incontext import prepare_patient
    from spinenav.registration.levelcheck import check_level, prepare_spine

    with handled():
        try:
            m = [float(x) for x in marker_px.split(",")]
            assert len(m) == 2
        except (ValueError, AssertionError):
            raise SpinenavError(f"--marker-px must be 'u,v' in pixels, got {marker_px!r}") from None
        if method not in ("context", "vertebrae"):
            raise SpinenavError(f"--method must be 'context' or 'vertebrae', got {method!r}")
        notes: list[str] = []
        view, s = _shot_view(shot, bone_dark=bone_dark, lao_deg=None, cranial_deg=None, notes=notes)
        volume = read_volume(ct)
        spine = prepare_spine(volume, _labels_for(ct, volume, labels))
        res = check_level(spine, view, m, seed=seed,
                          patient=prepare_patient(volume) if method == "context" else None)
        doc = {"schema": LEVELCHECK_SCHEMA, "ct": ct.name, "shot": s.source, "marker_px": m, "seed": seed,
               "method": method,
               **res.to_dict(), "input_notes": notes}
        if out_path is not None:
            write_json_atomic(out_path, doc)
        if res.ok:
            out.print(f"[green]level {res.level}[/] (runner-up {res.runner_up or 'none'}, GC margin "
                      f"{res.confidence:.3f}, {res.seconds:.1f} s)", highlight=False)
        else:
            out.print(f"[red]AMBIGUOUS[/]: {res.reason} (best guess {res.best_guess or 'none'}: do not act on it)",
                      highlight=False)
            raise typer.Exit(3)
        out.print(json.dumps({"level": res.level, "runner_up": res.runner_up,
                              "confidence_gc_margin": round(res.confidence, 4)}), highlight=False)
