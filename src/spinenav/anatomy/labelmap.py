"""The ``labelmap`` backend: import an existing vertebra segmentation onto the CT's grid.

Accepted inputs

* a TotalSegmentator output: one multi-label file with v2 ids (``--ml``), or its folder of one
  NIfTI per structure (``vertebrae_L1.nii.gz``, ``sacrum.nii.gz``, ``spinal_cord.nii.gz``, ...);
* a VerSe-style label map (1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum, 28 T13);
* any label map plus a mapping file (JSON ``{"3": "L1", ...}`` or CSV rows ``id,name``) from
  its ids to level names (``L1``, ``vertebrae_L1``, ``S1``, ``sacrum``, discs ``L4-L5``, or
  TotalSegmentator structure names such as ``spinal_cord``).

The result is always a label map with spinenav ids (TotalSegmentator v2, see
:mod:`spinenav.anatomy.labels`) on the CT's grid (nearest-neighbour resampling when the grids
differ), holding only the structures spine analysis uses (vertebrae, sacrum, discs, spinal
cord, ribs, hips, sternum, autochthon and iliopsoas muscles); organs are dropped.

>>> imp = import_label_map("seg/labels.nii.gz", ct)          # doctest: +SKIP
>>> imp.names[31], imp.scheme                                # doctest: +SKIP
('L1', 'totalsegmentator')
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from spinenav.anatomy.labels import (DISC_ID_OFFSET, EXTENSION_IDS, TS_V2_IDS, TS_V2_MAX_ID, VERSE_IDS, describe_ids,
                                     disc_name_from_id, is_vertebra_id, level_name, normalize_level, parse_disc,
                                     relabel, structure_name, ts_from_verse, ts_id)
from spinenav.errors import ImageReadError, SpinenavError
from spinenav.imaging.io import read_volume
from spinenav.imaging.resample import resample_like
from spinenav.imaging.volume import Volume

Scheme = Literal["auto", "totalsegmentator", "verse", "custom"]

#: A label map whose voxels overlap the CT less than this (fraction of its labelled voxels
#: that land inside the CT) gets a warning; none at all is an error.
MIN_OVERLAP_WARN = 0.5


class LabelMapError(SpinenavError):
    """A label map (or its mapping file) cannot be used as a vertebra segmentation."""


@dataclass
class ImportedLabels:
    """A label map brought onto the CT grid with spinenav (TotalSegmentator v2) ids.

    Attributes
    ----------
    labels : Volume
        uint16 spinenav ids, ``is_label=True``, the CT's grid.
    names : dict
        Vertebra id -> level name ("L1", "S1") for every vertebra present.
    scheme : str
        "totalsegmentator", "totalsegmentator-folder", "verse" or "custom".
    resampled : bool
        True when the source grid differed from the CT's.
    overlap_fraction : float
        Fraction of the source's labelled voxels that lie inside the CT's field of view.
    warnings : list of str
        What was assumed or dropped.
    """

    labels: Volume
    names: dict[int, str]
    scheme: str
    resampled: bool = False
    overlap_fraction: float = 1.0
    warnings: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> dict:
        """For the SpineModel's backend record."""
        return {"scheme": self.scheme, "resampled": self.resampled,
                "overlap_fraction": round(self.overlap_fraction, 4)}


