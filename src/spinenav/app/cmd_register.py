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


def _overlay_png(path: Path, shot_view: Any, vert: Any, T_world_from_ct: Any, title: str) -> None:
    """The shot with the registered vertebra's DRR edges drawn over it (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.feature import canny

    from spinenav.atomic import atomic_output
    from spinenav.fluoro.drr import render_line_integrals, to_display
    from spinenav.registration.intensity import moved_attenuation

    drr = render_line_integrals(moved_attenuation(vert.attenuation, T_world_from_ct), shot_view.geometry,
                                shot_view.pose)
    edges = canny(drr / max(float(drr.max()), 1e-6), sigma=1.5, low_threshold=0.05, high_threshold=0.15)
    g = shot_view.geometry
    scale = max(1.0, 512.0 / g.cols)
    fig = plt.figure(figsize=(g.cols * scale / 100, g.rows * scale / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(to_display(shot_view.image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    rgba = np.zeros((*edges.shape, 4))
    rgba[edges] = (0.1, 1.0, 0.2, 1.0)
    ax.imshow(rgba, interpolation="nearest")
    ax.text(4, 12, title, color="yellow", fontsize=8)
    ax.axis("off")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


@app.command()
def register(
    ct: Annotated[Path, typer.Argument(exists=True, help="The patient's CT (file or DICOM folder).")],
    shot: Annotated[Path, typer.Argument(exists=True, help="C-arm shot: DICOM, or PNG/TIFF with its JSON sidecar.")],
    shot2: Annotated[Optional[Path], typer.Argument(exists=True, help="Second shot (biplane), e.g. the lateral.")] = None,
    level: Annotated[str, typer.Option(help="Vertebra to register, e.g. L4.")] = ...,  # type: ignore[assignment]
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (poses JSON + overlay PNGs).")] = ...,  # type: ignore[assignment]
    labels: Annotated[Optional[Path], typer.Option(exists=True, help="Vertebra label map (TotalSegmentator ids); default: segment now.")] = None,
    init_lao_deg: Annotated[Optional[float], typer.Option(help="Override the first shot's primary (LAO+) angle, deg.")] = None,
    init_cranial_deg: Annotated[Optional[float], typer.Option(help="Override the first shot's secondary (cranial+) angle, deg.")] = None,
    init_offset_mm: Annotated[str, typer.Option(help="Starting CT->world translation 'x,y,z' (LPS mm).")] = "0,0,0",
    search_mm: Annotated[float, typer.Option(help="Half-width of the translation search, mm.")] = 20.0,
    search_deg: Annotated[float, typer.Option(help="Half-width of the rotation search, deg.")] = 20.0,
    bone_dark: Annotated[Optional[bool], typer.Option("--bone-dark/--bone-bright", help="Shot polarity (default: bone bright for spinenav DRRs, dark otherwise).")] = None,
    seed: Annotated[int, typer.Option(help="Optimiser seed (recorded).")] = 0,
) -> None:
    """Register one vertebra of the CT to one shot (monoplane) or two (biplane).

    Writes DIR/registration.json (T_world_from_ct and T_carm_from_ct of the vertebra, the
    gradient correlation, the uncertainty, ok and the reason) and DIR/overlay_1.png (and _2):
    the registered DRR's edges (green) over each shot. Exit code 0 even when the registration
    is not trusted: read 'ok' (printed).
    """
    from spinenav.atomic import atomic_folder, write_json_atomic
    from spinenav.imaging import read_volume
    from spinenav.registration.intensity import prepare_vertebra, register_vertebra

    with handled():
        try:
            offset = np.array([float(x) for x in init_offset_mm.split(",")])
            assert offset.shape == (3,) and np.all(np.isfinite(offset))
        except (ValueError, AssertionError):
            raise SpinenavError(f"--init-offset-mm must be 'x,y,z' in mm, got {init_offset_mm!r}") from None
        if not (search_mm > 0 and 0 < search_deg <= 45):
            raise SpinenavError("--search-mm must be > 0 and --search-deg within (0, 45]")
        notes: list[str] = []
        views = [_shot_view(shot, bone_dark=bone_dark, lao_deg=init_lao_deg, cranial_deg=init_cranial_deg,
                            notes=notes)]
        if shot2 is not None:
            views.append(_shot_view(shot2, bone_dark=bone_dark, lao_deg=None, cranial_deg=None, notes=notes))
        volume = read_volume(ct)
        lab = _labels_for(ct, volume, labels)
        vert = prepare_vertebra(volume, lab, level)
        T0 = np.eye(4)
        T0[:3, 3] = offset
        res = register_vertebra(vert, [v for v, _ in views], T_init_world_from_ct=T0, search_mm=search_mm,
                                search_rad=math.radians(search_deg), seed=seed)
        doc = {"schema": REGISTRATION_SCHEMA, "ct": ct.name, "shots": [s.source for _, s in views],
               "mode": "biplane" if len(views) == 2 else "monoplane", **res.to_dict(),
               "input_notes": notes}
        with atomic_folder(out_dir) as tmp:
            write_json_atomic(Path(tmp) / "registration.json", doc)
            for i, (v, s) in enumerate(views, 1):
                _overlay_png(Path(tmp) / f"overlay_{i}.png", v, vert, res.T_world_from_ct,
                             f"{level} GC {res.similarity:.2f} {'ok' if res.ok else 'NOT OK'}")
        tone = "green" if res.ok else "red"
        out.print(f"[{tone}]{level}: {'ok' if res.ok else 'NOT OK'}[/] GC {res.similarity:.3f}, "
                  f"{res.seconds:.1f} s{': ' + res.reason if res.reason else ''}", highlight=False)
        out.print(f"wrote {out_dir}", highlight=False)


@app.command()
def levelcheck(
    ct: Annotated[Path, typer.Argument(exists=True, help="The patient's CT (file or DICOM folder).")],
    shot: Annotated[Path, typer.Argument(exists=True, help="C-arm shot: DICOM, or PNG/TIFF with its JSON sidecar.")],
    marker_px: Annotated[str, typer.Option(help="Instrument tip on the shot, 'u,v' pixels (column, row).")] = ...,  # type: ignore[assignment]
    labels: Annotated[Optional[Path], typer.Option(exists=True, help="Vertebra label map; default: segment now.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Write the result as JSON here.")] = None,
    bone_dark: Annotated[Optional[bool], typer.Option("--bone-dark/--bone-bright", help="Shot polarity (default: by modality).")] = None,
    seed: Annotated[int, typer.Option(help="Optimiser seed (recorded).")] = 0,
) -> None:
    """Which vertebra is under the marker? Prints the level, the runner-up and the confidence,
    or refuses (AMBIGUOUS, exit code 3) when the answer cannot be trusted."""
    from spinenav.atomic import write_json_atomic
    from spinenav.imaging import read_volume
    from spinenav.registration.levelcheck import check_level, prepare_spine

    with handled():
        try:
            m = [float(x) for x in marker_px.split(",")]
            assert len(m) == 2
        except (ValueError, AssertionError):
            raise SpinenavError(f"--marker-px must be 'u,v' in pixels, got {marker_px!r}") from None
        notes: list[str] = []
        view, s = _shot_view(shot, bone_dark=bone_dark, lao_deg=None, cranial_deg=None, notes=notes)
        volume = read_volume(ct)
        spine = prepare_spine(volume, _labels_for(ct, volume, labels))
        res = check_level(spine, view, m, seed=seed)
        doc = {"schema": LEVELCHECK_SCHEMA, "ct": ct.name, "shot": s.source, "marker_px": m, "seed": seed,
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
