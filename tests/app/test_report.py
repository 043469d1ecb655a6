"""The HTML plan report: figures on the phantom (geometry checked against its truth), the page's
structure, every flag in words, self-contained images, no patient identifiers, and the
headless-Chromium check (skipped with the reason when /usr/bin/chromium is absent).

The plan used here is built by hand from the phantom's ground truth (truth screw corridors,
the measured SpineModel), so these tests do not depend on the planner's own choices.
"""

from __future__ import annotations

import base64
import html
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from spinenav.anatomy import measure_spine
from spinenav.app.report import ReportError, render_plan_report, scrub_paths
from spinenav.app.report import figures as F
from spinenav.imaging.volume import Volume
from spinenav.phantom import PhantomParams, generate_phantom
from spinenav.planning.plan import (Cage, Corridor, Incision, PlanFlag, ProcedureRequest, Rod, Screw,
                                    ScrewAlternative, SurgicalPlan, TissueComparison, ct_fingerprint)

REPO = Path(__file__).resolve().parents[2]
CHECK_SCRIPT = REPO / "scripts" / "check_report_chromium.py"
CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def phantom():
    return generate_phantom(PhantomParams(levels=("L3", "S1"), spacing_mm=1.0, organs=False, seed=21))


@pytest.fixture(scope="session")
def spine(phantom):
    return measure_spine(phantom.ct, phantom.labels)


def _skin_point(ct: Volume, entry, axis) -> tuple[float, float, float]:
    """Where the screw axis, extended backwards from the bone entry, leaves the body."""
    e, a = np.asarray(entry, float), np.asarray(axis, float)
    t = np.arange(0.0, 150.0, 0.5)
    pts = e - t[:, None] * a
    from scipy import ndimage
    hu = ndimage.map_coordinates(ct.array, ct.index_from_world(pts).T, order=1, cval=-1024)
    out = np.nonzero(hu < -500)[0]
    return tuple(float(x) for x in pts[out[0]])


