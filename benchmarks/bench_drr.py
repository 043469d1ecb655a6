"""DRR speed and memory on the real chest CT, with the peers measured in the same run.

Prints one JSON line: for 128x128, 256x256 and 512x512 detectors, spinenav's median time per
image (default Joseph kernel; Siddon and trilinear too at 256), the peak resident memory of a
process that reads the CT and renders at that size, the time of one streaming pass over the
attenuation volume (a float32 sum: the floor for anything that touches every voxel), and the
same per-image figures for plastimatch ``drr`` (CPU) and DiffDRR on CPU (trilinear and Siddon),
then the issue's ratios at 256x256 and whether each target is met. The machine may be shared:
the 1/5/15-minute load averages at the start and end of the run are printed, and the process
CPU time (all threads) of our AP render and of the streaming pass next to their wall times.

Peers are installed here, never in the project: plastimatch with apt-get (Debian package), and
DiffDRR into a separate venv (``--venv``, default /tmp/spinenav-bench-venv) with the CPU build
of torch installed first (``torch==2.13.0``: the CPU wheel is on disk; a plain ``torch``
requirement would pull the multi-GB CUDA build).

    .venv/bin/python benchmarks/bench_drr.py [--ct PATH] [--repeats 5] [--no-peers]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _plastimatch_scene import ensure_plastimatch  # noqa: E402  (benchmarks/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CT = ROOT.parent / "shared" / "data" / "chest_ct" / "ct.nii.gz"
SIZES = (128, 256, 512)
DETECTOR_MM = 400.0  # covers the chest at the isocentre (~270 mm field)
SDD_MM, SOD_MM = 968.0, 650.0  # clinical-reference 5.1 defaults (carm.py)


def _median_time(fn, repeats: int, cpu: list | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after one warm-up; the
    median process CPU seconds (all threads) is appended to ``cpu`` when given."""
    fn()  # warm-up (numba compile / caches)
    times, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    if cpu is not None:
        cpu.append(statistics.median(cpus))
    return statistics.median(times)


