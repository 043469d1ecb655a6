"""The labelmap backend: TotalSegmentator files and folders, VerSe ids, user maps with a
mapping file, resampling onto the CT grid, and clear refusals of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spinenav.anatomy.labelmap import LabelMapError, import_label_map, read_mapping
from spinenav.anatomy.labels import TS_V2_IDS, ts_id
from spinenav.imaging import crop_to_box, write_nifti
from spinenav.imaging.volume import Volume

from anat_cases import chest


def _stack(ids_bottom_to_top, *, shape=(16, 16, 40), spacing=2.0, origin=(0.0, 0.0, 0.0)):
    """A label map with one block per id, stacked from the feet (k = 0) to the head."""
    arr = np.zeros(shape, np.uint16)
    n = len(ids_bottom_to_top)
    h = shape[2] // n
    for k, i in enumerate(ids_bottom_to_top):
        arr[4:12, 4:12, k * h + 1:(k + 1) * h - 1] = i
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = origin
    return Volume(arr, aff, modality="SEG", is_label=True)


def _ct_like(vol: Volume) -> Volume:
    return Volume(np.full(vol.shape, -1000, np.int16), vol.affine)


# ----------------------------------------------------------------------------- real TotalSegmentator output
@pytest.fixture(scope="module")
def chest_case(chest_ct_path, chest_labels_path):
    return chest(str(chest_ct_path), str(chest_labels_path))


def test_totalsegmentator_file_keeps_its_ids_on_the_ct_grid(chest_case, chest_labels_path):
    ct, imp, _ = chest_case
    assert imp.scheme == "totalsegmentator" and not imp.resampled
    assert imp.labels.shape == ct.shape and np.allclose(imp.labels.affine, ct.affine)
    for name in ("C7", "T1", "T6", "T12", "L1"):
        assert imp.names[ts_id(name)] == name
    src = np.asarray(__import__("nibabel").load(str(chest_labels_path)).dataobj)
    for i in (31, 44, 79, 103):  # L1, C7, spinal cord, a rib: same voxels
        assert np.count_nonzero(imp.labels.array == i) == np.count_nonzero(src == i)
    assert not np.isin(imp.labels.array, [5, 51]).any()  # liver, heart dropped
    assert any("dropped" in w for w in imp.warnings)


def test_totalsegmentator_folder_gives_the_same_map(chest_case, tmp_path):
    ct, imp, _ = chest_case
    # a smaller field of view around T11-L1 keeps the files small
    idx = np.argwhere(np.isin(imp.labels.array, [31, 32, 33]))
    lo, hi = ct.world_from_index(idx.min(axis=0)), ct.world_from_index(idx.max(axis=0))
    box_lo, box_hi = np.minimum(lo, hi) - 5.0, np.maximum(lo, hi) + 5.0
    ct_small = crop_to_box(ct, box_lo, box_hi)
    lab_small = crop_to_box(imp.labels, box_lo, box_hi)
    folder = tmp_path / "segmentations"
    names = ["vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "spinal_cord", "rib_left_12"]
    for n in names:
        m = (lab_small.array == TS_V2_IDS[n]).astype(np.uint8)
        write_nifti(Volume(m, lab_small.affine, modality="SEG", is_label=True), folder / f"{n}.nii.gz")
    write_nifti(Volume(np.zeros(lab_small.shape, np.uint8), lab_small.affine, is_label=True), folder / "liver.nii.gz")
    got = import_label_map(folder, ct_small)
    assert got.scheme == "totalsegmentator-folder"
    assert got.names == {31: "L1", 32: "T12", 33: "T11"}
    keep = np.isin(lab_small.array, [TS_V2_IDS[n] for n in names])
    np.testing.assert_array_equal(got.labels.array, np.where(keep, lab_small.array, 0))
    assert any("liver" in w for w in got.warnings)


# ----------------------------------------------------------------------------- VerSe and user maps
def test_verse_ids_are_detected_from_their_order_and_converted():
    vol = _stack([22, 21, 20])  # L3, L2, L1 from the feet up: VerSe ids grow caudally
    got = import_label_map(vol, _ct_like(vol))
    assert got.scheme == "verse"
    assert got.names == {29: "L3", 30: "L2", 31: "L1"}
    assert set(np.unique(got.labels.array)) == {0, 29, 30, 31}


def test_verse_l6_and_t13_get_the_extension_ids():
    vol = _stack([25, 24, 20, 28])  # L6, L5, L1, T13 (from the feet up)
    got = import_label_map(vol, _ct_like(vol), scheme="verse")
    assert got.names == {27: "L5", 31: "L1", 140: "T13", 141: "L6"}


def test_a_user_map_with_a_json_or_csv_mapping(tmp_path):
    vol = _stack([3, 2, 1])
    (tmp_path / "m.json").write_text(json.dumps({"1": "L1", "2": "vertebrae_L2", "3": "L3"}))
    (tmp_path / "m.csv").write_text("id,name\n1,L1\n2,L2\n3,L3\n")
    for f in ("m.json", "m.csv"):
        got = import_label_map(vol, _ct_like(vol), mapping=tmp_path / f)
        assert got.scheme == "custom"
        assert got.names == {29: "L3", 30: "L2", 31: "L1"}
    assert read_mapping(tmp_path / "m.csv") == {1: 31, 2: 30, 3: 29}


def test_a_map_on_another_grid_is_resampled_onto_the_ct():
    vol = _stack([31, 30, 29], spacing=2.0)
    ct = Volume(np.zeros((32, 32, 80), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))
    got = import_label_map(vol, ct)
    assert got.resampled and got.labels.shape == ct.shape
    assert got.overlap_fraction == pytest.approx(1.0)
    # nearest neighbour: a 2 mm voxel becomes 8 voxels of 1 mm, ids unchanged
    assert np.count_nonzero(got.labels.array == 31) == pytest.approx(8 * np.count_nonzero(vol.array == 31), rel=0.05)


# ----------------------------------------------------------------------------- bad input
def test_empty_label_map_is_refused():
    vol = _stack([31])
    empty = vol.with_array(np.zeros(vol.shape, np.uint16))
    with pytest.raises(LabelMapError, match="empty"):
        import_label_map(empty, _ct_like(vol))


def test_label_map_outside_the_ct_is_refused():
    vol = _stack([31, 30], origin=(0.0, 0.0, 0.0))
    far = _stack([31, 30], origin=(0.0, 0.0, 900.0))
    with pytest.raises(LabelMapError, match="does not overlap the CT"):
        import_label_map(far, _ct_like(vol))


def test_mapping_naming_unknown_levels_is_refused(tmp_path):
    vol = _stack([2, 1])
    (tmp_path / "bad.json").write_text(json.dumps({"1": "L1", "2": "liver", "3": "L9"}))
    with pytest.raises(LabelMapError, match=r"2 entries name no vertebral level: 2 -> 'liver', 3 -> 'L9'"):
        import_label_map(vol, _ct_like(vol), mapping=tmp_path / "bad.json")


def test_mapping_that_misses_ids_is_refused(tmp_path):
    vol = _stack([2, 1])
    (tmp_path / "m.csv").write_text("1,L1\n")
    with pytest.raises(LabelMapError, match="ids 2 are in the label map but not in the mapping"):
        import_label_map(vol, _ct_like(vol), mapping=tmp_path / "m.csv")


def test_unknown_ids_are_refused():
    vol = _stack([31, 500])
    with pytest.raises(LabelMapError, match=r"500 \(unknown\)"):
        import_label_map(vol, _ct_like(vol), scheme="totalsegmentator")
    with pytest.raises(LabelMapError, match="not VerSe labels"):
        import_label_map(_stack([20, 40]), _ct_like(vol), scheme="verse")


def test_ambiguous_ids_need_the_scheme_named():
    vol = _stack([26])  # S1 (TotalSegmentator) or the sacrum (VerSe)?
    with pytest.raises(LabelMapError, match="could be TotalSegmentator v2 or VerSe"):
        import_label_map(vol, _ct_like(vol))
    assert import_label_map(vol, _ct_like(vol), scheme="totalsegmentator").names == {26: "S1"}


def test_a_map_without_vertebrae_is_refused():
    vol = _stack([79])
    with pytest.raises(LabelMapError, match="holds no vertebra"):
        import_label_map(vol, _ct_like(vol), scheme="totalsegmentator")