# ----------------------------------------------------------------------------- mapping files
def read_mapping(path: str | os.PathLike[str]) -> dict[int, int]:
    """Read a mapping file (JSON object or CSV ``id,name``) into source id -> spinenav id.

    Raises
    ------
    LabelMapError
        Unreadable file, an id that is not a non-negative integer, or a name that is not a
        vertebral level, a disc, "sacrum" or a known TotalSegmentator structure (all the bad
        entries are listed).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise LabelMapError(f"{p}: cannot read the mapping file ({exc.strerror or exc})") from None
    pairs: list[tuple[str, str]] = []
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelMapError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise LabelMapError(f"{p}: expected a JSON object {{\"id\": \"level name\", ...}}, got "
                                f"{type(data).__name__}")
        for k, v in data.items():
            if isinstance(v, (int, float)) and not isinstance(k, (int, float)) and not str(k).strip().isdigit():
                k, v = v, k  # {"L1": 3} written the other way round
            pairs.append((str(k), str(v)))
    else:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        if rows and not rows[0][0].strip().lstrip("-").isdigit():
            rows = rows[1:]  # header
        for r in rows:
            if len(r) < 2:
                raise LabelMapError(f"{p}: CSV rows need two columns 'id,name', got {r!r}")
            pairs.append((r[0], r[1]))
    if not pairs:
        raise LabelMapError(f"{p}: the mapping file is empty; give one 'id -> level name' per label")
    out: dict[int, int] = {}
    bad_ids, bad_names = [], []
    for k, name in pairs:
        k, name = k.strip(), name.strip()
        if not re.fullmatch(r"\d+", k):
            bad_ids.append(k)
            continue
        try:
            out[int(k)] = _spinenav_id(name)
        except ValueError:
            bad_names.append(f"{k} -> {name!r}")
    if bad_ids:
        raise LabelMapError(f"{p}: ids must be non-negative integers, got {', '.join(map(repr, bad_ids))}")
    if bad_names:
        raise LabelMapError(
            f"{p}: {len(bad_names)} entr{'y' if len(bad_names) == 1 else 'ies'} name no vertebral level: "
            f"{', '.join(bad_names[:8])}{' ...' if len(bad_names) > 8 else ''}; use C1-C7, T1-T13, L1-L6, S1, "
            "sacrum, a disc like L4-L5, or a TotalSegmentator name such as spinal_cord")
    return out


def _spinenav_id(name: str) -> int:
    n = normalize_level(name)
    if n is not None:
        return ts_id(n)
    if parse_disc(name) is not None:
        return ts_id(name)
    if name in TS_V2_IDS:
        return TS_V2_IDS[name]
    raise ValueError(name)


# ----------------------------------------------------------------------------- schemes
_KEEP = set(TS_V2_IDS.values()) | set(EXTENSION_IDS.values())


def _ts_mapping(ids: np.ndarray, source: str) -> tuple[dict[int, int | None], list[str]]:
    """TotalSegmentator v2 ids -> spinenav ids (organs dropped); errors on unknown ids."""
    unknown = [int(i) for i in ids if i and not (i <= TS_V2_MAX_ID or i in _KEEP
                                                  or (i > DISC_ID_OFFSET and disc_name_from_id(int(i))))]
    if unknown:
        raise LabelMapError(f"{source}: ids {describe_ids(unknown)} are not TotalSegmentator v2 ids "
                            f"(1-{TS_V2_MAX_ID}) nor spinenav extensions; pass scheme='verse' or a mapping file")
    mapping: dict[int, int | None] = {}
    dropped = []
    for i in ids:
        i = int(i)
        if i == 0:
            continue
        if i in _KEEP or (i > DISC_ID_OFFSET and disc_name_from_id(i)):
            mapping[i] = i
        else:
            mapping[i] = None
            dropped.append(i)
    notes = [f"{source}: dropped {len(dropped)} structures not used by spine analysis (organs, vessels, "
             f"other muscles: ids {', '.join(map(str, dropped[:12]))}{' ...' if len(dropped) > 12 else ''})"] \
        if dropped else []
    return mapping, notes


def _verse_mapping(ids: np.ndarray, source: str) -> tuple[dict[int, int | None], list[str]]:
    unknown = [int(i) for i in ids if i and int(i) not in VERSE_IDS.values()]
    if unknown:
        raise LabelMapError(f"{source}: ids {', '.join(map(str, unknown))} are not VerSe labels (1-28: "
                            "1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum, 27 coccyx, 28 T13)")
    mapping: dict[int, int | None] = {int(i): ts_from_verse(int(i)) for i in ids if i}
    notes = ["VerSe 26 (the whole sacrum) imported as 'sacrum' (25): S1 is not separated from the sacrum"] \
        if 26 in mapping else []
    if 27 in mapping:
        notes.append("VerSe 27 (coccyx) has no spinenav id and was dropped")
    return mapping, notes


def _guess_scheme(vol: Volume, source: str) -> str:
    """'totalsegmentator' or 'verse' from the ids present and their cranio-caudal order.

    Ids above 28 only exist in TotalSegmentator maps. Below that, VerSe numbers vertebrae
    1-25 growing towards the feet, while TotalSegmentator's ids below 25 are organs and its
    vertebra ids (25-28: sacrum, S1, L5, L4) grow towards the head.
    """
    ids = [int(i) for i in np.unique(vol.array) if i]
    if max(ids) > 28:
        return "totalsegmentator"
    low = [i for i in ids if i < 25]
    if len(low) >= 2:
        if _cranial_order(vol, low) != "ascending":
            return "verse"
    elif len(ids) >= 2 and _cranial_order(vol, ids) == "ascending":
        return "totalsegmentator"
    elif len(ids) >= 2 and _cranial_order(vol, [i for i in ids if i <= 26]) == "descending":
        return "verse"
    raise LabelMapError(
        f"{source}: ids {ids} could be TotalSegmentator v2 or VerSe labels and their positions do not tell "
        "which; pass scheme='totalsegmentator' or scheme='verse' (CLI: --label-scheme)")


def _cranial_order(vol: Volume, ids: list[int]) -> str | None:
    """'ascending' when ids grow towards the head, 'descending' when they grow towards the
    feet, None when unclear (fewer than two ids or a mixed order)."""
    if len(ids) < 2:
        return None
    z = []
    for i in ids:
        idx = np.argwhere(vol.array == i)
        z.append(vol.world_from_index(idx.mean(axis=0))[2])
    dz = np.diff(np.array(z)[np.argsort(ids)])
    if np.all(dz > 0):
        return "ascending"
    if np.all(dz < 0):
        return "descending"
    return None


# ----------------------------------------------------------------------------- reading
_TS_FILE = re.compile(r"^(.+?)\.nii(\.gz)?$")


def _read_folder(folder: Path) -> tuple[Volume, list[str]]:
    """Combine a TotalSegmentator per-structure folder into one map with spinenav ids."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and _TS_FILE.match(p.name))
    if not files:
        raise LabelMapError(f"{folder}: no NIfTI files; expected TotalSegmentator's per-structure output "
                            "(vertebrae_L1.nii.gz, ...)")
    used, ignored = [], []
    for p in files:
        stem = _TS_FILE.match(p.name).group(1)  # type: ignore[union-attr]
        try:
            used.append((p, _spinenav_id(stem)))
        except ValueError:
            ignored.append(stem)
    if not used:
        raise LabelMapError(f"{folder}: none of its {len(files)} files is a spine structure "
                            "(expected names like vertebrae_L1.nii.gz, sacrum.nii.gz)")
    ref: Volume | None = None
    arr = None
    overlaps = 0
    for p, sid in used:
        v = read_volume(p)
        if ref is None:
            ref = v
            arr = np.zeros(v.shape, np.uint16)
        elif v.shape != ref.shape or not np.allclose(v.affine, ref.affine, atol=1e-3):
            raise LabelMapError(f"{p}: its grid {v.shape} differs from {used[0][0].name}'s {ref.shape}; all "
                                "files of a TotalSegmentator folder share one grid")
        m = np.asarray(v.array) > 0
        overlaps += int(np.count_nonzero(m & (arr > 0)))
        arr[m] = sid
    notes = []
    if ignored:
        notes.append(f"{folder}: ignored {len(ignored)} files that are not used by spine analysis "
                     f"({', '.join(ignored[:8])}{' ...' if len(ignored) > 8 else ''})")
    if overlaps:
        notes.append(f"{folder}: {overlaps} voxels belonged to two structures; the later file (by name) was kept")
    assert ref is not None
    return Volume(arr, ref.affine, modality="SEG", is_label=True,
                  meta={"source_format": "nifti", "units": "label"}), notes