def synthetic_plan(ct: Volume, spine, truth) -> SurgicalPlan:
    """A MIS TLIF L4-L5 left plan made from the phantom's truth: four screws on the truth
    corridors (L5 right deliberately refused), a tube to the disc, one cage, incisions, the
    tissue comparison and flags of each severity (one message with characters HTML escapes)."""
    screws, entries = [], {}
    for level in ("L4", "L5"):
        v = truth.vertebra(level)
        for side in ("left", "right"):
            p = v.pedicles[side]
            c = p.corridor
            d = 6.5 if c.max_diameter_mm >= 6.5 + 0.5 else round(c.max_diameter_mm - 0.5, 1)
            e, t = np.asarray(c.entry_world_mm), np.asarray(c.tip_world_mm)
            length = float(np.floor(np.linalg.norm(t - e) / 5.0) * 5.0)
            tip = e + length * np.asarray(c.axis_world)
            refused = level == "L5" and side == "right"
            skin = _skin_point(ct, e, c.axis_world)
            entries[f"{level}-{side}"] = skin
            screws.append(Screw(
                id=f"{level}-{side}", level=level, side=side, entry_bone_world_mm=c.entry_world_mm,
                entry_skin_world_mm=skin, skin_to_bone_mm=float(np.linalg.norm(np.asarray(skin) - e)),
                tip_world_mm=tuple(tip), axis_world=c.axis_world, diameter_mm=d, length_mm=length,
                catalogue_item=f"PS-{d:.1f}x{length:.0f}", convergence_deg=p.transverse_angle_deg,
                sagittal_deg=p.sagittal_angle_deg, isthmus_width_mm=p.width_mm, isthmus_height_mm=p.height_mm,
                fill_ratio=d / p.width_mm, largest_safe_diameter_mm=c.max_diameter_mm,
                longest_safe_length_mm=c.max_length_mm, seat_mm=c.entry_exempt_mm,
                min_cortical_margin_mm=-1.5 if refused else (c.max_diameter_mm - d) / 2 + c.margin_mm,
                min_margin_world_mm=c.bottleneck_world_mm,
                min_margin_along_mm=float(np.linalg.norm(np.asarray(c.bottleneck_world_mm) - e)),
                min_margin_direction="medial" if refused else "lateral", required_margin_mm=1.0,
                predicted_grade="B" if refused else "A", max_breach_mm=1.5 if refused else 0.0,
                accepted=not refused, confidence=0.9 if not refused else 0.8,
                flags=["no_safe_screw"] if refused else [],
                reason=("the medial wall would be breached by 1.5 mm: no catalogue screw keeps a 1 mm margin"
                        if refused else None),
                alternatives=[ScrewAlternative(kind="smaller_screw", message="A 4.5 mm screw keeps 0.6 mm of bone",
                                               diameter_mm=4.5, length_mm=40.0, min_cortical_margin_mm=0.6,
                                               predicted_grade="A", fits=False),
                              ScrewAlternative(kind="skip_level", message="Skip L5 on the right; the rod spans "
                                               "L4 to S1", fits=True)] if refused else []))
    v4, v5 = truth.vertebra("L4"), truth.vertebra("L5")
    disc = np.asarray(truth.disc("L4-L5").centre_world_mm)
    target = disc + 10.0 * np.asarray(v4.axis_lr_world) + 8.0 * np.asarray(v4.axis_ap_world)
    dock = np.asarray(v5.facets["superior_left"].centre_world_mm) + 3.0 * np.asarray(v4.axis_ap_world)
    axis = (target - dock) / np.linalg.norm(target - dock)
    skin = np.asarray(_skin_point(ct, dock, axis))
    corridor = Corridor(
        id="L4-L5-left-tlif", procedure="tlif", level="L4-L5", side="left", target_kind="kambin_triangle",
        target_world_mm=tuple(target), docking_world_mm=tuple(dock), skin_entry_world_mm=tuple(skin),
        axis_world=tuple(axis), paramedian_offset_mm=abs(float(skin[0])), medial_angle_deg=20.0,
        craniocaudal_angle_deg=5.0, tube_diameter_mm=22.0, tube_catalogue_item="TUBE-22", tube_length_mm=70.0,
        depth_mm=float(np.linalg.norm(skin - dock)), target_depth_mm=float(np.linalg.norm(skin - target)),
        laminotomy_volume_mm3=2450.0, min_canal_distance_mm=2.4, crosses_canal=False,
        canal_source="spinal_cord label", kambin_inscribed_diameter_mm=9.5, kambin_centre_world_mm=tuple(target),
        confidence=0.45, flags=["tube_near_canal"], reason="the tube passes 2.4 mm from the dural sac")
    cage = Cage(id="L4-L5-cage", level="L4-L5", side="left", catalogue_item="TLIF-28x10x10-6", length_mm=28.0,
                width_mm=10.0, height_mm=10.0, lordosis_deg=6.0, disc_height_mm=9.8, centre_world_mm=tuple(disc),
                axis_world=(0.6, -0.8, 0.0), height_axis_world=tuple(v5.axis_cc_world), insertion_angle_deg=35.0)

    def incision(iid, side, pts, entries_ids):
        pts = np.asarray(pts, float)
        lo, hi = pts[np.argmin(pts[:, 2])], pts[np.argmax(pts[:, 2])]
        lo, hi = lo - np.array([0, 0, 7.5]), hi + np.array([0, 0, 7.5])
        return Incision(id=iid, side=side, centre_world_mm=tuple((lo + hi) / 2), direction_world=(0.0, 0.0, 1.0),
                        start_world_mm=tuple(lo), end_world_mm=tuple(hi), length_mm=float(np.linalg.norm(hi - lo)),
                        entries=entries_ids, paramedian_offset_mm=abs(float((lo[0] + hi[0]) / 2)))

    incisions = [incision("incision-1", "left", [entries["L4-left"], entries["L5-left"], skin],
                          ["L4-left", "L5-left", corridor.id]),
                 incision("incision-2", "right", [entries["L4-right"]], ["L4-right"])]
    flags = [
        PlanFlag(code="no_safe_screw", level="L5", side="right", item="L5-right", severity="critical",
                 message="L5 right: no screw in the catalogue keeps 1 mm of bone around it (the medial wall would be "
                         "breached by 1.5 mm); consider skipping L5 on the right.", value=-1.5, threshold=1.0,
                 unit="mm", source="clinical-reference 2.1"),
        PlanFlag(code="tube_near_canal", level="L4-L5", side="left", item=corridor.id, severity="warning",
                 message="The tube passes 2.4 mm from the dural sac (< 3 mm & close): confirm the docking point "
                         "on the images.", value=2.4, threshold=3.0, unit="mm", source="assumed"),
        PlanFlag(code="muscle_from_hu", severity="info",
                 message="Paraspinal muscle was taken from a HU mask, not from muscle labels; read from "
                         "/data/DOE_JANE/labels.nii.gz"),
    ]
    rods = [Rod(id="rod-left", side="left", screw_ids=["L4-left", "L5-left"], levels=["L4", "L5"],
                head_world_mm=[screws[0].entry_bone_world_mm, screws[2].entry_bone_world_mm], span_mm=35.0,
                overhang_mm=5.0, length_mm=45.0, max_head_offset_mm=0.0, ml_step_mm=2.0, depth_step_mm=3.0,
                bend_deg=4.0, ok=True)]
    tissue = TissueComparison(
        levels=["L4", "L5"], open_incision_length_mm=110.0, mis_incision_length_mm=sum(i.length_mm for i in incisions),
        open_muscle_disrupted_cm3=160.0, mis_muscle_disrupted_cm3=38.0, muscle_spared_cm3=122.0,
        muscle_spared_percent=76.0, open_bone_removed_mm3=5200.0, mis_bone_removed_mm3=2450.0,
        paraspinal_muscle_total_cm3=410.0, muscle_source="HU mask", open_lateral_extent_mm=45.0,
        definitions=["Open: a midline incision from the spinous process above to the one below."],
        flags=["muscle_from_hu"])
    return SurgicalPlan(
        spinenav_version="0.1.0", source_ct=ct_fingerprint(ct), spine=spine, levels=["L4", "L5"],
        procedures=[ProcedureRequest(procedure="tlif", levels=["L4-L5"], sides=["left"])],
        screws=screws, rods=rods, corridors=[corridor], cages=[cage], incisions=incisions,
        total_incision_length_mm=sum(i.length_mm for i in incisions), tissue=tissue, flags=flags,
        warnings=["labels read from C:\\cases\\DOE_JANE\\seg.nii.gz were resampled"],
        definitions=["Margins are measured to the label map's boundary."])


