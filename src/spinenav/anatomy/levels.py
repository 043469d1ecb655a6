"""Name the vertebrae (C1..S1) from anatomy, not from counting alone, and say how sure it is.

Anchors, each an anatomical fact the segmentation observed:

* **Sacrum**: the caudal end fused into a sacrum -> the vertebra above it is L5.
* **Ribs**: T12 is the lowest rib-bearing vertebra -> the first rib-free one below it is L1.

With both anchors in view there must be five lumbar vertebrae between them; any other count
is transitional anatomy (L6 / lumbarised S1, four lumbar / sacralised L5, T13 or absent
twelfth ribs), reported as ambiguous with both readings and the evidence. With one anchor the
names follow from it with lower confidence; with none there is nothing to count from, and the
result says so (the user gives ``lowest_level`` or ``level_at``). A user override always wins
and is recorded as the evidence.

Wrong-level surgery is what this module exists to prevent: it never guesses silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spinenav.errors import SpinenavError

#: Mobile vertebrae from the top, then the sacrum (TotalSegmentator v2 names).
LEVELS = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + \
         [f"L{i}" for i in range(1, 6)] + ["S1"]

#: How sure a naming is, by the evidence behind it (documented judgement, not a measured rate).
CONFIDENCE_BOTH_ANCHORS = 0.95  # sacrum and lowest rib agree on five lumbar vertebrae
CONFIDENCE_ONE_ANCHOR = 0.8  # counted from one anatomical anchor (transitional anatomy unseen)
CONFIDENCE_CONFLICT = 0.5  # anchors disagree: transitional anatomy or a missed rib/vertebra
CONFIDENCE_OVERRIDE = 1.0  # the user named a level


@dataclass
class LevelEvidence:
    """What the segmentation saw of one vertebra (caudal to cranial order in a list)."""

    kind: str = "vertebra"  # "vertebra", "S1" or "sacrum"
    rib_left: bool = False
    rib_right: bool = False
    touches_fov_edge: bool = False
    centre_z_mm: float | None = None  # LPS z of the vertebra's centre, for ``level_at``


@dataclass
class LevelNaming:
    """Names (caudal to cranial, aligned with the evidence list) with their quality."""

    names: list[str | None]
    confidence: float
    ambiguous: bool
    evidence: list[str] = field(default_factory=list)
    alternatives: list[list[str | None]] = field(default_factory=list)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.ambiguous and all(n is not None for n in self.names)


def _names_from(bottom_index_level: tuple[int, str], n: int) -> list[str | None]:
    """Names for n vertebrae (caudal to cranial) when vertebra `index` is `level`."""
    index, level = bottom_index_level
    pos = LEVELS.index(level)
    out: list[str | None] = []
    for i in range(n):
        k = pos - (i - index)  # going cranially moves up the LEVELS list (towards C1)
        out.append(LEVELS[k] if 0 <= k < len(LEVELS) else None)
    return out


def parse_level(name: str) -> str:
    """Canonical level name ('l5' -> 'L5'); raises for anything else."""
    canon = name.strip().upper()
    if canon not in LEVELS:
        raise SpinenavError(f"unknown vertebral level {name!r}; expected one of C1..C7, T1..T12, "
                            "L1..L5, S1")
    return canon


def name_levels(evidence: list[LevelEvidence], *, lowest_level: str | None = None,
                level_at: tuple[float, str] | None = None) -> LevelNaming:
    """Name vertebrae ordered caudal to cranial from the anatomical evidence.

    Parameters
    ----------
    evidence : list of LevelEvidence
        One per segmented vertebra, caudal first. A sacrum, when found, is the first item
        (kind "sacrum"), followed by "S1".
    lowest_level : str, optional
        User override: the most caudal *mobile* vertebra in the list is this level.
    level_at : (z_mm, level), optional
        User override: the vertebra whose centre is nearest LPS z = `z_mm` is `level`.
    """
    n = len(evidence)
    if n == 0:
        return LevelNaming([], 0.0, True, ["no vertebra was segmented"], reason="no vertebrae")
    if lowest_level is not None and level_at is not None:
        raise SpinenavError("give either --lowest-level or --level-at, not both")
    sacrum_items = [i for i, e in enumerate(evidence) if e.kind in ("sacrum", "S1")]
    mobile = [i for i in range(n) if i not in sacrum_items]

    def with_sacrum(names: list[str | None]) -> list[str | None]:
        out = list(names)
        for i in sacrum_items:
            out[i] = "sacrum" if evidence[i].kind == "sacrum" else "S1"
        return out

    if lowest_level is not None:
        level = parse_level(lowest_level)
        if not mobile:
            raise SpinenavError("--lowest-level names a mobile vertebra, but only the sacrum was found")
        names = with_sacrum(_names_from((mobile[0], level), n))
        return LevelNaming(names, CONFIDENCE_OVERRIDE, False,
                           [f"user: the lowest mobile vertebra is {level}"], reason="user override")
    if level_at is not None:
        z, level = level_at[0], parse_level(level_at[1])
        zs = [e.centre_z_mm for e in evidence]
        if any(v is None for v in zs):
            raise SpinenavError("--level-at needs every vertebra's centre")
        i = min(range(n), key=lambda j: abs(zs[j] - z))  # type: ignore[operator]
        names = with_sacrum(_names_from((i, level), n))
        return LevelNaming(names, CONFIDENCE_OVERRIDE, False,
                           [f"user: the vertebra at z={z:.1f} mm is {level}"], reason="user override")

    evidence_text: list[str] = []
    sacrum_anchor: list[str | None] | None = None
    if sacrum_items and mobile:
        sacrum_anchor = with_sacrum(_names_from((mobile[0], "L5"), n))
        evidence_text.append("a sacrum is in view: the vertebra above it is L5")
    ribbed = [i for i in mobile if evidence[i].rib_left or evidence[i].rib_right]
    rib_anchor: list[str | None] | None = None
    if ribbed:
        lowest = ribbed[0]
        below = [i for i in mobile if i < lowest]
        if below or not sacrum_items:  # the rib-free vertebra below T12 is in view (or no sacrum to contradict)
            rib_anchor = with_sacrum(_names_from((lowest, "T12"), n))
            sides = ("both sides" if evidence[lowest].rib_left and evidence[lowest].rib_right
                     else "one side only")
            evidence_text.append(f"the lowest rib-bearing vertebra (ribs on {sides}) is T12")
            if not below:
                evidence_text.append("no rib-free vertebra below it is in view, so the lowest "
                                     "ribbed vertebra may be above T12 (cut field of view)")
        if not (evidence[lowest].rib_left and evidence[lowest].rib_right):
            evidence_text.append("the lowest rib is seen on one side only (a rudimentary rib?)")

    if sacrum_anchor and rib_anchor:
        if sacrum_anchor == rib_anchor:
            return LevelNaming(sacrum_anchor, CONFIDENCE_BOTH_ANCHORS, False,
                               evidence_text + ["five lumbar vertebrae between T12 and the sacrum"],
                               reason="sacrum and ribs agree")
        n_lumbar = len([i for i in mobile if i < ribbed[0]])
        return LevelNaming(
            sacrum_anchor, CONFIDENCE_CONFLICT, True,
            evidence_text + [f"{n_lumbar} rib-free vertebrae between the lowest rib and the sacrum "
                             "(5 expected): transitional anatomy (L6 / lumbarised S1, sacralised L5) "
                             "or a missed rib; names counted from the sacrum, the rib count differs"],
            alternatives=[rib_anchor], reason="sacrum and ribs disagree")
    anchor = sacrum_anchor or rib_anchor
    if anchor is not None:
        ambiguous = rib_anchor is not None and not [i for i in mobile if i < ribbed[0]]
        return LevelNaming(anchor, CONFIDENCE_ONE_ANCHOR if not ambiguous else CONFIDENCE_CONFLICT,
                           ambiguous, evidence_text + ["only one anatomical anchor is in view: "
                                                       "transitional anatomy cannot be ruled out"],
                           reason="one anchor")
    return LevelNaming([None] * n, 0.0, True,
                       evidence_text + ["neither a sacrum nor a rib-bearing vertebra is in view: "
                                        "levels cannot be named from anatomy; give --lowest-level "
                                        "or --level-at"],
                       reason="no anchor")
