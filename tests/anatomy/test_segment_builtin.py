"""The builtin (CT-only) segmentation: found, named and overlapping the truth; bad input refused.

The thresholds below are regression floors just under the level measured when this was written;
the issue's targets are phantom Dice >= 0.95 for every vertebra and chest CT median >= 0.85 with
none below 0.75 (benchmarks/bench_segment.py prints the current figures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scipy import ndimage as ndi
from skimage.segmentation import watershed

from spinenav.anatomy.builtin import _cut_rib_necks, _flood_vertebrae, _keep_largest_piece
from spinenav.anatomy.segment import segment_spine
from spinenav.errors import SpinenavError
from spinenav.imaging import Volume, read_volume
from spinenav.phantom import PhantomParams, generate_phantom


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


@pytest.fixture(scope="module")
def phantom_and_seg():
    ph = generate_phantom(PhantomParams(spacing_mm=1.0, seed=11))
    return ph, segment_spine(ph.ct)


def test_phantom_every_level_found_and_named(phantom_and_seg):
    ph, seg = phantom_and_seg
    assert [v.name for v in seg.vertebrae] == ["sacrum", "S1", "L5", "L4", "L3", "L2", "L1",
                                               "T12", "T11", "T10"]
    assert seg.naming.ok and seg.naming.confidence >= 0.9
    assert any("sacrum" in e for e in seg.naming.evidence)
    assert any("T12" in e for e in seg.naming.evidence)


def test_phantom_labels_overlap_truth(phantom_and_seg):
    ph, seg = phantom_and_seg
    truth, ours = ph.labels.array, seg.labels.array
    dice = {v.name: _dice(ours == v.label_id, truth == v.label_id) for v in seg.vertebrae}
    lumbar = [dice[n] for n in ("L1", "L2", "L3", "L4", "L5")]
    assert min(lumbar) >= 0.975, dice  # measured 0.981-0.987
    # rib joints and the S1/S2 junction: measured T11 0.967, T12 0.974, S1 0.976
    assert min(dice[n] for n in ("T11", "T12")) >= 0.96, dice
    assert dice["S1"] >= 0.965, dice


@pytest.mark.parametrize("variant", [dict(slip_mm={"L4": 8.0}), dict(scoliosis_deg=20.0)],
                         ids=["slip", "scoliosis"])
def test_phantom_variants_keep_the_levels(variant):
    ph = generate_phantom(PhantomParams(spacing_mm=1.0, levels=("T12", "S1"), **variant))
    seg = segment_spine(ph.ct)
    assert [v.name for v in seg.vertebrae] == ["sacrum", "S1", "L5", "L4", "L3", "L2", "L1", "T12"]
    assert seg.naming.ok
    dice = {v.name: _dice(seg.labels.array == v.label_id, ph.labels.array == v.label_id)
            for v in seg.vertebrae}
    # measured: L1-L5 0.980-0.990 both; S1 0.981 (slip: the S1/S2 plane is placed by the median
    # of the lowest three pitches, not L5's own, which L4's slip lengthens: 0.897 so) and 0.966
    # (scoliosis)
    assert min(dice[n] for n in ("L1", "L2", "L3", "L4", "L5")) >= 0.975, dice
    assert dice["S1"] >= 0.95, dice


def test_noisy_whole_phantom_places_the_s1_s2_plane():
    # T10-S1 with 60 HU noise, seed 1: the pitch that places the S1/S2 plane is measured between
    # the pedicle peaks' sub-millimetre centres; between their integer positions it came out
    # 1.4 mm long here and S1 took 5,800 voxels of the sacrum (Dice 0.949). Measured S1 0.956,
    # L5 0.979, L4 0.982
    ph = generate_phantom(PhantomParams(spacing_mm=1.0, organs=False, seed=1, noise_hu=60.0))
    seg = segment_spine(ph.ct)
    assert [v.name for v in seg.vertebrae][:4] == ["sacrum", "S1", "L5", "L4"]
    dice = {v.name: _dice(seg.labels.array == v.label_id, ph.labels.array == v.label_id)
            for v in seg.vertebrae[1:4]}
    assert dice["S1"] >= 0.95, dice
    assert min(dice["L4"], dice["L5"]) >= 0.975, dice


#: Small phantoms (L3-S1, no organs) of the issue's hard variants, with the floors just under
#: what was measured: (S1, L4-L5) Dice.
HARD_VARIANTS = {
    # 2 mm slices: the sacral canal is traced as an enclosed hole over less of the sacrum, so the
    # sacral block was cut short by the trace's end and read as a pedicle (no sacrum, no names;
    # S1 0.843). Measured S1 0.965, L5 0.969, L4 0.973
    "anisotropic": (dict(spacing_mm=(0.8, 0.8, 2.0), seed=4), 0.955, 0.965),
    # 60 HU noise: the marrow, as homogeneous as a contrast-filled vessel once resampled, was
    # partly cut out of the bone as one, and the sacral alae went to the pelvis (S1 0.857, L5
    # 0.937). Measured S1 0.972, L5 0.982, L4 0.986
    "noisy": (dict(spacing_mm=1.0, seed=5, noise_hu=60.0), 0.96, 0.975),
}


@pytest.fixture(scope="module", params=sorted(HARD_VARIANTS))
def hard_variant(request):
    params, s1_floor, lumbar_floor = HARD_VARIANTS[request.param]
    ph = generate_phantom(PhantomParams(levels=("L3", "S1"), organs=False, **params))
    return ph, segment_spine(ph.ct), s1_floor, lumbar_floor


def test_phantom_hard_variants_are_named_from_the_sacrum(hard_variant):
    ph, seg, s1_floor, lumbar_floor = hard_variant
    assert [v.name for v in seg.vertebrae] == ["sacrum", "S1", "L5", "L4", "L3"]
    assert seg.parameters["sacrum_found"] and not seg.naming.ambiguous
    assert any("sacrum" in e for e in seg.naming.evidence)
    dice = {v.name: _dice(seg.labels.array == v.label_id, ph.labels.array == v.label_id)
            for v in seg.vertebrae}
    assert dice["S1"] >= s1_floor, dice
    assert min(dice["L4"], dice["L5"]) >= lumbar_floor, dice


@pytest.mark.realdata
def test_chest_ct_every_vertebra_found_and_named(chest_ct_path: Path, chest_labels_path: Path):
    ct, ref = read_volume(chest_ct_path), read_volume(chest_labels_path).array
    seg = segment_spine(ct)
    names = [v.name for v in seg.vertebrae]
    # fully in view in the reference: L1 .. T1 (L3, L2 and C7 touch the slab's ends)
    assert names[names.index("L1"):names.index("T1") + 1] == ["L1", "T12"] + [f"T{i}" for i in range(11, 0, -1)]
    full = [v for v in seg.vertebrae if not v.partial]
    dice = [_dice(seg.labels.array == v.label_id, ref == v.label_id) for v in full]
    # measured 0.810-0.888, median 0.851 (disc planes tilted as this spine's fitted discs are)
    assert min(dice) >= 0.80 and float(np.median(dice)) >= 0.847, dice
    assert all(v.confidence <= 0.8 for v in seg.vertebrae)  # one anchor (ribs): said so


def _water_cylinder(hu_inside: int, *, spacing=(1.0, 1.0, 1.0), shape=(120, 120, 60)) -> Volume:
    ijk = np.indices(shape)
    r = np.hypot(ijk[0] - shape[0] / 2, ijk[1] - shape[1] / 2)
    a = np.where(r < 50, hu_inside, -1000).astype(np.int16)
    return Volume(a, np.diag([*spacing, 1.0]))


@pytest.mark.parametrize("volume, match", [
    (_water_cylinder(0), "no spinal canal found"),
    (_water_cylinder(0, spacing=(1.0, 1.0, 6.0)), "thin-slice"),
    (Volume(np.full((40, 40, 40), 300, np.int16), np.eye(4)), "Hounsfield"),
])
def test_bad_input_is_refused_with_the_reason(volume, match):
    with pytest.raises(SpinenavError, match=match):
        segment_spine(volume)


def test_backend_options_are_checked():
    ct = _water_cylinder(0)
    with pytest.raises(SpinenavError, match="unknown backend"):
        segment_spine(ct, backend="magic")
    with pytest.raises(SpinenavError, match="only to --backend labelmap"):
        segment_spine(ct, labelmap="x.nii.gz")
    with pytest.raises(SpinenavError, match="needs --labelmap"):
        segment_spine(ct, backend="labelmap")


def test_a_vertebra_keeps_only_its_largest_piece():
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[2:12, 2:12, 2:12] = 1  # vertebra 1: a body ...
    labels[20:23, 20:23, 20:23] = 1  # ... and a loose piece (a vessel, a rib head)
    labels[14:16, 2:4, 2:4] = 2  # vertebra 2: one piece
    labels[25:28, 2:5, 2:5] = 3  # "other" bone stays
    _keep_largest_piece(labels, [1, 2], other=3)
    assert np.count_nonzero(labels == 1) == 1000
    assert np.all(labels[20:23, 20:23, 20:23] == 3)
    assert np.count_nonzero(labels == 2) == 8


def test_a_rib_head_does_not_widen_the_body_it_is_cut_from():
    """The body's half-width is its own (the median over its slices), not a rib head's reach:
    a head joined over a few slices is cut off, the body and what lies behind it are kept."""
    shape = (80, 60, 30)
    i, j, k = np.indices(shape)
    u, v = (i - 40).astype(np.float32), (j - 10).astype(np.float32)  # canal at i=40, j=10
    body = (np.abs(u) <= 15) & (v >= 8) & (v <= 40) & (k >= 2) & (k < 28)
    head = (u > 15) & (u <= 30) & (v >= 10) & (v <= 20) & (k >= 12) & (k < 20)
    process = (u > 15) & (u <= 30) & (v >= -15) & (v <= -6) & (k >= 12) & (k < 20)  # behind
    labels = np.where(body | head | process, 1, 0).astype(np.uint8)
    _cut_rib_necks(labels, 1, 2, u, v, sacral=0, sides=[[True, True]])
    assert np.all(labels[head & (u > 19)] == 2)  # beyond the body's half-width + 3 mm margin
    assert np.all(labels[body] == 1) and np.all(labels[process] == 1)


def test_a_joint_space_stops_the_flood_of_the_neighbour():
    """An articular process (a bar, 900 HU) joined to its vertebra through a thin neck (the pars)
    meets the neighbour's process across a joint bridged by partial volume (one 300 HU slice,
    still bone). On the distance transform alone the neighbour's flood crosses the thick joint
    before the vertebra's own passes the neck, and takes the process; with the joint's dip
    flooded last, each keeps its own."""
    shape = (60, 20, 20)
    sm = np.full(shape, 40.0, np.float32)
    bar = np.zeros(shape, bool)
    bar[:, 7:14, 7:14] = True
    bar[14:17] = False
    bar[14:17, 9:12, 9:12] = True  # the neck
    sm[bar] = 900.0
    sm[30, 7:14, 7:14] = 300.0  # the joint space, bridged
    sm = ndi.gaussian_filter(sm, 0.6)
    bone = sm > 110.0
    edt = ndi.distance_transform_edt(bone)
    markers = np.zeros(shape, np.int32)
    markers[0:3][bar[0:3]] = 1  # the vertebra, beyond the neck
    markers[40:43][bar[40:43]] = 2  # the neighbour
    process = bar.copy()
    process[:17] = False
    process[30:] = False
    plain = watershed(-edt, markers.copy(), mask=bone)
    assert np.count_nonzero(plain[process] == 2) > 0.9 * np.count_nonzero(process)  # crossed
    labels = _flood_vertebrae(edt, sm, bone, markers, bone.copy())
    assert np.all(labels[:30][bar[:30]] == 1)
    assert np.all(labels[31:][bar[31:]] == 2)