def _load() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared: they say how loaded it was)."""
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------- ours (child process)
def ours(ct_path: Path, n: int, repeats: int) -> dict:
    import numba
    import numpy as np

    from spinenav.fluoro.carm import CarmGeometry, CarmPose
    from spinenav.fluoro.drr import prepare_attenuation, render_line_integrals
    from spinenav.imaging import read_volume

    rss = lambda: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # noqa: E731
    ct = read_volume(ct_path)
    rss_read = rss()
    t = time.perf_counter()
    att = prepare_attenuation(ct)
    prep_s = time.perf_counter() - t
    del ct
    g = CarmGeometry.square(n, detector_mm=DETECTOR_MM, sdd_mm=SDD_MM, sod_mm=SOD_MM)
    centre = att.affine[:3, :3] @ ((np.array(att.mu_per_mm.shape) - 1) / 2) + att.affine[:3, 3]
    ap = CarmPose(math.pi, 0.0, tuple(centre))  # prone AP: tube under the table
    lat = CarmPose(math.pi / 2, 0.0, tuple(centre))
    t = time.perf_counter()
    render_line_integrals(att, g, ap)  # first call: numba cache load, padded copy, per-plane boxes
    first_s = time.perf_counter() - t
    cpu: list[float] = []
    res = {"size": n, "prepare_s": round(prep_s, 3), "first_render_s": round(first_s, 3),
           "volume_shape": list(att.mu_per_mm.shape), "numba_threads": numba.get_num_threads(),
           "nonzero_fraction": round(float(np.mean(render_line_integrals(att, g, ap) != 0)), 3),
           "peak_rss_after_reading_ct_mb": rss_read,
           "joseph_ap_s": _median_time(lambda: render_line_integrals(att, g, ap), repeats, cpu),
           "joseph_lateral_s": _median_time(lambda: render_line_integrals(att, g, lat), repeats)}
    res["joseph_ap_cpu_s"] = cpu.pop()
    if n == 256:
        res["siddon_ap_s"] = _median_time(lambda: render_line_integrals(att, g, ap, method="siddon"), repeats)
        res["trilinear_ap_s"] = _median_time(lambda: render_line_integrals(att, g, ap, method="trilinear"),
                                             max(1, repeats // 2))
        poses = [CarmPose(math.pi + math.radians(a), math.radians(b), tuple(centre))
                 for a in (-6, -2, 2, 6) for b in (-6, -2, 2, 6)]
        res["joseph_batch16_per_image_s"] = _median_time(
            lambda: render_line_integrals(att, g, poses), max(1, repeats // 2)) / len(poses)
        mu = att.mu_per_mm
        res["streaming_pass_s"] = _median_time(lambda: mu.sum(dtype=np.float32), repeats, cpu)
        res["streaming_pass_cpu_s"] = cpu.pop()
        res["volume_mb"] = round(mu.nbytes / 1e6, 1)
    res["peak_rss_mb"] = rss()  # the whole process: reading the CT dominates
    return res


# ----------------------------------------------------------------------------- plastimatch
def plastimatch_times(exe: str, ct_path: Path, repeats: int) -> dict:
    """Per-image time = (time for K angles - time for 1 angle) / (K - 1): excludes reading the CT."""
    import SimpleITK as sitk

    out: dict = {"threads": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="spinenav-bench-") as tmp:
        mha = Path(tmp) / "ct.mha"
        # plastimatch's drr ignores the direction cosines (a LAS NIfTI renders empty): reorient
        # the voxels to LPS with an identity direction first (the same patient geometry)
        img = sitk.DICOMOrient(sitk.ReadImage(str(ct_path)), "LPS")
        sitk.WriteImage(img, str(mha))
        size = img.GetSize()
        centre = img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size])
        # ITK reads NIfTI into LPS already; plastimatch works in the same DICOM frame
        iso = f"{centre[0]} {centre[1]} {centre[2]}"
        k = 9
        for n in SIZES:
            def run(angles: int) -> float:
                t = time.perf_counter()
                subprocess.run([exe, "drr", "-A", "cpu", "-t", "pfm", "-r", f"{n} {n}", "-z",
                                f"{DETECTOR_MM} {DETECTOR_MM}", "--sad", str(SOD_MM), "--sid", str(SDD_MM),
                                "-o", iso, "-a", str(angles), "-N", "1", "-O", str(Path(tmp) / f"drr{n}_"),
                                "-I", str(mha)], check=True, capture_output=True, timeout=1800)
                return time.perf_counter() - t
            t1 = statistics.median(run(1) for _ in range(max(1, repeats // 2)))
            tk = statistics.median(run(k) for _ in range(max(1, repeats // 2)))
            out[f"{n}_s"] = max(tk - t1, 0.0) / (k - 1)
            out[f"{n}_process_1_image_s"] = t1
            out[f"{n}_nonzero_fraction"] = _pfm_nonzero(Path(tmp) / f"drr{n}_0000.pfm")
    return out


def _pfm_nonzero(path: Path) -> float:
    """Fraction of non-zero pixels of a PFM image (an empty DRR means the geometry missed)."""
    import numpy as np

    with open(path, "rb") as f:
        f.readline()
        cols, rows = (int(x) for x in f.readline().split())
        scale = float(f.readline())
        a = np.frombuffer(f.read(), "<f4" if scale < 0 else ">f4")[: rows * cols]
    return round(float(np.mean(a != 0)), 3)


# ----------------------------------------------------------------------------- DiffDRR
DIFFDRR_CHILD = r"""
import json, math, resource, statistics, sys, time
import torch
from diffdrr.data import read
from diffdrr.drr import DRR
torch.set_num_threads(int(sys.argv[3]))
ct, n, renderer = sys.argv[1], int(sys.argv[2]), sys.argv[4]
subject = read(ct)
drr = DRR(subject, sdd=float(sys.argv[5]), height=n, delx=float(sys.argv[6]) / n, renderer=renderer)
rot = torch.tensor([[0.0, 0.0, 0.0]])
xyz = torch.tensor([[0.0, float(sys.argv[7]), 0.0]])
def go():
    with torch.no_grad():
        return drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
img = go()
ts = []
for _ in range(int(sys.argv[8])):
    t = time.perf_counter(); go(); ts.append(time.perf_counter() - t)
print(json.dumps({"median_s": statistics.median(ts), "nonzero_fraction": float((img != 0).float().mean()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def ensure_diffdrr(venv: Path) -> Path | None:
    py = venv / "bin" / "python"
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        ok = subprocess.run([str(py), "-c", "import diffdrr, torch"], capture_output=True).returncode == 0
        if not ok:
            # the CPU build of torch first (on disk); then diffdrr, which then keeps that torch
            subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True,
                           capture_output=True, timeout=3600)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "diffdrr"], check=True, capture_output=True,
                           timeout=3600)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"DiffDRR install failed: {exc}", file=sys.stderr)
        return None
    return py