@pytest.fixture(scope="session")
def plan(phantom, spine):
    return synthetic_plan(phantom.ct, spine, phantom.truth)


@pytest.fixture(scope="session")
def report_file(plan, phantom, tmp_path_factory):
    return render_plan_report(plan, phantom.ct, phantom.labels, tmp_path_factory.mktemp("report") / "plan.html")


@pytest.fixture(scope="session")
def report_html(report_file):
    return report_file.read_text(encoding="utf-8")


def _png(b: bytes) -> np.ndarray:
    assert b.startswith(PNG_MAGIC)
    return imread(io.BytesIO(b), format="png")


def _data_uris(text: str) -> list[str]:
    return re.findall(r'<img[^>]*\bsrc="([^"]*)"', text)


# ----------------------------------------------------------------------------- figures
def test_reformat_plane_contains_the_screw_axis_and_sees_the_pedicle(phantom):
    """Both screw planes contain the truth axis; the axial plane's u is the vertebra's lr, its
    edges read R/L/A/P, the sagittal A/P/S/I; the truth isthmus centre samples as bone."""
    v = phantom.truth.vertebra("L4")
    p = v.pedicles["left"]
    c = p.corridor
    axial, sagittal = F.screw_planes(c.entry_world_mm, c.tip_world_mm, lr_world=v.axis_lr_world,
                                     cc_world=v.axis_cc_world)
    for plane in (axial, sagittal):
        _, _, w = plane.to_plane_mm(np.stack([c.entry_world_mm, c.tip_world_mm, p.isthmus_centre_world_mm]))
        np.testing.assert_allclose(w, 0.0, atol=1e-6)  # the axis (and the isthmus on it) lies in the plane
    np.testing.assert_allclose(axial.u_world, v.axis_lr_world, atol=1e-9)
    assert axial.edge_letters() == ("R", "L", "A", "P")
    assert sagittal.edge_letters() == ("A", "P", "S", "I")
    img = axial.sample(phantom.labels, order=0)
    u, vv, _ = axial.to_plane_mm(np.asarray(p.isthmus_centre_world_mm))
    col = int(round((u + axial.half_width_mm) / axial.pixel_mm))
    row = int(round((vv + axial.half_height_mm) / axial.pixel_mm))
    assert img[row, col] == v.label_id
    # the left pedicle lies right of the body's midline in the image (the patient's left on the right)
    u_mid, _, _ = axial.to_plane_mm(np.asarray(v.canal.centre_world_mm))
    assert u - u_mid > 8.0


