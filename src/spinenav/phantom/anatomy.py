"""Per-level dimensions, label ids and tissue intensities of the phantom.

Every number carries its source tag from ``docs/clinical-reference.md`` (section 1 for
morphometry, 7.2 for disc height) or says "assumed" where the reference has no figure; assumed
values are kept inside the ranges the reference quotes for neighbouring levels. Dimensions are
for ``scale = 1`` (an average adult) and are multiplied by ``PhantomParams.scale``.

Definitions follow clinical-reference.md section 1.1: pedicle width (PW) and height (PH) are
outer-cortex diameters at the isthmus; the transverse pedicle angle (TPA) is measured in the
vertebra's axial plane from the sagittal midline, positive = convergent (the axis runs
medially as it goes anteriorly). The sagittal angle is measured from the vertebra's axial
plane, positive = the anterior end of the axis lies caudal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

#: The levels the phantom models, cranial to caudal. S1 stands for the sacrum (S1 + the rest).
VERTEBRA_NAMES: tuple[str, ...] = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
#: Intervertebral discs, named "upper-lower", cranial to caudal.
DISC_NAMES: tuple[str, ...] = tuple(f"{a}-{b}" for a, b in zip(VERTEBRA_NAMES, VERTEBRA_NAMES[1:]))

# ----------------------------------------------------------------------------- label ids
#: TotalSegmentator v2 ids (``shared/data/chest_ct/structures.csv``).
VERTEBRA_LABELS: dict[str, int] = {
    "T10": 34, "T11": 33, "T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26,
}
SACRUM_LABEL = 25  # the sacrum below S1 (S2 to the apex)
RIB_LABELS: dict[tuple[str, str], int] = {
    ("T10", "left"): 101, ("T11", "left"): 102, ("T12", "left"): 103,
    ("T10", "right"): 113, ("T11", "right"): 114, ("T12", "right"): 115,
}
HIP_LABELS: dict[str, int] = {"left": 77, "right": 78}
#: TotalSegmentator's "spinal_cord" (79). The phantom gives this id to the whole dural sac
#: (cord, cauda equina and the CSF around them), not to the cord alone.
SPINAL_CORD_LABEL = 79
AUTOCHTHON_LABELS: dict[str, int] = {"left": 86, "right": 87}
ILIOPSOAS_LABELS: dict[str, int] = {"left": 88, "right": 89}
ORGAN_LABELS: dict[str, int] = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "aorta": 52, "inferior_vena_cava": 63,
}
#: Intervertebral discs are not in TotalSegmentator's main task. Extension: a disc's id is
#: DISC_LABEL_OFFSET + the id of the vertebra above it (L4-L5 -> 200 + 28 = 228).
DISC_LABEL_OFFSET = 200


def disc_label(disc_name: str) -> int:
    """Label id of a disc named "upper-lower" (e.g. "L4-L5" -> 228)."""
    upper = disc_name.split("-")[0]
    return DISC_LABEL_OFFSET + VERTEBRA_LABELS[upper]


def label_names() -> dict[str, int]:
    """Every label id the phantom can write, by TotalSegmentator-style name."""
    names: dict[str, int] = {"sacrum": SACRUM_LABEL}
    names.update({f"vertebrae_{v}": i for v, i in VERTEBRA_LABELS.items()})
    names.update({f"rib_{side}_{lvl[1:]}": i for (lvl, side), i in RIB_LABELS.items()})
    names.update({f"hip_{s}": i for s, i in HIP_LABELS.items()})
    names["spinal_cord"] = SPINAL_CORD_LABEL
    names.update({f"autochthon_{s}": i for s, i in AUTOCHTHON_LABELS.items()})
    names.update({f"iliopsoas_{s}": i for s, i in ILIOPSOAS_LABELS.items()})
    names.update(ORGAN_LABELS)
    names.update({f"intervertebral_disc_{d}": disc_label(d) for d in DISC_NAMES})
    return dict(sorted(names.items(), key=lambda kv: kv[1]))


# ----------------------------------------------------------------------------- tissues
class Tissue(IntEnum):
    """Tissue classes of :attr:`Phantom.tissue` (the map the CT intensities are drawn from)."""

    AIR = 0
    SKIN = 1
    SUBCUTANEOUS_FAT = 2
    MUSCLE = 3
    VISCERAL_FAT = 4
    LIVER = 5
    SPLEEN = 6
    KIDNEY = 7
    BLOOD = 8
    BOWEL = 9
    CSF = 10
    EPIDURAL_FAT = 11
    DISC = 12
    CANCELLOUS_BONE = 13
    CORTICAL_BONE = 14
    BOWEL_GAS = 15


#: Mean intensity of each tissue before blur and noise, HU. Typical CT values: assumed (the
#: clinical reference gives none).
TISSUE_HU: dict[Tissue, float] = {
    Tissue.AIR: -1000.0,
    Tissue.SKIN: 40.0,
    Tissue.SUBCUTANEOUS_FAT: -105.0,
    Tissue.MUSCLE: 50.0,
    Tissue.VISCERAL_FAT: -95.0,
    Tissue.LIVER: 60.0,
    Tissue.SPLEEN: 48.0,
    Tissue.KIDNEY: 32.0,
    Tissue.BLOOD: 42.0,
    Tissue.BOWEL: 28.0,
    Tissue.CSF: 8.0,
    Tissue.EPIDURAL_FAT: -80.0,
    Tissue.DISC: 88.0,
    Tissue.CANCELLOUS_BONE: 230.0,
    Tissue.CORTICAL_BONE: 1350.0,
    Tissue.BOWEL_GAS: -950.0,
}

#: Cortical shell thickness of vertebrae, sacrum and ilium (mm): assumed (1-1.5 mm typical).
CORTEX_MM = 1.3
#: Rib cortex (mm) and rib marrow intensity (HU): assumed.
RIB_CORTEX_MM = 1.5
RIB_MARROW_HU = 180.0
#: Cancellous bone of sacrum and ilium (HU): assumed (slightly below the lumbar bodies).
PELVIS_CANCELLOUS_HU = 200.0


# ----------------------------------------------------------------------------- levels
@dataclass(frozen=True)
class LevelDims:
    """Design dimensions of one vertebra (scale 1), mm and degrees (converted at use)."""

    name: str
    body_width_mm: float  # medio-lateral, at the endplates
    body_depth_mm: float  # antero-posterior, superior endplate
    body_height_mm: float  # at the body axis (mean of anterior and posterior)
    body_wedge_deg: float  # anterior minus posterior height as an angle (lordotic > 0)
    pedicle_width_mm: float  # PW, outer cortex at the isthmus
    pedicle_height_mm: float  # PH, outer cortex at the isthmus
    pedicle_tpa_deg: float  # transverse pedicle angle, convergent > 0
    pedicle_sagittal_deg: float  # anterior end caudal > 0
    canal_width_mm: float  # interpedicular distance
    canal_ap_mm: float  # bony canal AP diameter (mid-sagittal)
    tp_reach_mm: float  # transverse process tip: distance from the midline
    tp_posterior_deg: float  # transverse process direction: angle behind the frontal plane
    spinous_length_mm: float  # from the lamina to the tip
    spinous_slope_deg: float  # downward slope of the spinous process
    spinous_height_mm: float  # cranio-caudal height of the spinous process
    facet_angle_deg: float  # superior facet joint plane, angle from the sagittal plane


LEVELS: dict[str, LevelDims] = {
    # T10-T12: PW T12 7.70 = mean of 8.31 [KAUR16], 6.08 [PAK-CT], 8.7 [FIL22]; T10, T11 assumed
    # between the mid-thoracic minimum (T4-T5 about 4.5 [KAUR16] [FIL22]) and T12.
    # PH: "widest at T11-T12" [SAFEZONE]; T11 16.5 near the 17.02 outer maximum [GREEK05];
    # T10 14.0 and T12 16.0 assumed. TPA "decreasing toward T12" [KAUR16]; T12 4.0 [PAK-CT]
    # (sources disagree on its sign, section 1.2); T10 8, T11 6 assumed.
    # Canal: thoracic AP 17.03 (T7 minimum) to 21.2 [PAK-CT]: 17.0 assumed at T10-T12;
    # interpedicular 19.18-23.18 [PAK-CT]: 19.5/20.0/21.0 assumed.
    # Body height: anterior height rises to 27.14 at T12 [PAK-CT]; T10, T11 assumed below it.
    # Body width/depth, processes and facet angles: assumed.
    "T10": LevelDims("T10", 38.0, 29.0, 23.5, 0.0, 6.0, 14.0, 8.0, 8.0, 19.5, 17.0,
                     38.0, 30.0, 34.0, 38.0, 12.0, 70.0),
    "T11": LevelDims("T11", 40.0, 30.5, 25.0, 0.0, 7.0, 16.5, 6.0, 7.0, 20.0, 17.0,
                     34.0, 25.0, 32.0, 28.0, 14.0, 68.0),
    "T12": LevelDims("T12", 42.0, 32.0, 27.14, 0.0, 7.7, 16.0, 4.0, 6.0, 21.0, 17.0,
                     30.0, 15.0, 30.0, 15.0, 18.0, 65.0),
    # L1-L5: PW L1 7.43 [NEPAL], L4 10.48 [L4L5-ANAT], L5 12.18 [NEPAL]; L2, L3 interpolated
    # ("increasing caudally" [SAFEZONE]). PH L1 14.6 [NIND13], L4 13.4 [NIND13], L5 12.9
    # [COOK21]; L2, L3 interpolated. TPA L1 15.6 [NIND13], L5 23.7 [NIND13]; L2-L4 interpolated
    # (16 -> 24 degrees L1 -> L5, [NIND13] section 2.3). Sagittal angle: smallest at L5
    # [SAFEZONE]; values assumed. Canal: interpedicular 20.35 (L1) to 25.97 (L5) [NEPAL],
    # interpolated between; AP 15.6 at L5, roughly constant L1-L5 [COOK21]. Body: L5 superior
    # endplate depth 35.7, anterior height 30.3 and posterior 26.3 [COOK21] (height 28.3 and a
    # 6.4 degree wedge); other bodies assumed. Processes and facet angles: assumed.
    "L1": LevelDims("L1", 44.0, 33.0, 27.0, 0.0, 7.43, 14.6, 15.6, 4.0, 20.35, 15.6,
                    38.0, 8.0, 30.0, 8.0, 22.0, 30.0),
    "L2": LevelDims("L2", 46.0, 34.0, 27.5, 0.0, 8.2, 14.3, 17.6, 3.0, 21.8, 15.6,
                    44.0, 8.0, 31.0, 6.0, 23.0, 35.0),
    "L3": LevelDims("L3", 48.0, 35.0, 28.0, 0.0, 9.3, 14.0, 19.6, 2.0, 23.2, 15.6,
                    50.0, 8.0, 31.0, 5.0, 23.0, 40.0),
    "L4": LevelDims("L4", 50.0, 36.0, 28.0, 0.0, 10.48, 13.4, 21.7, 1.0, 24.6, 15.6,
                    46.0, 10.0, 30.0, 5.0, 22.0, 45.0),
    "L5": LevelDims("L5", 52.0, 35.7, 28.3, 6.4, 12.18, 12.9, 23.7, 0.0, 25.97, 15.6,
                    44.0, 10.0, 24.0, 5.0, 18.0, 50.0),
    # S1: PW 12.5 within the "10-15 typical adult" of [SPINEBASE-SAC] (secondary); PH 13.6
    # [OKUTAN03]; TPA 42 = mean of 43/41 [OKUTAN03]. Sagittal angle 0 assumed ([OKUTAN03]
    # gives 19 degrees to a reference the summary does not state). Canal (triangular,
    # wide and flat), body and alae: assumed.
    "S1": LevelDims("S1", 50.0, 36.0, 28.0, 0.0, 12.5, 13.6, 42.0, 0.0, 30.0, 13.0,
                    0.0, 0.0, 14.0, 20.0, 14.0, 50.0),
}

#: Middle height of each disc with no degeneration (mm). Lumbar values average 8.8 mm, the
#: mean of 130 non-degenerate discs [DH-METHODS]; the per-level split and the thoracic values
#: are assumed (lower thoracic discs are thinner).
DISC_HEIGHT_MM: dict[str, float] = {
    "T10-T11": 5.0, "T11-T12": 5.5, "T12-L1": 6.5,
    "L1-L2": 7.5, "L2-L3": 8.5, "L3-L4": 9.0, "L4-L5": 9.5, "L5-S1": 9.5,
}

#: Share of the L1-S1 disc lordosis carried by each lumbar disc: most at L4-L5 and L5-S1
#: (assumed, typical of standing lateral radiographs).
LORDOSIS_SHARE: dict[str, float] = {
    "L1-L2": 0.08, "L2-L3": 0.12, "L3-L4": 0.18, "L4-L5": 0.27, "L5-S1": 0.35,
}
#: Discs that carry the thoracolumbar kyphosis (equal shares).
KYPHOSIS_DISCS: tuple[str, ...] = ("T10-T11", "T11-T12", "T12-L1")

#: Levels whose vertebra carries a pair of ribs in the phantom (T10 to T12; T11 and T12 are
#: floating ribs, T12's the shortest).
RIB_LEVELS: tuple[str, ...] = ("T10", "T11", "T12")

#: Lower limit of a disc's height anywhere across the endplate (mm): parameter combinations
#: that squeeze a disc below this are refused (the vertebrae would touch).
MIN_DISC_HEIGHT_MM = 0.75
