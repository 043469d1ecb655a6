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


def _thick_block(top_fraction: float):
    """A 0.7 x 0.7 x 2.5 mm CT of a bone block (600 HU, blurred in-plane only) in soft tissue
    (40 HU) whose slice above the cranial face is `top_fraction` bone (partial volume)."""
    truth = np.zeros((60, 60, 12), bool)
    truth[15:45, 18:42, 3:8] = True
    hu = np.where(truth, 600.0, 40.0)
    hu[15:45, 18:42, 8] = 40.0 + top_fraction * (600.0 - 40.0)
    hu = ndi.gaussian_filter(hu, (1.1, 1.1, 0.0))
    return Volume(hu.astype(np.float32), np.diag([0.7, 0.7, 2.5, 1.0]), modality="CT"), truth


def test_thick_slices_snap_in_plane_and_take_the_partial_volume_slice_beyond_a_face():
    """Across 2.5 mm slices: the in-plane edge is snapped slice by slice, never pulled across
    the slices; the slice beyond the cranial face joins the vertebra when more than half of it
    is bone (brighter than the half-maximum), and not when less."""
    for fraction, joins in ((0.7, True), (0.3, False)):
        ct, truth = _thick_block(fraction)
        slab = np.zeros((3, 3, 3), bool)
        slab[:, :, 1] = ndi.generate_binary_structure(2, 1)
        wrong = ndi.binary_dilation(truth, structure=slab)  # one voxel too wide in-plane
        snapped = _snap(wrong, ct)
        inner = snapped[:, :, 3:8]
        assert np.count_nonzero(inner ^ truth[:, :, 3:8]) <= 4 * 5, fraction  # corners at most
        top = snapped[:, :, 8]
        if joins:
            # all of it but its blurred rim (half of a partial slice is below the half-maximum)
            core = ndi.binary_erosion(truth[:, :, 7], iterations=2)
            assert np.all(top[core]) and not np.any(top & ~truth[:, :, 7])
        else:
            assert not top.any()
        assert not snapped[:, :, 2].any() and not snapped[:, :, 9:].any()  # one slice at most


def test_thick_slices_never_give_a_vertebra_a_voxel_touching_another():
    """A partial-volume slice between two vertebrae (a thin disc) belongs to neither."""
    ct, truth = _thick_block(0.7)
    lab = np.where(truth, 28, 0).astype(np.uint8)
    lab[15:45, 18:42, 9] = 29  # a vertebra right above the partial-volume slice
    snapped = snap_to_bone_edges(Volume(lab, ct.affine, modality="SEG", is_label=True), ct, [28, 29]).array
    assert not np.any(snapped[:, :, 8])
