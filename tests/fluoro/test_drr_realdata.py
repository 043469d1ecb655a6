"""DRRs of the real chest CT: the patient seen from the documented side, label subsets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinenav.fluoro.carm import CarmGeometry, CarmPose, project_points, projection_matrix
from spinenav.fluoro.drr import prepare_attenuation, render_line_integrals
from spinenav.imaging import read_volume

HEART, T8 = 51, 36  # TotalSegmentator v2 ids (../shared/data/chest_ct/structures.csv)


@pytest.fixture(scope="module")
def chest(chest_ct_path, chest_labels_path):
    return read_volume(chest_ct_path), read_volume(chest_labels_path)


@pytest.mark.realdata
def test_chest_ap_shows_the_heart_on_the_image_right(chest):
    ct, labels = chest
    g = CarmGeometry.square(128, detector_mm=400.0)
    pose = CarmPose(math.pi, 0.0, tuple(ct.center_world_mm))  # prone AP, tube under the table
    heart_world = ct.world_from_index(np.argwhere(labels.array == HEART).mean(axis=0))
    t8_world = ct.world_from_index(np.argwhere(labels.array == T8).mean(axis=0))
    P = projection_matrix(g, pose)
    heart_px, t8_px = project_points(P, [heart_world, t8_world])
    assert heart_px[0] > t8_px[0] + 5  # patient's left (the heart) on the image's right
    # the heart-only DRR's first moment is the projection of the heart's (attenuation-weighted)
    # centroid: exact for a parallel beam, within ~1 px for this cone (12 deg half-angle)
    heart_only = render_line_integrals(prepare_attenuation(ct, labels=labels, keep_labels=[HEART]), g, pose)
    vv, uu = np.mgrid[:g.rows, :g.cols]
    centroid = np.array([(uu * heart_only).sum(), (vv * heart_only).sum()]) / heart_only.sum()
    assert np.linalg.norm(centroid - heart_px) < 2.0, (centroid, heart_px)
    full = render_line_integrals(prepare_attenuation(ct), g, pose)
    assert full.min() >= 0 and np.percentile(full, 50) > 1.0  # attenuating through the chest
    # one vertebra only: zero away from it, the same line integrals through it are below the full ones
    t8 = render_line_integrals(prepare_attenuation(ct, labels=labels, keep_labels=[T8]), g, pose)
    assert (t8 > 0).mean() < 0.1 and np.all(t8 <= full + 1e-4)
