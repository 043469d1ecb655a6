"""Edge snapping of builtin labels onto the CT's half-maximum bone edge."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from spinenav.anatomy.segment import snap_to_bone_edges
from spinenav.imaging import Volume


def _block(tube: bool = False):
    """A 1 mm CT of a bone block (1000 HU) in soft tissue (40 HU), blurred like a scanner
    (sigma 0.8 mm); optionally with a dark tube through it along z (a 'canal')."""
    truth = np.zeros((40, 40, 30), bool)
    truth[10:30, 12:28, 5:25] = True
    canal = np.zeros_like(truth)
    if tube:
        canal[16:24, 16:24, :] = True
        truth &= ~canal
    hu = np.where(truth, 1000.0, np.where(canal, 0.0, 40.0))
    ct = Volume(ndi.gaussian_filter(hu, 0.8).astype(np.float32), np.eye(4), modality="CT")
    return ct, truth, canal


def _snap(mask, ct, label=28):
    labels = Volume(np.where(mask, label, 0).astype(np.uint8), np.eye(4), modality="SEG", is_label=True)
    return snap_to_bone_edges(labels, ct, [label]).array == label


def test_a_label_one_voxel_too_big_or_too_small_is_moved_onto_the_edge():
    ct, truth, _ = _block()
    for wrong in (ndi.binary_dilation(truth), ndi.binary_erosion(truth)):
        before = np.count_nonzero(wrong ^ truth)
        after = np.count_nonzero(_snap(wrong, ct) ^ truth)
        assert before > 1500
        # only the block's 8 corner voxels (blurred from three sides, below the half-maximum)
        assert after <= 8, after


def test_the_rim_of_a_dark_hole_enclosed_in_the_slice_is_left_alone():
    """The canal (or marrow the 1 mm route left open) is not 'outside': its rim is neither
    eroded nor grown, only the outer surface moves."""
    ct, truth, canal = _block(tube=True)
    wrong = ndi.binary_dilation(truth)
    snapped = _snap(wrong, ct)
    rim = wrong & ndi.binary_dilation(canal) & ~truth
    inside_block = rim.copy()
    inside_block[:, :, :5] = inside_block[:, :, 25:] = False  # not over the tube's mouths
    assert inside_block.sum() > 100
    assert np.all(snapped[inside_block])  # kept, although darker than the edge
    assert np.count_nonzero((snapped ^ truth) & ~rim) <= 8  # the outer surface is snapped


def test_vertebrae_never_take_each_others_voxels_or_a_voxel_touching_both():
    ct, truth, _ = _block()
    lab = np.where(truth, 28, 0).astype(np.uint8)
    lab[:, :, 15:] = np.where(truth[:, :, 15:], 29, 0)
    lab[:, :, 15] = 0  # a layer of bright voxels left out between two vertebrae, touching both
    snapped = snap_to_bone_edges(Volume(lab, np.eye(4), modality="SEG", is_label=True), ct, [28, 29]).array
    assert not np.any((snapped == 28) & (lab == 29)) and not np.any((snapped == 29) & (lab == 28))
    assert np.all(snapped[12:28, 14:26, 15] == 0)


def test_thick_slices_are_left_as_they_are():
    """Across 2.5 mm slices a cortex is not a resolved edge: nothing is moved."""
    ct, truth, _ = _block()
    thick = Volume(ct.array, np.diag([0.7, 0.7, 2.5, 1.0]), modality="CT")
    wrong = ndi.binary_dilation(truth)
    assert np.array_equal(_snap(wrong, thick), wrong)