def import_label_map(source: str | os.PathLike[str] | Volume, ct: Volume, *, scheme: Scheme = "auto",
                     mapping: str | os.PathLike[str] | dict | None = None) -> ImportedLabels:
    """Import a vertebra label map onto `ct`'s grid with spinenav (TotalSegmentator v2) ids.

    Parameters
    ----------
    source : path or Volume
        A label map file (NIfTI, NRRD, MHA), a TotalSegmentator per-structure folder, or a
        Volume already read.
    ct : Volume
        The CT the label map belongs to; the result is on its grid.
    scheme : {"auto", "totalsegmentator", "verse", "custom"}
        The source's ids. "auto": a folder is TotalSegmentator's; a file with `mapping` is
        "custom"; otherwise TotalSegmentator or VerSe, told apart by the ids present and
        their cranio-caudal order (refused when that cannot tell).
    mapping : path or dict, optional
        For "custom": a JSON/CSV file, or a dict, from source ids to level names.

    Returns
    -------
    ImportedLabels

    Raises
    ------
    LabelMapError
        An empty label map, ids the scheme does not know, a mapping that names non-levels or
        misses ids present in the map, no vertebra at all, or no overlap with the CT.
    ImageReadError
        A file that cannot be read.
    """
    name = str(source) if not isinstance(source, Volume) else "label map"
    warnings: list[str] = []
    if isinstance(source, Volume):
        vol = source
    else:
        p = Path(source)
        if not p.exists():
            raise ImageReadError(f"{p}: no such file or folder")
        if p.is_dir():
            if scheme not in ("auto", "totalsegmentator"):
                raise LabelMapError(f"{p}: a folder is read as TotalSegmentator's per-structure output; "
                                    f"scheme={scheme!r} does not apply")
            vol, notes = _read_folder(p)
            warnings += notes
            return _finish(vol, ct, {int(i): int(i) for i in np.unique(vol.array) if i}, "totalsegmentator-folder",
                           name, warnings)
        vol = read_volume(p)
    if not np.issubdtype(np.asarray(vol.array).dtype, np.integer):
        a = np.asarray(vol.array)
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise LabelMapError(f"{name}: holds non-integer values (range {a.min():g} to {a.max():g}); a label map "
                                "holds integer ids")
        vol = vol.with_array(np.round(a).astype(np.int64))
    arr = np.asarray(vol.array)
    if arr.size == 0 or not np.any(arr):
        raise LabelMapError(f"{name}: the label map is empty (every voxel is 0)")
    if arr.min() < 0:
        raise LabelMapError(f"{name}: has negative ids (min {int(arr.min())})")
    ids = np.unique(arr)
    if mapping is not None:
        if scheme not in ("auto", "custom"):
            raise LabelMapError(f"a mapping file goes with scheme='custom', not {scheme!r}")
        m = read_mapping(mapping) if not isinstance(mapping, dict) else _mapping_from_dict(mapping)
        missing = [int(i) for i in ids if i and int(i) not in m]
        if missing:
            raise LabelMapError(f"{name}: ids {', '.join(map(str, missing[:12]))} are in the label map but not in "
                                f"the mapping {mapping if not isinstance(mapping, dict) else ''}; map every id present "
                                "(or remove it from the label map)")
        return _finish(vol, ct, {k: v for k, v in m.items()}, "custom", name, warnings)
    if scheme == "custom":
        raise LabelMapError("scheme='custom' needs a mapping file (id -> level name)")
    if scheme == "auto":
        scheme = _guess_scheme(vol, name)  # type: ignore[assignment]
        warnings.append(f"{name}: ids read as {scheme} labels (detected from the ids and their order)")
    if scheme == "verse":
        mp, notes = _verse_mapping(ids, name)
    else:
        mp, notes = _ts_mapping(ids, name)
    warnings += notes
    return _finish(vol, ct, mp, scheme, name, warnings)


