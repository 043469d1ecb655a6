"""Vertebra segmentation behind one interface, the backend chosen by option.

* ``builtin`` (default): from the CT alone, offline, no model weights
  (:mod:`spinenav.anatomy.builtin`), levels named from anatomy (:mod:`spinenav.anatomy.levels`).
* ``labelmap``: an existing segmentation (TotalSegmentator output, VerSe ids, or a user's map
  with a mapping file), see :mod:`spinenav.anatomy.labelmap`.
* ``totalsegmentator``: runs TotalSegmentator when the user has installed it (an optional extra
  that downloads its own weights; never required).

Every backend returns a :class:`SpineSegmentation`: a label map on the CT's own grid in
TotalSegmentator v2 ids, the names with their confidence and evidence, and the warnings that
say which results to distrust.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinenav.anatomy.levels import LevelEvidence, LevelNaming, name_levels
from spinenav.errors import SpinenavError
from spinenav.imaging.io import check_ct_intensities
from spinenav.imaging.resample import resample_like
from spinenav.imaging.volume import Volume

BACKENDS = ("builtin", "labelmap", "totalsegmentator")

#: TotalSegmentator v2 ids of the vertebrae and the sacrum (shared data README).
TS_VERTEBRA_IDS = {"sacrum": 25, "S1": 26, "L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31,
                   **{f"T{i}": 44 - i for i in range(1, 13)},
                   **{f"C{i}": 51 - i for i in range(1, 8)}}
#: Vertebrae the builtin backend found but could not name get 150 + their caudal-to-cranial
#: order (outside TotalSegmentator's 1-118 and spinenav's discs 200+).
UNNAMED_VERTEBRA_BASE = 150
#: Thicker slices blur discs and joints beyond what the builtin route can separate.
MAX_SLICE_MM = 5.0
#: Said with every measurement made on the builtin segmentation until it is validated on real CT.
BUILTIN_FINDINGS_WARNING = (
    "measurements come from the builtin segmentation, whose vertebra boundaries on real CT agree "
    "with TotalSegmentator only to a median Dice of 0.85 (chest CT, benchmarks/bench_segment.py): "
    "slips, disc heights and canal figures are unconfirmed until checked on the images or "
    "remeasured on a validated segmentation (--backend labelmap)")
#: HU above which a voxel is metal (cortical bone stays below ~2000 HU).
METAL_HU = 2500.0
#: Edge snapping on the CT's own grid: a vertebra's surface lies at the half-maximum between
#: the brightest bone within EDGE_WINDOW_MM (in-plane; across slices only where they are that
#: thin) and soft tissue (EDGE_SOFT_TISSUE_HU), clipped to EDGE_HU_RANGE.
EDGE_WINDOW_MM = 2.0
#: Axes with voxels coarser than this (mm; thick slices) take no part in the in-plane edge
#: model: across 2.5 mm slices a cortex is not a resolved edge (the thin cortex of thoracic
#: pedicles peaks at ~220 HU), so neither smoothing nor the local maximum reaches across them.
EDGE_MAX_SPACING_MM = 1.5
EDGE_SOFT_TISSUE_HU = 40.0
#: The lower clip lets the half-maximum rule act on faint cortices too: a thin thoracic
#: pedicle's cortex peaking at ~220-260 HU on 2.5 mm slices has its half-maximum at 130-150 HU
#: (chest CT: clipping at 150 HU instead of 120 costs median Dice 0.0014, T1-T9 0.001-0.003 each).
EDGE_HU_RANGE = (120.0, 600.0)


@dataclass
class VertebraResult:
    name: str | None
    label_id: int
    confidence: float
    voxels: int
    partial: bool  # cut by the field of view
    flags: list[str] = field(default_factory=list)


@dataclass
class SpineSegmentation:
    labels: Volume  # on the CT grid, TotalSegmentator v2 ids (unnamed vertebrae: 150 + order)
    backend: str
    parameters: dict[str, Any]
    naming: LevelNaming
    vertebrae: list[VertebraResult]  # caudal to cranial
    warnings: list[str] = field(default_factory=list)


def check_ct_for_segmentation(ct: Volume) -> None:
    """Refuse what the builtin route cannot handle, with a one-line reason."""
    if ct.is_label:
        raise SpinenavError("the input is a label map, not a CT")
    if ct.modality not in ("CT", "") and ct.meta.get("modality_source") == "dicom":
        raise SpinenavError(f"the input is {ct.modality}, not CT: vertebra segmentation needs "
                            "Hounsfield units")
    doubts = check_ct_intensities(ct)
    if doubts:
        raise SpinenavError("the input does not look like a CT in Hounsfield units: "
                            + "; ".join(doubts))
    thickest = float(ct.spacing_mm.max())
    if thickest > MAX_SLICE_MM:
        raise SpinenavError(f"voxels are {thickest:.1f} mm along one axis (> {MAX_SLICE_MM:.0f} mm): "
                            "discs and facet joints cannot be resolved; use a thin-slice "
                            "reconstruction")


def _labels_near_metal(labels: Volume, ct: Volume, label_ids: list[int]) -> set[int]:
    """Ids of the labels with more than 20 voxels above METAL_HU within 5 voxels of them."""
    from scipy import ndimage as ndi

    metal = ct.array > METAL_HU
    if np.count_nonzero(metal) <= 20:
        return set()
    boxes = ndi.find_objects(labels.array)
    near: set[int] = set()
    for i in label_ids:
        if i > len(boxes) or boxes[i - 1] is None:
            continue
        box = tuple(slice(max(b.start - 5, 0), b.stop + 5) for b in boxes[i - 1])
        if np.count_nonzero(metal[box]) <= 20:
            continue
        grown = ndi.binary_dilation(labels.array[box] == i, iterations=5)
        if np.count_nonzero(metal[box] & grown) > 20:
            near.add(i)
    return near


def segment_spine(ct: Volume, *, backend: str = "builtin", labelmap: str | os.PathLike | None = None,
                  mapping: str | os.PathLike | None = None, lowest_level: str | None = None,
                  level_at: tuple[float, str] | None = None,
                  progress: Callable[[str, float], None] | None = None) -> SpineSegmentation:
    """Segment and name the vertebrae of `ct` with the chosen backend.

    Raises
    ------
    SpinenavError
        Unknown backend, options that do not fit it, or input it cannot handle (with the reason).
    """
    if backend not in BACKENDS:
        raise SpinenavError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "labelmap" and (labelmap is not None or mapping is not None):
        raise SpinenavError("--labelmap/--mapping apply only to --backend labelmap")
    if backend == "labelmap":
        if labelmap is None:
            raise SpinenavError("--backend labelmap needs --labelmap PATH (a file or a folder)")
        from spinenav.anatomy.labelmap import import_label_map

        imported = import_label_map(labelmap, ct, mapping=mapping)
        return _from_named_labels(ct, imported.labels, backend="labelmap",
                                  parameters={"labelmap": Path(labelmap).name,
                                              "mapping": Path(mapping).name if mapping else None,
                                              **imported.parameters},
                                  # a folder path may carry a patient's name: keep the file name only
                                  warnings=[w.replace(str(labelmap), Path(labelmap).name)
                                            for w in imported.warnings])
    if backend == "totalsegmentator":
        from spinenav.anatomy.labelmap import import_label_map

        imported = import_label_map(run_totalsegmentator(ct), ct, scheme="totalsegmentator")
        return _from_named_labels(ct, imported.labels, backend="totalsegmentator",
                                  parameters={"task": "total", **imported.parameters},
                                  warnings=imported.warnings)
    return _segment_builtin(ct, lowest_level=lowest_level, level_at=level_at, progress=progress)


def _segment_builtin(ct: Volume, *, lowest_level: str | None, level_at: tuple[float, str] | None,
                     progress: Callable[[str, float], None] | None) -> SpineSegmentation:
    from spinenav.anatomy.builtin import segment_builtin

    check_ct_for_segmentation(ct)
    result = segment_builtin(ct, progress=progress)
    warnings = list(result.trace.warnings)
    evidence = [LevelEvidence(kind=v.kind, rib_left=v.rib_left, rib_right=v.rib_right,
                              touches_fov_edge=v.touches_fov_edge,
                              centre_z_mm=None if v.centre_world_mm is None else float(v.centre_world_mm[2]))
                for v in result.trace.vertebrae]
    naming = name_levels(evidence, lowest_level=lowest_level, level_at=level_at)
    lut = np.zeros(256, np.uint8)
    verts: list[VertebraResult] = []
    for i, (v, name) in enumerate(zip(result.trace.vertebrae, naming.names)):
        label_id = TS_VERTEBRA_IDS[name] if name in TS_VERTEBRA_IDS else UNNAMED_VERTEBRA_BASE + i + 1
        lut[v.index] = label_id
        flags = []
        if v.touches_fov_edge:
            flags.append("partly outside the field of view: its measurements are incomplete")
        if name is None:
            flags.append("level unknown")
        verts.append(VertebraResult(name=name, label_id=label_id,
                                    confidence=naming.confidence * (0.5 if v.touches_fov_edge else 1.0),
                                    voxels=v.voxels, partial=v.touches_fov_edge, flags=flags))
    work_labels = result.labels.with_array(lut[result.labels.array])
    labels = snap_to_bone_edges(resample_like(work_labels, ct), ct, [v.label_id for v in verts])
    metal_ids = _labels_near_metal(labels, ct, [v.label_id for v in verts])
    near_metal = [v for v in verts if v.label_id in metal_ids]
    for v in near_metal:
        v.flags.append("metal within 5 mm: segmentation and measurements may be corrupted")
    if near_metal:
        warnings.append(f"very dense material (> {METAL_HU:.0f} HU: metal or undiluted contrast) next to {', '.join(str(v.name) for v in near_metal)}: "
                        "streak artefacts may corrupt those vertebrae and their measurements")
    if naming.ambiguous:
        warnings.append("level naming is ambiguous: " + "; ".join(naming.evidence))
    return SpineSegmentation(labels=labels, backend="builtin",
                             parameters={"work_spacing_mm": 1.0, "timings_s": result.trace.timings_s,
                                         "canal_coverage": round(result.trace.canal_coverage, 3),
                                         "sacrum_found": result.trace.sacrum_found,
                                         "lowest_level": lowest_level, "level_at": level_at},
                             naming=naming, vertebrae=verts, warnings=warnings)


def snap_to_bone_edges(labels: Volume, ct: Volume, ids: list[int]) -> Volume:
    """Move each vertebra's surface, by at most one CT voxel, onto the CT's bone edge.

    The builtin route works on a 1 mm grid; brought back to the CT's grid, its boundary is off
    by up to a voxel. Here, on the CT's own voxels: a labelled voxel touching background is
    dropped when darker than the local half-maximum edge threshold, a background voxel touching
    exactly one vertebra is added to it when brighter. The half-maximum is where a blurred
    edge's true position lies (phantom L1-L4 Dice 0.93 -> 0.96).

    On thick slices (an axis coarser than EDGE_MAX_SPACING_MM) the edge model is in-plane
    only, and across the slices a voxel is partial-volume bone: a slice just beyond a
    vertebra's cranial or caudal face (an endplate, the top of a lamina) is part bone, part
    soft tissue, and its HU is the mix. It belongs to the bone when brighter than the
    half-maximum between soft tissue and the vertebra's own bone next to it across the slice
    boundary (more than half of it is bone). One slice is added at most, and only where no
    other vertebra touches the voxel (chest CT, 2.5 mm slices: median Dice 0.813 -> 0.83).
    """
    from scipy import ndimage as ndi

    arr = labels.array
    is_vert = np.isin(arr, ids)
    if not is_vert.any():
        return labels
    box = ndi.find_objects(is_vert.astype(np.uint8))[0]
    box = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in box)
    sp = np.asarray(ct.spacing_mm, float)
    thick = sp > EDGE_MAX_SPACING_MM
    sm = ndi.gaussian_filter(ct.array[box].astype(np.float32), np.where(thick, 0.0, 0.35 / sp))
    size = tuple(1 if t else 2 * int(EDGE_WINDOW_MM // s) + 1 for s, t in zip(sp, thick))
    local_max = ndi.maximum_filter(sm, size=size)
    thr = np.clip(EDGE_SOFT_TISSUE_HU + 0.5 * (local_max - EDGE_SOFT_TISSUE_HU), *EDGE_HU_RANGE)
    lab = arr[box].copy()
    vert = is_vert[box].copy()
    # only the outside counts: background reached from the edge of the axial slice; what bone
    # encloses in the slice (the canal, marrow left open) keeps its boundary as it is
    slab = np.zeros((3, 3, 3), bool)
    slab[:, :, 1] = ndi.generate_binary_structure(2, 1)
    comps, _ = ndi.label(lab == 0, structure=slab)
    rim = np.unique(np.concatenate([comps[[0, -1], :, :].ravel(), comps[:, [0, -1], :].ravel()]))
    outside = np.isin(comps, rim[rim > 0])
    # neighbours through the faces, except across thick slices (treated below)
    faces = ndi.generate_binary_structure(3, 1)
    for ax in np.flatnonzero(thick):
        faces = np.moveaxis(faces, ax, 0)
        faces[[0, 2]] = False
        faces = np.moveaxis(faces, 0, ax)
    drop = vert & ndi.binary_dilation(outside, structure=faces) & (sm < thr)
    lab[drop] = 0
    vert[drop] = False
    near = tuple(1 if t else 3 for t in thick)
    high = ndi.maximum_filter(np.where(vert, lab, 0), size=near)
    low = ndi.minimum_filter(np.where(vert, lab, 255), size=near)
    add = outside & (high > 0) & (high == low) & (sm > thr)
    lab[add] = high[add]
    vert |= add
    for ax in np.flatnonzero(thick):
        # partial-volume bone across a thick slice boundary: brighter than the half-maximum
        # between soft tissue and the bone of the vertebra next to it across that boundary
        cube = np.ones((3, 3, 3), bool)
        high = ndi.maximum_filter(np.where(vert, lab, 0), footprint=cube)
        low = ndi.minimum_filter(np.where(vert, lab, 255), footprint=cube)
        grow = np.zeros_like(lab)
        for step in (1, -1):
            nb_lab = np.roll(np.where(vert, lab, 0), step, axis=ax)
            nb_max = np.roll(local_max, step, axis=ax)
            edge = [slice(None)] * 3
            edge[ax] = 0 if step == 1 else -1
            nb_lab[tuple(edge)] = 0
            half = np.clip(EDGE_SOFT_TISSUE_HU + 0.5 * (nb_max - EDGE_SOFT_TISSUE_HU), *EDGE_HU_RANGE)
            pv = (lab == 0) & (nb_lab > 0) & (sm > half)
            grow[pv] = nb_lab[pv]
        ok = (grow > 0) & (high == low) & (high == grow)
        lab[ok] = grow[ok]
    out = arr.copy()
    out[box] = lab
    return labels.with_array(out)


def _from_named_labels(ct: Volume, labels: Volume, *, backend: str, parameters: dict[str, Any],
                       warnings: list[str] | None = None) -> SpineSegmentation:
    """A segmentation whose ids already name the levels (TotalSegmentator v2 ids)."""
    ids = {int(i) for i in np.unique(labels.array)}
    names = {v: k for k, v in TS_VERTEBRA_IDS.items()}
    order = sorted(i for i in ids if i in names)  # ids grow cranially: 25 sacrum ... 50 C1
    verts = []
    edge = np.zeros(labels.shape, bool)
    edge[[0, -1], :, :] = edge[:, [0, -1], :] = edge[:, :, [0, -1]] = True
    for i in order:
        m = labels.array == i
        partial = bool(np.any(m & edge))
        verts.append(VertebraResult(name=names[i], label_id=i, confidence=1.0 if not partial else 0.5,
                                    voxels=int(m.sum()), partial=partial,
                                    flags=["partly outside the field of view"] if partial else []))
    naming = LevelNaming([v.name for v in verts], 1.0, False,
                         [f"names taken from the {backend} label ids"], reason=backend)
    if not verts:
        raise SpinenavError(f"the {backend} segmentation holds no vertebra label "
                            "(TotalSegmentator v2 ids 25-50)")
    return SpineSegmentation(labels=labels, backend=backend, parameters=parameters, naming=naming,
                             vertebrae=verts, warnings=list(warnings or []))


def run_totalsegmentator(ct: Volume) -> Volume:
    """Run the user's TotalSegmentator (``TotalSegmentator`` on PATH) on `ct`; its weights are
    its own business (it downloads them on first use)."""
    exe = shutil.which("TotalSegmentator")
    if exe is None:
        raise SpinenavError("TotalSegmentator is not installed (pip install TotalSegmentator; it "
                            "downloads its model weights on first use): use --backend builtin or "
                            "--backend labelmap with its output")
    from spinenav.imaging.io import read_volume, write_nifti

    with tempfile.TemporaryDirectory(prefix="spinenav-ts-") as tmp:
        src = write_nifti(ct, Path(tmp) / "ct.nii.gz")
        out = Path(tmp) / "labels.nii.gz"
        proc = subprocess.run([exe, "-i", str(src), "-o", str(out), "--ml"], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SpinenavError(f"TotalSegmentator failed (exit {proc.returncode}): {tail[0]}")
        labels = read_volume(out)
    return labels.with_array(labels.array.astype(np.uint8), is_label=True, modality="SEG")


def measure_segmentation(ct: Volume, seg: SpineSegmentation, *,
                         progress: Callable[[str, float], None] | None = None):
    """Landmarks, measurements and flags of a segmentation: the :class:`SpineModel`, carrying
    each name's confidence, evidence and alternatives and every warning."""
    from spinenav.anatomy.measure import measure_spine
    from spinenav.anatomy.model import Backend, LevelAlternative, LevelLabel

    named = [(i, v) for i, v in enumerate(seg.vertebrae) if v.voxels > 0]
    names = {v.label_id: (v.name or f"unnamed_{i + 1}") for i, v in named}
    level_labels = {}
    for i, v in named:
        alts = [LevelAlternative(name=alt[i], confidence=min(seg.naming.confidence, 0.5))
                for alt in seg.naming.alternatives if alt[i] is not None and alt[i] != v.name]
        level_labels[v.label_id] = LevelLabel(confidence=round(v.confidence, 3),
                                              evidence=list(seg.naming.evidence) + v.flags,
                                              ambiguous=seg.naming.ambiguous or v.name is None,
                                              alternatives=alts)
    parameters = {k: v for k, v in seg.parameters.items() if v is not None}
    warnings = list(seg.warnings)
    if seg.backend == "builtin":
        warnings.append(BUILTIN_FINDINGS_WARNING)
    model = measure_spine(ct, seg.labels, names=names,
                          backend=Backend(name=seg.backend, parameters=parameters),
                          level_labels=level_labels, warnings=warnings, progress=progress)
    return _withhold_partial_findings(model, {names[v.label_id] for _, v in named if v.partial})


def _withhold_partial_findings(model, partial_levels: set[str]):
    """A vertebra cut by the field of view has incomplete geometry (a half canal reads as
    stenosis): its findings, and those of the discs next to it, become warnings saying so."""
    if not partial_levels:
        return model
    withheld = []
    for v in model.vertebrae:
        if v.name in partial_levels and v.flags:
            withheld += v.flags
            v.flags = []
    for d in model.discs:
        if (d.upper in partial_levels or d.lower in partial_levels) and d.findings:
            withheld += d.findings
            d.findings = []
    if withheld:
        ids = {id(f) for f in withheld}
        model.flags = [f for f in model.flags if id(f) not in ids and
                       not any(f.model_dump() == w.model_dump() for w in withheld)]
        model.warnings = list(model.warnings) + [
            f"not reported as a finding (measured on or next to a vertebra partly outside the field "
            f"of view): {f.message}"
            for f in withheld]
    return model
