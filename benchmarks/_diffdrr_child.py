"""DiffDRR side of benchmarks/bench_register_diffdrr.py: run ONLY with the throw-away venv's python
(``/tmp/spinenav-bench-venv/bin/python``, diffdrr + CPU torch); never imported by the project.

    python _diffdrr_child.py JOB.npz RESULT.json

The job (written by the parent) holds the attenuation volume (the same masked vertebra our
registration renders, mu in 1/mm), its affine in DiffDRR's world frame (the CT frame shifted so
that the vertebra's CT centroid is the origin, as ``diffdrr.data.read(center_volume=True)``
centres a volume), the detector (SDD, rows, cols, pitch, principal point offset in mm), camera
poses as 4x4 DiffDRR camera -> world matrices, the target images and the options. It
renders the check poses, then runs DiffDRR's registration recipe from the start pose:

- ``diffdrr.registration.Registration`` with ``parameterization="euler_angles", convention="ZXY"``
  (DiffDRR's registration tutorial and xvr's default);
- loss (``--loss``): default ``MultiscaleNormalizedCrossCorrelation2d([None, 9], [0.5, 0.5])`` (DiffPose's;
  xvr's default "gmncc" adds 0.5 ``GradientNormalizedCrossCorrelation2d(patch_size=11, sigma=10)``,
  tuned for ~180 px images: on these 64-128 px ROIs its gradient term fell AWAY from the truth
  along the lateral start -> truth path, so it is an option, not the default);
- ``torch.optim.Adam`` maximising it, lr 1e-2 (rotations, rad) and 1e0 (translations, mm)
  (xvr's defaults), ``ReduceLROnPlateau`` (factor 0.1, patience, threshold 1e-4), stopping
  after ``max_plateaus`` reductions, ``n_itrs`` iterations or the time cap, coarse to fine over
  detector binning ``scales`` (a finer scale starts at 0.1x the previous initial rate);
- the loss is taken over a region of interest (the parent's ``--roi-margin-mm``): each view's
  detector box around the vertebra's projection at the START pose, rendered as a detector of
  its own (``set_intrinsics_`` with the principal point moved; checked against our renderer
  by the parent), the target cropped and average-pooled to match. Over the whole 256 px detector
  (``--roi-margin-mm -1``) the masked vertebra's DRR vs the whole-CT target stalled at ~10 mm
  (biplane, trial 0): the background of the target dominates the global NCC.
Biplane: one DRR module per view; the second view's camera is rigidly tied to the first
(``M2 = M1 @ D``); the loss is the mean over the views.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from torchio import ScalarImage, Subject

from diffdrr.drr import DRR
from diffdrr.metrics import (GradientNormalizedCrossCorrelation2d, MultiscaleNormalizedCrossCorrelation2d,
                             NormalizedCrossCorrelation2d)
from diffdrr.pose import RigidTransform
from diffdrr.registration import Registration


def make_drr(job) -> DRR:
    mu = torch.from_numpy(np.ascontiguousarray(job["mu"], dtype=np.float32))
    affine = np.asarray(job["affine"], dtype=np.float64)
    vol = ScalarImage(tensor=mu[None], affine=affine)
    # what diffdrr.data.read builds, with orientation=None (identity reorient: our camera frame
    # is used as is) and the density = our attenuation (not DiffDRR's HU -> density ramp)
    subject = Subject(volume=vol, mask=None, orientation=None, reorient=torch.eye(4), density=vol, fiducials=None)
    det = job["detector"]
    return DRR(subject, sdd=float(det[0]), height=int(det[1]), width=int(det[2]), delx=float(det[3]),
               dely=float(det[4]), x0=float(det[5]), y0=float(det[6]), reverse_x_axis=True,
               renderer=str(job["renderer"]))


def render(drr: DRR, mats: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        img = drr(RigidTransform(torch.as_tensor(mats, dtype=torch.float32)))
    return img[:, 0].numpy()


class GMNCC(torch.nn.Module):
    """xvr's default similarity: 0.5 multiscale NCC + 0.5 gradient NCC (DiffDRR metrics)."""

    def __init__(self):
        super().__init__()
        self.mncc = MultiscaleNormalizedCrossCorrelation2d([None, 9], [0.5, 0.5])
        self.gncc = GradientNormalizedCrossCorrelation2d(patch_size=11, sigma=10)

    def forward(self, x1, x2):
        return 0.5 * self.mncc(x1, x2) + 0.5 * self.gncc(x1, x2)


def make_loss(name: str) -> torch.nn.Module:
    if name == "mncc":  # DiffPose's / DiffDRR docs' multiscale NCC: global + 9x9 patches
        return MultiscaleNormalizedCrossCorrelation2d([None, 9], [0.5, 0.5])
    if name == "gmncc":
        return GMNCC()
    if name == "ncc":
        return NormalizedCrossCorrelation2d()
    raise ValueError(f"unknown loss {name!r}")


def set_roi_detector(drr: DRR, opts: dict, scale: int, roi) -> None:
    """Detector = the ROI (u0, v0, u1, v1) of the full one, binned by ``scale``.

    A full-detector column j sits at x_d = pitch_u * ((W - 1) / 2 - j) + x0_full in DiffDRR's
    camera (reverse_x_axis); the ROI detector's column j' = (j - u0) / scale - (scale - 1) / (2 scale)
    needs x0 = x0_full + pitch_u * ((W - 1) / 2 - u0 - (w - 1) / 2) with w = u1 - u0 (rows likewise).
    """
    u0, v0, u1, v1 = roi
    W, H = opts["cols"], opts["rows"]
    x0 = opts["x0"] + opts["delx"] * ((W - 1) / 2 - u0 - (u1 - u0 - 1) / 2)
    y0 = opts["y0"] + opts["dely"] * ((H - 1) / 2 - v0 - (v1 - v0 - 1) / 2)
    drr.set_intrinsics_(height=(v1 - v0) // scale, width=(u1 - u0) // scale, delx=opts["delx"] * scale,
                        dely=opts["dely"] * scale, x0=x0, y0=y0)


