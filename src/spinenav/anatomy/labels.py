"""Label id tables: vertebra level names, TotalSegmentator v2 ids, VerSe ids, disc ids.

spinenav's own label maps use **TotalSegmentator v2 ids** ("total" task; the table in
``shared/data/chest_ct/structures.csv``) for every structure TotalSegmentator knows, plus two
extensions it does not have:

* transitional levels: ``T13`` = :data:`T13_ID` (140) and ``L6`` = :data:`L6_ID` (141);
* intervertebral discs: ``200 +`` the id of the vertebra above (L4-L5 -> 200 + 28 = 228), the
  same rule as the phantom (:data:`DISC_ID_OFFSET`).

VerSe ids (the VerSe 2019/2020 challenge convention): 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6
(25 = L6), 26 sacrum, 27 coccyx, 28 T13. "S1" has no VerSe id (VerSe labels the whole sacrum
26); converting spinenav ids to VerSe writes S1 and the sacrum as 26.

>>> ts_id("L4"), verse_id("L4"), disc_id("L4-L5"), level_name(28)
(28, 23, 228, 'L4')
>>> ts_from_verse(25), level_name(ts_from_verse(25))
(141, 'L6')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

#: Vertebral levels in cranio-caudal order, including the transitional T13 and L6. "S1" is the
#: first sacral vertebra (TotalSegmentator's ``vertebrae_S1``); "sacrum" the rest of it.
ALL_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 14)),
    *(f"L{i}" for i in range(1, 7)),
    "S1",
)
#: The usual 25 levels C1-S1 (no T13, no L6).
STANDARD_LEVELS: tuple[str, ...] = tuple(n for n in ALL_LEVELS if n not in ("T13", "L6"))
#: Levels where lumbar criteria (Verbiest canal, Hasegawa foramen, DHI bands) apply.
LUMBAR_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5", "L6", "S1")

SACRUM = "sacrum"
T13_ID = 140  # spinenav extension (not a TotalSegmentator class)
L6_ID = 141  # spinenav extension (not a TotalSegmentator class)
DISC_ID_OFFSET = 200  # disc id = 200 + id of the vertebra above (spinenav and phantom extension)

#: TotalSegmentator v2 ("total" task) ids of the structures spine analysis uses.
TS_V2_IDS: dict[str, int] = {
    "sacrum": 25,
    "vertebrae_S1": 26, "vertebrae_L5": 27, "vertebrae_L4": 28, "vertebrae_L3": 29,
    "vertebrae_L2": 30, "vertebrae_L1": 31, "vertebrae_T12": 32, "vertebrae_T11": 33,
    "vertebrae_T10": 34, "vertebrae_T9": 35, "vertebrae_T8": 36, "vertebrae_T7": 37,
    "vertebrae_T6": 38, "vertebrae_T5": 39, "vertebrae_T4": 40, "vertebrae_T3": 41,
    "vertebrae_T2": 42, "vertebrae_T1": 43, "vertebrae_C7": 44, "vertebrae_C6": 45,
    "vertebrae_C5": 46, "vertebrae_C4": 47, "vertebrae_C3": 48, "vertebrae_C2": 49,
    "vertebrae_C1": 50,
    "hip_left": 77, "hip_right": 78,
    "spinal_cord": 79,
    "autochthon_left": 86, "autochthon_right": 87,
    "iliopsoas_left": 88, "iliopsoas_right": 89,
    **{f"rib_left_{i}": 91 + i for i in range(1, 13)},
    **{f"rib_right_{i}": 103 + i for i in range(1, 13)},
    "sternum": 116,
}
#: Largest id of the TotalSegmentator v2 "total" task (organs, vessels, muscles...: ids in
#: 1..118 that are not in :data:`TS_V2_IDS` are known to TotalSegmentator but not used here).
TS_V2_MAX_ID = 118

#: The extension names spinenav adds to the TotalSegmentator table.
EXTENSION_IDS: dict[str, int] = {"vertebrae_T13": T13_ID, "vertebrae_L6": L6_ID}

_NAME_FROM_TS: dict[int, str] = {v: k for k, v in {**TS_V2_IDS, **EXTENSION_IDS}.items()}

#: VerSe ids by level name ("sacrum" 26, "coccyx" 27).
VERSE_IDS: dict[str, int] = {
    **{f"C{i}": i for i in range(1, 8)},
    **{f"T{i}": 7 + i for i in range(1, 13)},
    **{f"L{i}": 19 + i for i in range(1, 7)},
    "sacrum": 26, "coccyx": 27, "T13": 28,
}
_NAME_FROM_VERSE: dict[int, str] = {v: k for k, v in VERSE_IDS.items()}

_LEVEL_RE = re.compile(r"^(?:vertebrae_)?([CTLS])(\d{1,2})$", re.IGNORECASE)
_DISC_RE = re.compile(r"^(?:intervertebral_disc_)?([CTLS]\d{1,2})-([CTLS]\d{1,2})$", re.IGNORECASE)


def normalize_level(name: str) -> str | None:
    """Canonical level name ("L4") from "L4", "l4", "vertebrae_L4"; "sacrum" stays; None when
    `name` is not a vertebral level."""
    s = str(name).strip()
    if s.lower() == "sacrum":
        return SACRUM
    m = _LEVEL_RE.match(s)
    if not m:
        return None
    cand = f"{m.group(1).upper()}{int(m.group(2))}"
    return cand if cand in ALL_LEVELS else None


def is_level(name: str) -> bool:
    """True for a vertebral level name (C1..S1, T13, L6; "vertebrae_" prefix allowed)."""
    n = normalize_level(name)
    return n is not None and n != SACRUM


def level_order(name: str) -> int:
    """Position of a level in cranio-caudal order (C1 = 0, ... S1, sacrum last).

    Raises
    ------
    ValueError
        If `name` is not a level.
    """
    n = normalize_level(name)
    if n is None:
        raise ValueError(f"{name!r} is not a vertebral level; expected one of {', '.join(ALL_LEVELS)}")
    return len(ALL_LEVELS) if n == SACRUM else ALL_LEVELS.index(n)


def level_region(name: str) -> str:
    """'cervical', 'thoracic', 'lumbar' or 'sacral'."""
    n = normalize_level(name)
    if n is None:
        raise ValueError(f"{name!r} is not a vertebral level")
    return {"C": "cervical", "T": "thoracic", "L": "lumbar"}.get(n[0], "sacral")


def ts_id(name: str) -> int:
    """TotalSegmentator v2 id (extension ids for T13, L6) of a level or structure name.

    >>> ts_id("T12"), ts_id("vertebrae_S1"), ts_id("sacrum"), ts_id("spinal_cord")
    (32, 26, 25, 79)
    """
    n = normalize_level(name)
    if n == SACRUM:
        return TS_V2_IDS["sacrum"]
    if n is not None:
        key = f"vertebrae_{n}"
        return TS_V2_IDS.get(key) or EXTENSION_IDS[key]
    d = parse_disc(name)
    if d is not None:
        return disc_id(name)
    if name in TS_V2_IDS:
        return TS_V2_IDS[name]
    raise ValueError(f"{name!r} is not a level, disc or known TotalSegmentator structure name")


def verse_id(name: str) -> int:
    """VerSe id of a level ("S1" and "sacrum" both give 26, the VerSe sacrum)."""
    n = normalize_level(name)
    if n == "S1":
        return VERSE_IDS["sacrum"]
    if n is None or n not in VERSE_IDS:
        raise ValueError(f"{name!r} has no VerSe id (VerSe ids cover C1-L6, T13, sacrum, coccyx)")
    return VERSE_IDS[n]


def structure_name(label_id: int) -> str | None:
    """TotalSegmentator-style structure name of a spinenav id ("vertebrae_L4", "sacrum",
    "intervertebral_disc_L4-L5", "spinal_cord"), None when unknown."""
    label_id = int(label_id)
    if label_id in _NAME_FROM_TS:
        return _NAME_FROM_TS[label_id]
    disc = disc_name_from_id(label_id)
    return f"intervertebral_disc_{disc}" if disc else None


def level_name(label_id: int) -> str | None:
    """Level name ("L4", "S1", "sacrum") of a spinenav (TotalSegmentator v2) vertebra id, None
    for ids that are not vertebrae."""
    s = _NAME_FROM_TS.get(int(label_id))
    if s is None:
        return None
    return normalize_level(s)


def vertebra_ids() -> dict[str, int]:
    """Level name -> spinenav id for every level (C1..S1, T13, L6), cranio-caudal order."""
    return {n: ts_id(n) for n in ALL_LEVELS}


def is_vertebra_id(label_id: int) -> bool:
    """True for a vertebra id (C1..S1, T13, L6; not the sacrum below S1)."""
    n = level_name(label_id)
    return n is not None and n != SACRUM


# ----------------------------------------------------------------------------- discs
def parse_disc(name: str) -> tuple[str, str] | None:
    """("L4", "L5") from "L4-L5" or "intervertebral_disc_L4-L5"; None if not a disc name of two
    adjacent-or-transitional levels in cranio-caudal order."""
    m = _DISC_RE.match(str(name).strip())
    if not m:
        return None
    up, lo = normalize_level(m.group(1)), normalize_level(m.group(2))
    if up in (None, SACRUM) or lo in (None, SACRUM):
        return None
    if level_order(up) >= level_order(lo) or level_order(lo) - level_order(up) > 2:
        return None
    return up, lo  # type: ignore[return-value]


def disc_name(upper: str, lower: str) -> str:
    return f"{normalize_level(upper)}-{normalize_level(lower)}"


def disc_id(name: str) -> int:
    """Disc id: 200 + the id of the vertebra above ("L4-L5" -> 228)."""
    d = parse_disc(name)
    if d is None:
        raise ValueError(f"{name!r} is not a disc name like 'L4-L5'")
    return DISC_ID_OFFSET + ts_id(d[0])


def disc_name_from_id(label_id: int) -> str | None:
    """"L4-L5" from 228 (the level below is the next standard level; T12-L1 for 232, L5-S1 for
    227; T13 and L6 discs: T13-L1, L6-S1). None when not a disc id."""
    up = level_name(int(label_id) - DISC_ID_OFFSET) if int(label_id) > DISC_ID_OFFSET else None
    if up in (None, SACRUM, "S1"):
        return None
    return f"{up}-{next_level(up)}"


def next_level(name: str) -> str:
    """The standard level below `name` (T12 -> L1, L5 -> S1, T13 -> L1, L6 -> S1)."""
    n = normalize_level(name)
    special = {"T12": "L1", "T13": "L1", "L5": "S1", "L6": "S1", "C7": "T1"}
    if n in special:
        return special[n]
    if n in (None, SACRUM, "S1"):
        raise ValueError(f"no level below {name!r}")
    return f"{n[0]}{int(n[1:]) + 1}"


# ----------------------------------------------------------------------------- conversions
def ts_from_verse(verse: int) -> int | None:
    """spinenav (TotalSegmentator v2) id of a VerSe id; None for the coccyx (27, no TS class).

    Raises
    ------
    ValueError
        For an id that is not a VerSe label (outside 1-28).
    """
    n = _NAME_FROM_VERSE.get(int(verse))
    if n is None:
        raise ValueError(f"{verse} is not a VerSe label id (1-28)")
    if n == "coccyx":
        return None
    return ts_id(n)


def verse_from_ts(label_id: int) -> int | None:
    """VerSe id of a spinenav vertebra id (S1 and sacrum -> 26); None for non-vertebrae."""
    n = level_name(label_id)
    if n is None:
        return None
    return verse_id(n)


def relabel(array: NDArray[np.integer], mapping: Mapping[int, int | None], *,
            drop_unmapped: bool = True) -> NDArray[np.uint16]:
    """Map ids through `mapping` with a lookup table (None or a missing id -> 0 when
    `drop_unmapped`; otherwise a missing id keeps its value). Returns uint16."""
    a = np.asarray(array)
    if a.size and (a.min() < 0):
        raise ValueError(f"label map has negative ids (min {int(a.min())})")
    top = int(a.max()) if a.size else 0
    lut = np.zeros(top + 1, np.uint16) if drop_unmapped else np.arange(top + 1, dtype=np.uint16)
    for src, dst in mapping.items():
        if 0 <= int(src) <= top:
            lut[int(src)] = 0 if dst is None else int(dst)
    return lut[a]


def to_verse(array: NDArray[np.integer]) -> NDArray[np.uint8]:
    """A spinenav (TotalSegmentator v2 ids) label map as VerSe ids: vertebrae only (S1 and the
    sacrum -> 26); everything else (discs, cord, ribs, ...) -> 0."""
    ids = np.unique(np.asarray(array))
    mapping = {int(i): verse_from_ts(int(i)) for i in ids if int(i) != 0}
    return relabel(array, mapping).astype(np.uint8)


def describe_ids(ids: Iterable[int]) -> str:
    """"28 (vertebrae_L4), 228 (intervertebral_disc_L4-L5), 999 (unknown)" for messages."""
    return ", ".join(f"{int(i)} ({structure_name(int(i)) or 'unknown'})" for i in ids)
