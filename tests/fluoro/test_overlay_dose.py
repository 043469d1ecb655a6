"""Plan overlay (projection consistency with the DRR) and dose accounting."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_allclose

from spinenav.fluoro.carm import CarmGeometry, CarmPose, project_points, projection_matrix
from spinenav.fluoro.dose import (SHOTS_PER_SCREW_FLUORO, DoseError, DoseLog, compare_guidance, field_area_at_1m_cm2,
                                  shot_dap_gy_cm2)
from spinenav.fluoro.drr import MetalCylinder, prepare_attenuation, render_line_integrals
from spinenav.fluoro.overlay import (OverlayError, OverlayItem, overlay_plan, plan_items, project_items, screw_tip_px,
                                     write_overlay_png)
from spinenav.fluoro.shots import read_shot, write_shot_png
from spinenav.imaging.volume import Volume

CENTROID_TOL_PX = 0.5


def _centroid(img):
    vv, uu = np.nonzero(img > 0.5 * img.max())
    w = img[vv, uu]
    return np.array([np.sum(uu * w), np.sum(vv * w)]) / w.sum()


@pytest.mark.parametrize("primary_deg, secondary_deg", [(180.0, 0.0), (90.0, 0.0), (140.0, 25.0), (-60.0, -30.0)])
def test_drr_and_projection_matrix_agree(primary_deg, secondary_deg):
    """A dense ball in an oblique, LAS-like CT grid: the DRR's blob sits where P projects the centre."""
    rot = np.array([[-1.0, 0, 0], [0, -math.cos(0.3), math.sin(0.3)], [0, math.sin(0.3), math.cos(0.3)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.8, 1.5])
    affine[:3, 3] = [30.0, 20.0, -40.0]
    arr = np.full((80, 80, 50), -1000, np.int16)
    ct = Volume(arr, affine)
    centre_idx = np.array([47.3, 31.8, 22.6])
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij")
    d = np.sqrt(((ii - centre_idx[0]) * 0.8) ** 2 + ((jj - centre_idx[1]) * 0.8) ** 2 + ((kk - centre_idx[2]) * 1.5) ** 2)
    arr[d <= 5.0] = 1500
    ct = Volume(arr, affine)
    centre_world = ct.world_from_index(centre_idx)
    g = CarmGeometry.square(128, detector_mm=200.0)
    pose = CarmPose(math.radians(primary_deg), math.radians(secondary_deg), tuple(ct.center_world_mm))
    img = render_line_integrals(prepare_attenuation(ct), g, pose)
    uv = project_points(projection_matrix(g, pose), centre_world)
    assert np.linalg.norm(_centroid(img) - uv) < CENTROID_TOL_PX


def test_metal_screw_drawn_where_projected():
    empty = Volume(np.full((10, 10, 10), -1000, np.int16), np.eye(4))
    empty.array[5, 5, 5] = 0  # something to crop to
    att = prepare_attenuation(empty)
    g = CarmGeometry.square(256, detector_mm=200.0)
    pose = CarmPose(math.radians(160.0), math.radians(10.0), (0.0, 0.0, 0.0))
    entry, tip = (5.0, 30.0, 10.0), (-10.0, -15.0, 0.0)
    img = render_line_integrals(att, g, pose, metal=[MetalCylinder(entry, tip, 6.0)])
    mid = project_points(projection_matrix(g, pose), (np.array(entry) + np.array(tip)) / 2)
    assert np.linalg.norm(_centroid(img) - mid) < 1.5  # the blob's centroid vs the projected middle
    [pr] = project_items(g, pose, [OverlayItem("cylinder", entry, tip, 6.0, role="screw")])
    assert_allclose(pr.b_px, screw_tip_px(g, pose, tip))
    # apparent width: rows across the shaft with metal ~ the projected width
    assert 4.0 < pr.width_px < 20.0


def test_overlay_png_and_plan_adapter(tmp_path):
    from spinenav.planning.plan import Corridor, Incision, Screw

    # the adapter reads these fields: fail loudly if the plan schema renames them
    for model, fields in ((Screw, ("entry_bone_world_mm", "tip_world_mm", "diameter_mm", "entry_skin_world_mm", "id")),
                          (Corridor, ("skin_entry_world_mm", "docking_world_mm", "target_world_mm", "tube_diameter_mm")),
                          (Incision, ("start_world_mm", "end_world_mm", "id"))):
        assert set(fields) <= set(model.model_fields)
    plan = SimpleNamespace(
        screws=[SimpleNamespace(id="L4-left", entry_bone_world_mm=(20.0, 30.0, 0.0), tip_world_mm=(5.0, -20.0, 0.0),
                                diameter_mm=6.5, entry_skin_world_mm=(45.0, 90.0, 0.0))],
        corridors=[SimpleNamespace(id="L4-L5-left", skin_entry_world_mm=None, docking_world_mm=(25.0, 40.0, -15.0),
                                   target_world_mm=(10.0, 0.0, -15.0), tube_diameter_mm=18.0)],
        incisions=[SimpleNamespace(id="incision-1", start_world_mm=(40.0, 90.0, 10.0), end_world_mm=(40.0, 90.0, -10.0))])
    items = plan_items(plan)
    assert [i.role for i in items] == ["screw", "trajectory", "tube", "incision"]
    g = CarmGeometry.square(96)
    pose = CarmPose(math.pi, 0.0)
    png, _ = write_shot_png(tmp_path / "s.png", np.full((96, 96), 80, np.uint8), g, pose)
    out = overlay_plan(read_shot(png), plan, tmp_path / "s_overlay.png", title="AP")
    from skimage.io import imread
    pic = imread(out)
    assert pic.shape[0] >= 512 and pic.shape[1] >= 512
    assert np.ptp(pic[..., :3].astype(int), axis=-1).max() > 100  # coloured marks were drawn
    with pytest.raises(OverlayError, match="diameter"):
        OverlayItem("cylinder", (0, 0, 0), (1, 1, 1))
    with pytest.raises(OverlayError, match="image is"):
        write_overlay_png(tmp_path / "x.png", np.zeros((10, 10), np.uint8), g, pose, items)


def test_dap_model_and_literature_consistency():
    g = CarmGeometry()
    area = field_area_at_1m_cm2(g)
    assert area == pytest.approx(23.0 * 23.0 * (1000.0 / 968.0) ** 2, rel=1e-9)
    dap = shot_dap_gy_cm2(field_area_1m_cm2=area)
    # clinical-reference 5.2: 2.93 Gy cm^2 per fluoro MIS TLIF [DUSAD18] over ~4 screws x 8.9 shots [OARM-CARM]
    implied = 2.93 / (4 * SHOTS_PER_SCREW_FLUORO)
    assert 0.5 < dap / implied < 2.0
    assert shot_dap_gy_cm2(kvp=100.0, field_area_1m_cm2=area) == pytest.approx(dap * (100 / 80) ** 2)
    assert shot_dap_gy_cm2(mas=5.0, field_area_1m_cm2=area) == pytest.approx(2 * dap)
    log = DoseLog()
    for label in ("ap", "lateral", "ap"):
        log.add_shot(g, label=label)
    log.add_shot(g, collimated_fraction=0.5)
    assert log.n_shots == 4 and log.total_dap_gy_cm2 == pytest.approx(3.5 * dap)
    with pytest.raises(DoseError):
        shot_dap_gy_cm2(kvp=200.0, field_area_1m_cm2=area)
    with pytest.raises(DoseError):
        log.add_shot(g, collimated_fraction=0.0)


def test_guidance_comparison():
    c = compare_guidance(4)
    assert c.fluoro_shots == pytest.approx(35.6)
    assert c.navigated_dap_gy_cm2 / c.fluoro_dap_gy_cm2 == pytest.approx(0.47 / 2.93)
    assert c.navigated_shot_equivalent < c.fluoro_shots
    assert any("OARM-CARM" in s for s in c.sources)
    assert compare_guidance(0).fluoro_dap_gy_cm2 == 0.0
    with pytest.raises(DoseError):
        compare_guidance(-1)
