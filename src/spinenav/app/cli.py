"""The ``spinenav`` command line: a thin layer over the Python API.

Only the app layer catches :class:`~spinenav.errors.SpinenavError` (``app/common.py``): it
prints one line to stderr and exits with code 2. Results go to stdout, progress and warnings to stderr. Degrees and
units named in option names (``--lordosis-deg``, ``--spacing-mm``) stop here: the library
works in radians and mm.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from spinenav import __version__
from spinenav.errors import SpinenavError
from spinenav.app.common import EXIT_BAD_INPUT, app, err, out  # noqa: F401  (EXIT_BAD_INPUT re-exported)
from spinenav.app.common import handled as _handled
from spinenav.app.common import progress_bar as _progress


def _version(value: bool) -> None:
    if value:
        out.print(f"spinenav {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Planning, fluoroscopy simulation and navigation for minimally invasive spine surgery."""


# ------------------------------------------------------------------------------------ info
def volume_summary(volume: Any) -> dict[str, Any]:
    """Geometry and intensity facts of a Volume, in the units named by each key."""
    from spinenav.imaging import check_ct_intensities

    lo, hi = volume.value_range
    return {
        "modality": volume.modality,
        "modality_source": volume.meta.get("modality_source", "unknown"),
        "source_format": volume.meta.get("source_format", "unknown"),
        "shape": list(volume.shape),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing_mm],
        "orientation": "".join(volume.axcodes),
        "oblique": volume.is_oblique,
        "origin_world_mm": [round(float(x), 4) for x in volume.origin_world_mm],
        "direction": [[round(float(x), 6) for x in row] for row in volume.direction],
        "extent_mm": [round(float(e), 2) for e in volume.extent_mm],
        "dtype": str(volume.array.dtype),
        "value_range": [lo, hi],
        "units": volume.meta.get("units", "HU"),
        "series": {k: volume.meta[k] for k in ("series_number", "manufacturer", "kvp_kv", "convolution_kernel",
                                               "slice_thickness_mm", "patient_position",
                                               "gantry_tilt_deg") if k in volume.meta},
        "notes": list(volume.meta.get("reader_notes", ())) + _padding_note(volume),
        "doubts": check_ct_intensities(volume),  # DICOM too: an odd RescaleSlope shows here
    }


def _padding_note(volume: Any) -> list[str]:
    """Scanners pad outside the reconstruction circle with values far below air (-2048, -3024)."""
    if volume.is_label or volume.value_range[0] >= -1100:
        return []
    share = float(np.mean(volume.array < -1100))
    return [f"{share:.1%} of voxels are below -1100 HU (min {volume.value_range[0]:.0f}): padding "
            "outside the scanner's field of view, not tissue"]