def test_screw_figure_draws_a_convergent_left_screw_tilting_towards_the_midline(phantom):
    """Render the truth L4 left screw and find its green outline in the axial panel (seen from
    the feet, anterior up, the patient's left on the right): a convergent left screw runs
    medially going anterior, so its top (anterior) end is left of its bottom (posterior) end
    on the image. A flipped left-right or up-down axis would reverse the tilt."""
    v = phantom.truth.vertebra("L4")
    p = v.pedicles["left"]
    assert p.transverse_angle_deg > 10.0  # the phantom's L4 pedicles converge
    c = p.corridor
    png = F.screw_reformat_png(phantom.ct, c.entry_world_mm, c.tip_world_mm, 6.5, lr_world=v.axis_lr_world,
                               cc_world=v.axis_cc_world, labels=phantom.labels, vertebra_label=v.label_id,
                               min_margin_mm=1.9, min_margin_world_mm=c.bottleneck_world_mm, title="L4 left")
    assert len(png) < 300_000
    img = _png(png)
    green = (img[..., 1] > 0.7) & (img[..., 0] < 0.4) & (img[..., 2] < 0.4)
    rows, cols = np.nonzero(green[:, : green.shape[1] // 2])  # the axial panel is the left half
    assert rows.size > 100
    top = cols[rows < np.percentile(rows, 20)].mean()
    bottom = cols[rows > np.percentile(rows, 80)].mean()
    assert top < bottom - 15, f"anterior end at column {top:.0f}, posterior end at {bottom:.0f}"


def test_edge_letter():
    assert F.edge_letter([1, 0, 0]) == "L" and F.edge_letter([-0.9, 0.1, 0]) == "R"
    assert F.edge_letter([0, -1, 0.3]) == "A" and F.edge_letter([0.1, 0.2, -1]) == "I"
    with pytest.raises(ValueError):
        F.edge_letter([0, 0, 0])


def test_figures_are_light_pngs(phantom, plan):
    levels = [F.LevelMark(n, tuple(phantom.truth.vertebra(n).centre_world_mm)) for n in ("L3", "L4", "L5")]
    screws = [F.ScrewDrawing(s.entry_bone_world_mm, s.tip_world_mm, s.diameter_mm, s.id) for s in plan.screws]
    inc = [F.IncisionDrawing(i.start_world_mm, i.end_world_mm, i.id) for i in plan.incisions]
    pngs = {
        "3d": F.overview_3d_png(phantom.labels, [29, 28, 27], screws=screws, levels=levels),
        "skin": F.posterior_skin_png(phantom.ct, incisions=inc, levels=levels),
        "tissue": F.tissue_comparison_png({"a (cm)": 10.0, "b (cm³)": 5.0}, {"a (cm)": 4.0, "b (cm³)": None}),
    }
    for name, b in pngs.items():
        assert b.startswith(PNG_MAGIC) and 5_000 < len(b) < 300_000, (name, len(b))
    with pytest.raises(ValueError, match="same quantities"):
        F.tissue_comparison_png({"a": 1.0}, {"b": 1.0})


def test_skin_view_puts_the_patients_left_on_the_image_left(phantom):
    """One incision on the patient's left (x > 0): its red pixels must be in the left half."""
    v = phantom.truth.vertebra("L4")
    y = 60.0
    inc = [F.IncisionDrawing((40.0, y, v.centre_world_mm[2] - 15), (40.0, y, v.centre_world_mm[2] + 15), "L")]
    levels = [F.LevelMark("L4", tuple(v.centre_world_mm))]
    img = _png(F.posterior_skin_png(phantom.ct, incisions=inc, levels=levels, margin_mm=70.0))
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    cols = np.nonzero(red)[1]
    assert cols.size > 20 and cols.mean() < img.shape[1] / 2


# ----------------------------------------------------------------------------- report
SECTIONS = ("header", "summary", "flags", "overview", "screws", "rods", "access", "cages", "incisions", "tissue",
            "measurements", "about")


def test_report_has_every_section(report_html):
    for sec in SECTIONS:
        assert re.search(rf'<(section|header) id="{sec}"', report_html), sec
    assert report_html.lstrip().startswith("<!DOCTYPE html>")


def test_every_flag_message_is_in_the_report_in_words(report_html, plan):
    for f in plan.flags:
        assert html.escape(scrub_paths(f.message), quote=True) in report_html, f.code
    for f in plan.spine.flags:
        assert html.escape(f.message, quote=True) in report_html
    # the critical flag is listed before the warning and the info
    i_crit = report_html.index("no screw in the catalogue keeps 1 mm")
    i_warn = report_html.index("The tube passes 2.4 mm")
    assert i_crit < i_warn
    assert "&lt; 3 mm &amp; close" in report_html  # escaped, not raw markup


def test_doubtful_and_refused_items_are_marked_in_words(report_html):
    refused = report_html[report_html.index('id="screw-L5-right"'):]
    refused = refused[:refused.index("</article>")]
    assert "NOT SAFE" in refused and "Alternatives" in refused and "skip level" in refused
    tube = report_html[report_html.index('id="corridor-L4-L5-left-tlif"'):]
    tube = tube[:tube.index("</article>")]
    assert "CHECK" in tube and "confidence 0.45 is below 0.5" in tube
    ok = report_html[report_html.index('id="screw-L4-left"'):]
    ok = ok[:ok.index("</article>")]
    assert '<span class="badge">OK</span>' in ok
    banner = report_html[report_html.index('class="banner'):]
    assert "NOT SAFE" in banner[:600]


def test_images_are_embedded_valid_pngs(report_html, plan):
    uris = _data_uris(report_html)
    # one per screw, one per corridor, the 3D view, the skin view, the tissue comparison
    assert len(uris) == len(plan.screws) + len(plan.corridors) + 3
    for uri in uris:
        assert uri.startswith("data:image/png;base64,")
        png = base64.b64decode(uri.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_MAGIC) and len(png) < 300_000
        assert _png(png).shape[0] > 100
    assert not re.search(r'(src|href)="(https?:|//|file:)', report_html), "the page must not load anything"
    assert "<script" not in report_html


def test_numbers_shown_match_the_plan(report_html, plan):
    s = plan.screw("L4-left")
    sec = report_html[report_html.index('id="screw-L4-left"'):]
    assert f"{s.diameter_mm:.1f} mm diameter x {s.length_mm:.0f} mm length" in sec
    assert f"{s.min_cortical_margin_mm:.1f} mm at the lateral wall" in sec
    assert f"{plan.total_incision_length_mm / 10:.1f} cm" in report_html
    pw = plan.spine.vertebra("L4").measurements.pedicle_width_mm["left"]
    assert f"{pw:.1f}" in report_html[report_html.index('id="vertebra-table"'):]


def test_file_names_and_paths_never_reach_the_page(report_html):
    report_html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", report_html)
    assert "DOE" not in report_html and "JANE" not in report_html
    assert "[file]" in report_html


def test_report_refuses_another_ct_and_labels_off_grid(plan, phantom, tmp_path):
    other = phantom.ct.with_array(phantom.ct.array + 1)
    out = tmp_path / "r.html"
    with pytest.raises(ReportError, match="other voxel values"):
        render_plan_report(plan, other, phantom.labels, out)
    affine = phantom.labels.affine.copy()
    affine[:3, 3] += 2.0
    shifted = Volume(phantom.labels.array, affine, is_label=True, modality="SEG")
    with pytest.raises(ReportError, match="not on the CT's grid"):
        render_plan_report(plan, phantom.ct, shifted, out)
    assert not out.exists()


def test_report_written_atomically(report_file, tmp_path, plan, phantom, monkeypatch):
    """The page lands whole or not at all: a failure while rendering leaves an earlier file as
    it was and no partial file beside it."""
    assert report_file.suffix == ".html" and report_file.stat().st_size < 3_000_000
    assert not list(report_file.parent.glob(".*partial*"))
    out = tmp_path / "plan.html"
    out.write_text("previous report", encoding="utf-8")
    import spinenav.app.report.render as R

    def boom(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(R.F, "screw_reformat_png", boom)
    with pytest.raises(RuntimeError):
        render_plan_report(plan, phantom.ct, phantom.labels, out)
    assert out.read_text(encoding="utf-8") == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.html"]


def test_no_patient_name_from_a_dicom_reaches_the_report(phantom, spine, tmp_path):
    """CT written as DICOM with a patient's name (header and folder), read back, planned,
    reported: the name appears nowhere in the page."""
    import pydicom

    from spinenav.imaging import crop_to_box, read_dicom_series, write_dicom_series

    v = phantom.truth.vertebra("L4")
    c = np.asarray(v.centre_world_mm)
    box = (c - [80, 70, 45], c + [80, 200, 45])
    ct, labels = crop_to_box(phantom.ct, *box), crop_to_box(phantom.labels, *box)
    folder = write_dicom_series(ct, tmp_path / "DOE_JANE_19700101")
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "MRN4711"
        ds.SeriesDescription = "CT Doe^Jane lumbar"
        ds.save_as(f)
    ct_dicom = read_dicom_series(folder)
    assert np.allclose(ct_dicom.affine, labels.affine, atol=1e-3)
    p = synthetic_plan(ct_dicom, spine, phantom.truth)
    page = render_plan_report(p, ct_dicom, labels, tmp_path / "DOE_JANE" / "plan.html").read_text()
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)  # base64 may spell anything
    assert page.count('src="data:"') == 8
    for needle in ("Doe", "DOE", "Jane", "JANE", "MRN4711", "19700101"):
        assert needle not in page, needle


def test_scrub_paths():
    assert scrub_paths("read /a/b/c.nii.gz and D:\\x\\y.dcm, ok") == "read [file] and [file], ok"
    assert scrub_paths("see cases/DOE/seg/x (or ~/DOE/y).") == "see [file] (or [file])."
    for kept in ("L4-L5: 3.5 mm", "left / right, L/R, mm/s", "spinenav.plan/1 v0.1.0", "TLIF-28x10x10-6"):
        assert scrub_paths(kept) == kept


def test_a_plan_without_implants_says_so(plan, phantom):
    """No screw, corridor, cage, incision or tissue comparison: the page still renders, says
    the plan is empty and is not marked OK."""
    from spinenav.app.report import plan_report_html

    empty = plan.model_copy(update={"screws": [], "rods": [], "corridors": [], "cages": [], "incisions": [],
                                    "total_incision_length_mm": 0.0, "tissue": None, "flags": plan.flags[:1]})
    page = plan_report_html(empty, phantom.ct, phantom.labels)
    assert "The plan holds no screw, corridor or cage" in page and "The plan has no incision." in page
    assert "The plan has no tissue comparison." in page
    banner = page[page.index('class="banner'):][:300]
    assert "NOT SAFE" in banner  # the critical flag kept
    assert len(_data_uris(page)) == 2  # the 3D view (vertebrae) and the skin view


def test_report_of_a_plan_made_by_the_planner(phantom, spine, tmp_path):
    """End to end on the phantom: plan_procedure (MIS TLIF L4-L5 left), then the report: one
    article and one figure per screw and corridor, every flag's words, every item's id."""
    from spinenav.planning.procedure import plan_procedure

    plan = plan_procedure(phantom.ct, spine, phantom.labels, levels="L4-L5", procedure="tlif", side="left")
    page = render_plan_report(plan, phantom.ct, phantom.labels, tmp_path / "tlif.html").read_text(encoding="utf-8")
    assert len(plan.screws) == 4 and len(plan.corridors) == 1
    for s in plan.screws:
        assert f'id="screw-{s.id}"' in page
    for c in plan.corridors:
        assert f'id="corridor-{c.id}"' in page
    for f in plan.flags:
        assert html.escape(scrub_paths(f.message), quote=True) in page, f.code
    assert len(_data_uris(page)) == len(plan.screws) + len(plan.corridors) + 3
    assert f"{plan.total_incision_length_mm / 10:.1f} cm" in page


# ----------------------------------------------------------------------------- chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: install it (apt-get install "
                    "chromium) or run scripts/check_report_chromium.sh, which does")
def test_report_renders_in_headless_chromium(report_file, tmp_path):
    """Chromium loads the page, every <img> decodes (naturalWidth > 0), every section is
    there, and the screenshot is not blank."""
    shot = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(CHECK_SCRIPT), str(report_file), "--chromium", str(CHROMIUM),
                           "--screenshot", str(shot), "--json"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["images"] >= 8 and result["images_loaded"] == result["images"]
    assert set(SECTIONS) <= set(result["sections"])
    img = imread(shot)
    assert img.shape[0] > 500 and img[..., :3].std() > 0.05  # not a blank page