def diffdrr_times(py: Path, ct_path: Path, repeats: int, sizes) -> dict:
    out: dict = {"threads": os.cpu_count()}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DIFFDRR_CHILD)
        script = f.name
    try:
        for n in sizes:
            for renderer in ("trilinear", "siddon"):
                try:
                    r = subprocess.run([str(py), script, str(ct_path), str(n), str(os.cpu_count()), renderer,
                                        str(SDD_MM), str(DETECTOR_MM), str(SOD_MM), str(max(1, repeats // 2))],
                                       check=True, capture_output=True, text=True, timeout=3600)
                    res = json.loads(r.stdout.strip().splitlines()[-1])
                    out[f"{renderer}_{n}_s"] = res["median_s"]
                    out[f"{renderer}_{n}_peak_rss_mb"] = round(res["peak_rss_mb"], 1)
                    out[f"{renderer}_{n}_nonzero_fraction"] = round(res["nonzero_fraction"], 3)
                except (subprocess.SubprocessError, ValueError, IndexError) as exc:
                    msg = getattr(exc, "stderr", "") or str(exc)
                    out[f"{renderer}_{n}_error"] = str(msg).strip().splitlines()[-1][:200] if msg else "failed"
    finally:
        os.unlink(script)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=Path, default=DEFAULT_CT)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--venv", type=Path, default=Path("/tmp/spinenav-bench-venv"))
    ap.add_argument("--diffdrr-sizes", default="128,256", help="DiffDRR Siddon at 512 took 13.7 GB in the issue")
    ap.add_argument("--_ours", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._ours:
        print(json.dumps(ours(args.ct, args._ours, args.repeats)))
        return
    if not args.ct.is_file():
        sys.exit(f"{args.ct}: no such CT (the chest CT of ../shared/data)")
    result: dict = {"benchmark": "drr", "ct": args.ct.name, "cpus": os.cpu_count(), "load_at_start": _load(),
                    "detector_mm": DETECTOR_MM, "sdd_mm": SDD_MM, "sod_mm": SOD_MM, "ours": {}}
    for n in SIZES:
        r = subprocess.run([sys.executable, __file__, "--ct", str(args.ct), "--repeats", str(args.repeats),
                            "--_ours", str(n)], check=True, capture_output=True, text=True)
        result["ours"][str(n)] = json.loads(r.stdout.strip().splitlines()[-1])
    if not args.no_peers:
        exe = ensure_plastimatch()
        result["plastimatch"] = plastimatch_times(exe, args.ct, args.repeats) if exe else {"error": "not installed"}
        py = ensure_diffdrr(args.venv)
        sizes = [int(s) for s in args.diffdrr_sizes.split(",") if s]
        result["diffdrr_cpu"] = diffdrr_times(py, args.ct, args.repeats, sizes) if py else {"error": "not installed"}
    result["load_at_end"] = _load()
    result["numba_threads"] = result["ours"]["256"]["numba_threads"]
    o = result["ours"]["256"]
    ratios = {"streaming_pass_over_ours_256": o["streaming_pass_s"] / o["joseph_ap_s"],
              "ours_256_over_streaming_pass": o["joseph_ap_s"] / o["streaming_pass_s"]}
    pm = result.get("plastimatch", {})
    if "256_s" in pm:
        ratios["speedup_vs_plastimatch_256"] = pm["256_s"] / o["joseph_ap_s"]
    dd = result.get("diffdrr_cpu", {})
    for r in ("trilinear", "siddon"):
        if f"{r}_256_s" in dd:
            ratios[f"speedup_vs_diffdrr_{r}_256"] = dd[f"{r}_256_s"] / o["joseph_ap_s"]
    ratios["ours_512_peak_rss_mb"] = result["ours"]["512"]["peak_rss_mb"]
    result["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    result["targets"] = {"speedup_vs_plastimatch_256": ">= 5", "speedup_vs_diffdrr_256": ">= 100",
                         "ours_256_over_streaming_pass": "<= 3", "ours_512_peak_rss_mb": "< 1024"}
    r = result["ratios"]
    met = {"speedup_vs_plastimatch_256": r.get("speedup_vs_plastimatch_256", 0.0) >= 5.0,
           "ours_256_over_streaming_pass": r["ours_256_over_streaming_pass"] <= 3.0,
           "ours_512_peak_rss_mb": r["ours_512_peak_rss_mb"] < 1024.0}
    for name in ("trilinear", "siddon"):
        key = f"speedup_vs_diffdrr_{name}_256"
        met[key] = r.get(key, 0.0) >= 100.0  # a peer that did not run counts as not met
    result["targets_met"] = met
    print(json.dumps(result))


if __name__ == "__main__":
    main()