def _mapping_from_dict(d: dict) -> dict[int, int]:
    out, bad = {}, []
    for k, v in d.items():
        try:
            out[int(k)] = _spinenav_id(str(v))
        except ValueError:
            bad.append(f"{k} -> {v!r}")
    if bad:
        raise LabelMapError(f"mapping: {', '.join(bad)} name no vertebral level; use C1-C7, T1-T13, L1-L6, S1, "
                            "sacrum, a disc like L4-L5, or a TotalSegmentator structure name")
    return out


def _finish(vol: Volume, ct: Volume, mapping: dict[int, int | None], scheme: str, name: str,
            warnings: list[str]) -> ImportedLabels:
    arr = relabel(np.asarray(vol.array), mapping)
    if not np.any(arr):
        raise LabelMapError(f"{name}: no spine structure left after mapping the ids ({scheme}); check the scheme")
    src = Volume(arr, vol.affine, modality="SEG", is_label=True, meta={"units": "label"})
    total = int(np.count_nonzero(arr))
    same = src.shape == ct.shape and np.allclose(src.affine, ct.affine, atol=1e-3)
    if same:
        out = src
        inside = total
    else:
        out = resample_like(src, ct)
        # how much of the source's labelled anatomy lies inside the CT's field of view?
        idx = np.argwhere(arr > 0)
        if len(idx) > 200_000:
            idx = idx[np.random.default_rng(0).choice(len(idx), 200_000, replace=False)]
        ijk = ct.index_from_world(src.world_from_index(idx))
        ok = np.all((ijk > -0.5) & (ijk < np.array(ct.shape) - 0.5), axis=1)
        inside = int(round(ok.mean() * total))
        warnings.append(f"{name}: resampled (nearest neighbour) from {src.shape} onto the CT grid {ct.shape}")
    frac = inside / total if total else 0.0
    if not np.any(out.array):
        raise LabelMapError(f"{name}: does not overlap the CT (no labelled voxel falls inside the CT's field of "
                            "view); is it the segmentation of this CT?")
    if frac < MIN_OVERLAP_WARN:
        warnings.append(f"{name}: only {100 * frac:.0f}% of the labelled voxels lie inside the CT's field of view")
    present = [int(i) for i in np.unique(out.array) if i]
    names = {i: level_name(i) for i in present if is_vertebra_id(i)}
    if not names:
        found = ", ".join(structure_name(i) or str(i) for i in present[:8])
        raise LabelMapError(f"{name}: holds no vertebra (found {found}); a vertebra segmentation is needed")
    out = Volume(np.ascontiguousarray(out.array.astype(np.uint16)), ct.affine, modality="SEG", is_label=True,
                 meta={"units": "label"})
    return ImportedLabels(labels=out, names=names, scheme=scheme, resampled=not same, overlap_fraction=frac,
                          warnings=warnings)  # type: ignore[arg-type]