def register(drrs: list, targets: np.ndarray, M_start: np.ndarray, D: np.ndarray | None, opts: dict) -> dict:
    """DiffDRR registration from ``M_start`` (camera 1 -> world); returns the final matrix.

    One DRR module per view (each with its own ROI detector); view 2's camera is M1 @ D."""
    t0, c0 = time.perf_counter(), time.process_time()
    start = RigidTransform(torch.as_tensor(M_start[None], dtype=torch.float32))
    rot, xyz = start.convert("euler_angles", "ZXY")
    reg = Registration(drrs[0], rot.clone(), xyz.clone(), parameterization="euler_angles", convention="ZXY")
    Dt = None if D is None else torch.as_tensor(D[None], dtype=torch.float32)
    criterion = make_loss(opts["loss"])
    rois = opts["rois"][:len(drrs)]  # full-resolution detector boxes (multiples of the coarsest scale)
    tgt_full = [torch.as_tensor(targets[i][None, None, v0:v1, u0:u1], dtype=torch.float32)
                for i, (u0, v0, u1, v1) in enumerate(rois)]
    history = []
    trace = []
    n_total = 0
    stopped = "iterations"
    for stage, scale in enumerate(opts["scales"]):
        # a finer scale starts at a tenth of the previous stage's initial learning rate (restarting
        # at the full rate threw a converged pose ~1.5 mm off in the first trials)
        lr_factor = opts.get("stage_lr_factor", 0.1) ** stage
        # each ROI as a detector of its own (principal point moved), at 1/scale the pixels
        for d, roi in zip(drrs, rois):
            set_roi_detector(d, opts, scale, roi)
        tgts = [torch.nn.functional.avg_pool2d(t, int(scale)) if scale != 1 else t for t in tgt_full]
        optim = torch.optim.Adam([{"params": [reg._rotation], "lr": opts["lr_rot"] * lr_factor},
                                  {"params": [reg._translation], "lr": opts["lr_xyz"] * lr_factor}], maximize=True)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optim, mode="max", factor=0.1, patience=opts["patience"],
                                                           threshold=1e-4)
        n_plateaus, last_lr = 0, opts["lr_rot"] * lr_factor
        for itr in range(opts["n_itrs"]):
            if time.perf_counter() - t0 > opts["time_cap_s"]:
                stopped = "time cap"
                break
            optim.zero_grad()
            m1 = reg.pose.matrix
            mats = [m1] if Dt is None else [m1, torch.einsum("bij,bjk->bik", m1, Dt)]
            sims = [criterion(t, d(RigidTransform(m))).mean() for d, t, m in zip(drrs, tgts, mats)]
            sim = torch.stack(sims).mean()
            sim.backward()
            optim.step()
            sched.step(sim.detach())
            n_total += 1
            history.append((scale, itr, float(sim.detach())))
            if opts.get("trace_every") and n_total % opts["trace_every"] == 0:
                trace.append((n_total, float(sim.detach()), reg.pose.matrix[0].detach().double().numpy().tolist()))
            lr = optim.param_groups[0]["lr"]
            if lr < last_lr:
                n_plateaus += 1
                last_lr = lr
                if n_plateaus >= opts["max_plateaus"]:
                    stopped = "plateaus"
                    break
        if stopped == "time cap":
            break
    with torch.no_grad():
        M = reg.pose.matrix[0].double().numpy()
    return {"M_final": M.tolist(), "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "iterations": n_total, "stopped": stopped, "final_similarity": history[-1][2] if history else None,
            "first_similarity": history[0][2] if history else None, "trace": trace}


def main() -> None:
    job_path, out_path = sys.argv[1], sys.argv[2]
    job = dict(np.load(job_path, allow_pickle=False))
    torch.set_num_threads(int(job["threads"]))
    opts = json.loads(str(job["opts"]))
    drr = make_drr(job)
    opts.update(rows=drr.detector.height, cols=drr.detector.width, x0=float(job["detector"][5]),
                y0=float(job["detector"][6]))
    out: dict = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if "check_mats" in job:
        t = time.perf_counter()
        imgs = render(drr, job["check_mats"])
        out["check_render_seconds"] = time.perf_counter() - t
        np.save(out_path + ".check.npy", imgs)
        # DiffDRR's own projection of the check points (its perspective_projection)
        pts = torch.as_tensor(job["check_points"][None], dtype=torch.float32)
        uv = []
        for M in job["check_mats"]:
            pose = RigidTransform(torch.as_tensor(M[None], dtype=torch.float32))
            uv.append(drr.perspective_projection(pose, pts.clone())[0].numpy().tolist())
        out["check_projected_px"] = uv
        set_roi_detector(drr, opts, 1, opts["rois"][0])
        np.save(out_path + ".check_roi.npy", render(drr, job["check_mats"][:1]))
    for mode in opts.get("modes", []):
        n = 2 if mode == "biplane" else 1
        drrs = [drr] + [make_drr(job) for _ in range(n - 1)]
        out[mode] = register(drrs, job["targets"][:n], job["M_start"], job["D_biplane"] if n == 2 else None, opts)
        print(json.dumps({"diffdrr": mode, **{k: v for k, v in out[mode].items() if k != "M_final"}}),
              file=sys.stderr, flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