@app.command()
def info(
    ct: Annotated[Path, typer.Argument(help="CT: a DICOM series folder, .nii/.nii.gz, .nrrd or .mha.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    allow_gaps: Annotated[bool, typer.Option(help="DICOM: resample over missing slices instead of refusing.")] = False,
    strict: Annotated[bool, typer.Option(help="Treat every warning as an error.")] = False,
) -> None:
    """Geometry, orientation, spacing, HU range and warnings of a CT."""
    from spinenav.imaging import read_volume

    with _handled(strict=strict) as warned:
        with _progress() as bar:
            task = bar.add_task(f"reading {ct.name}", total=None)
            kwargs: dict[str, Any] = {}
            if ct.is_dir():
                kwargs = {"allow_gaps": allow_gaps, "strict": strict,
                          "progress": lambda done, total: bar.update(task, completed=done, total=total)}
            volume = read_volume(ct, **kwargs)
    summary = volume_summary(volume) | {"warnings": warned}
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=escape(ct.name), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if key in ("notes", "doubts", "warnings", "direction") or value in ({}, []):
            continue
        text = (", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict)
                else " x ".join(str(v) for v in value) if key in ("shape", "spacing_mm", "extent_mm")
                else str(value))
        table.add_row(key, escape(text))
    out.print(table)
    for key in ("notes", "doubts"):
        for line in summary[key]:
            out.print(f"[yellow]{key[:-1]}:[/] {escape(line)}", highlight=False)


# ------------------------------------------------------------------------------------ phantom
def _parse_pairs(items: list[str] | None, option: str) -> dict[str, float]:
    """'L4-L5=0.5' items into {'L4-L5': 0.5}."""
    result: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            result[key.strip()] = float(value)
        except ValueError:
            raise SpinenavError(f"{option}: expected NAME=NUMBER (e.g. L4=8), got {item!r}") from None
    return result


def _parse_spacing(text: str) -> float | tuple[float, float, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise SpinenavError(f"--spacing-mm: expected one number or three (e.g. 0.7,0.7,2.5), got {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise SpinenavError(f"--spacing-mm: expected one number or three, got {len(parts)}")


def _parse_levels(text: str) -> tuple[str, str]:
    top, sep, bottom = text.upper().partition("-")
    if not sep or not top or not bottom:
        raise SpinenavError(f"--levels: expected TOP-BOTTOM such as T10-S1, got {text!r}")
    return (top, bottom)


PhantomLevels = Annotated[str, typer.Option(help="Top and bottom level, e.g. T10-S1 or L3-S1.")]


def _make_phantom(params: Any) -> Any:
    from spinenav.phantom import generate_phantom

    with _progress() as bar:
        task = bar.add_task("phantom", total=1.0)
        return generate_phantom(params, progress=lambda step, frac: bar.update(
            task, completed=frac, description=f"phantom: {step}"))


@app.command()
def phantom(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    levels: PhantomLevels = "T10-S1",
    spacing_mm: Annotated[str, typer.Option(help="Voxel size in mm: one number, or i,j,k.")] = "1.0",
    lordosis_deg: Annotated[float, typer.Option(help="L1-S1 lordosis, degrees.")] = 45.0,
    scoliosis_deg: Annotated[float, typer.Option(help="Coronal Cobb angle, degrees.")] = 0.0,
    disc_height_loss: Annotated[Optional[list[str]], typer.Option(
        help="Disc height loss as a fraction, e.g. L4-L5=0.5 (repeatable).")] = None,
    stenosis: Annotated[Optional[list[str]], typer.Option(
        help="Canal AP narrowing as a fraction, e.g. L4=0.4 (repeatable).")] = None,
    slip_mm: Annotated[Optional[list[str]], typer.Option(
        help="Anterior slip over the level below, mm, e.g. L4=8 (repeatable).")] = None,
    scale: Annotated[float, typer.Option(help="Body size factor.")] = 1.0,
    noise_hu: Annotated[float, typer.Option(help="Gaussian noise SD, HU.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Random seed (recorded in truth.json).")] = 0,
) -> None:
    """Write a synthetic spine CT, its label map and its ground truth.

    Files: ct.nii.gz (HU, int16), labels.nii.gz (TotalSegmentator v2 ids), truth.json (every
    landmark, pedicle and safe screw corridor, in LPS mm).
    """
    from spinenav.phantom import PhantomParams, write_phantom

    with _handled():
        params = PhantomParams(
            levels=_parse_levels(levels), spacing_mm=_parse_spacing(spacing_mm),
            lordosis_deg=lordosis_deg, scoliosis_deg=scoliosis_deg,
            disc_height_loss=_parse_pairs(disc_height_loss, "--disc-height-loss"),
            stenosis=_parse_pairs(stenosis, "--stenosis"), slip_mm=_parse_pairs(slip_mm, "--slip-mm"),
            scale=scale, noise_hu=noise_hu, seed=seed)
        started = time.perf_counter()
        ph = _make_phantom(params)
        paths = write_phantom(ph, out_dir)
    err.print(f"phantom generated in {time.perf_counter() - started:.1f} s", highlight=False)
    for name, path in paths.items():
        out.print(f"{name}: {path}", highlight=False, markup=False)


# ------------------------------------------------------------------------------------ anatomy
def _parse_level_at(text: str | None) -> tuple[float, str] | None:
    if text is None:
        return None
    z, sep, level = text.partition(",")
    try:
        if not sep:
            raise ValueError
        return float(z), level.strip()
    except ValueError:
        raise SpinenavError(f"--level-at: expected Z_MM,LEVEL (e.g. -120.5,L3), got {text!r}") from None


def _segment_and_measure(ct_path: Path, *, backend: str, labelmap: Path | None, mapping: Path | None,
                         lowest_level: str | None, level_at: str | None) -> tuple[Any, Any, Any]:
    from spinenav.anatomy.segment import measure_segmentation, segment_spine
    from spinenav.imaging import read_volume

    with _progress() as bar:
        task = bar.add_task(f"reading {ct_path.name}", total=1.0)
        ct = read_volume(ct_path)
        bar.update(task, description="segmenting", completed=0.0)
        seg = segment_spine(ct, backend=backend, labelmap=labelmap, mapping=mapping,
                            lowest_level=lowest_level, level_at=_parse_level_at(level_at),
                            progress=lambda step, frac: bar.update(task, completed=0.6 * frac,
                                                                   description=f"segmenting: {step}"))
        model = measure_segmentation(ct, seg, progress=lambda step, frac: bar.update(
            task, completed=0.6 + 0.4 * frac, description=f"measuring: {step}"))
    return ct, seg, model


def _print_levels(seg: Any) -> None:
    table = Table(title="vertebrae (caudal to cranial)", title_justify="left")
    for col in ("level", "label id", "confidence", "notes"):
        table.add_column(col)
    for v in seg.vertebrae:
        table.add_row(str(v.name or "?"), str(v.label_id), f"{v.confidence:.2f}", escape("; ".join(v.flags)))
    out.print(table)
    tone = "yellow" if seg.naming.ambiguous else "green"
    out.print(f"[{tone}]levels:[/] {seg.naming.reason} (confidence {seg.naming.confidence:.2f})",
              highlight=False)
    for line in seg.naming.evidence:
        out.print(f"  - {escape(line)}", highlight=False)


BackendOption = Annotated[str, typer.Option(help="builtin (CT only, offline), labelmap, or totalsegmentator.")]
LabelmapOption = Annotated[Optional[Path], typer.Option(help="--backend labelmap: a label map file or a TotalSegmentator folder.")]
MappingOption = Annotated[Optional[Path], typer.Option(help="--backend labelmap: a JSON/CSV file mapping your ids to levels.")]
LowestOption = Annotated[Optional[str], typer.Option(help="Override: the lowest mobile vertebra is this level (e.g. L5).")]
LevelAtOption = Annotated[Optional[str], typer.Option(help="Override: Z_MM,LEVEL - the vertebra at LPS z is this level.")]


@app.command()
def segment(
    ct: Annotated[Path, typer.Argument(help="CT: a DICOM series folder, .nii/.nii.gz, .nrrd or .mha.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (written all or nothing).")],
    backend: BackendOption = "builtin",
    labelmap: LabelmapOption = None,
    mapping: MappingOption = None,
    lowest_level: LowestOption = None,
    level_at: LevelAtOption = None,
    label_ids: Annotated[str, typer.Option(help="Ids in labels.nii.gz: totalsegmentator or verse.")] = "totalsegmentator",
    meshes: Annotated[bool, typer.Option(help="Write one STL mesh per vertebra.")] = True,
) -> None:
    """Find, name and measure every vertebra of a CT.

    Writes labels.nii.gz, spine.json, landmarks.mrk.json (3D Slicer, LPS), measurements.csv and
    .md, overview.png and meshes/<level>.stl into the output folder.
    """
    from spinenav.anatomy.export import write_anatomy

    with _handled():
        if label_ids not in ("totalsegmentator", "verse"):
            raise SpinenavError(f"--label-ids: expected totalsegmentator or verse, got {label_ids!r}")
        ct_vol, seg, model = _segment_and_measure(ct, backend=backend, labelmap=labelmap, mapping=mapping,
                                                  lowest_level=lowest_level, level_at=level_at)
        paths = write_anatomy(out_dir, ct_vol, seg.labels, model, label_ids=label_ids,  # type: ignore[arg-type]
                              meshes=meshes)
    _print_levels(seg)
    for flag in model.flags:
        out.print(f"[yellow]flag[/] {escape(f'{flag.level}: {flag.message}')}", highlight=False)
    for line in model.warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    out.print(f"written to {out_dir}: " + ", ".join(sorted({p.name for k, p in paths.items()
                                                             if not k.startswith("mesh:")})),
              highlight=False, markup=False)


@app.command()
def measure(
    source: Annotated[Path, typer.Argument(help="A CT (file or DICOM folder), or a folder written by 'spinenav segment'.")],
    backend: BackendOption = "builtin",
    labelmap: LabelmapOption = None,
    mapping: MappingOption = None,
    lowest_level: LowestOption = None,
    level_at: LevelAtOption = None,
) -> None:
    """Print the measurements and flags per level (canal, discs, slip, lordosis, pedicles).

    From a 'spinenav segment' folder the stored spine.json is read; from a CT the vertebrae
    are segmented first (nothing is written).
    """
    from spinenav.anatomy.export import measurements_markdown
    from spinenav.anatomy.model import load_spine_model

    with _handled():
        if source.is_dir() and (source / "spine.json").is_file():
            model = load_spine_model(source / "spine.json")
        else:
            _, seg, model = _segment_and_measure(source, backend=backend, labelmap=labelmap,
                                                 mapping=mapping, lowest_level=lowest_level,
                                                 level_at=level_at)
            _print_levels(seg)
    out.print(measurements_markdown(model), highlight=False, markup=False, soft_wrap=True)  # a table: never wrap
    for flag in model.flags:
        out.print(f"flag {flag.level}: {flag.message}", highlight=False, markup=False)
    for line in model.warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


# ------------------------------------------------------------------------------------ demo
@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (created).")] = Path("out/demo"),
    spacing_mm: Annotated[float, typer.Option(help="Phantom voxel size, mm.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Run the main job on the built-in synthetic spine.

    A phantom T10-S1 (CT + true labels), its builtin segmentation and measurements, an MIS TLIF
    plan at L4-L5 from the left (four percutaneous screws, the tube, the cage, incisions, muscle
    spared), and the plan's report: prints where the report is.
    """
    from spinenav.anatomy.export import write_anatomy
    from spinenav.anatomy.segment import measure_segmentation, segment_spine
    from spinenav.app.figures import orthogonal_views_png
    from spinenav.app.report import render_plan_report
    from spinenav.phantom import PhantomParams, write_phantom
    from spinenav.planning import plan_procedure, write_plan

    t0 = time.perf_counter()
    with _handled():
        params = PhantomParams(spacing_mm=spacing_mm, seed=seed)
        ph = _make_phantom(params)
        paths = write_phantom(ph, out_dir / "phantom")
        l4 = next(v for v in ph.truth.vertebrae if v.name == "L4")
        paths["views"] = orthogonal_views_png(ph.ct, out_dir / "phantom_views.png", labels=ph.labels,
                                              centre_world_mm=np.asarray(l4.centre_world_mm),
                                              title="spinenav phantom T10-S1, through the L4 body")
        with _progress() as bar:
            task = bar.add_task("segmenting", total=1.0)
            seg = segment_spine(ph.ct, progress=lambda step, frac: bar.update(task, completed=frac, description=step))
        model = measure_segmentation(ph.ct, seg)
        anatomy = write_anatomy(out_dir / "anatomy", ph.ct, seg.labels, model)
        paths["spine"] = anatomy["spine"]
        paths["overview"] = anatomy["png"]
        plan = plan_procedure(ph.ct, model, seg.labels, levels="L4-L5", procedure="tlif", side="left")
        paths["plan"] = write_plan(plan, out_dir / "plan", ph.ct, seg.labels)["plan"]
        report = render_plan_report(plan, ph.ct, seg.labels, out_dir / "report.html")
    _print_levels(seg)
    for s in plan.screws:
        out.print(f"{s.id}: {s.catalogue_item}, margin {s.min_cortical_margin_mm:.1f} mm, grade {s.predicted_grade}"
                  + ("" if s.accepted else " NOT ACCEPTED"), highlight=False, markup=False)
    for f in plan.flags:
        out.print(f"flag: {f.message}", highlight=False, markup=False)
    for name, path in paths.items():
        out.print(f"{name}: {path}", highlight=False, markup=False)
    out.print(f"report: {report}  ({time.perf_counter() - t0:.0f} s)", highlight=False, markup=False)


# Commands defined in their own modules register on import.
from spinenav.app import cmd_fluoro, cmd_plan, cmd_register  # noqa: E402,F401  (registration side effect)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
