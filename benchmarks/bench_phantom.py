"""Benchmark: generate the T10-S1 phantom at 0.75 mm and 1.0 mm.

Prints one JSON line: per spacing the wall time, peak memory (resident set of a fresh
process) and voxel count, and, as the peer figure from the same run, the time SimpleITK takes
to read that CT back from a NIfTI file (written to a temporary folder): generating a phantom
should cost about as much as loading one.

    .venv/bin/python benchmarks/bench_phantom.py [--spacing 0.75 1.0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path


def _one(spacing_mm: float, repeat: int, queue) -> None:
    """Runs in a fresh process, so ru_maxrss is this configuration's own peak."""
    import numpy as np
    import SimpleITK as sitk

    from spinenav.imaging.io import write_nifti
    from spinenav.phantom import PhantomParams, generate_phantom

    params = PhantomParams(levels=("T10", "S1"), spacing_mm=spacing_mm, seed=0)
    times = []
    ph = None
    for _ in range(repeat):
        ph = None  # free the previous phantom first: the peak is one phantom's
        t0 = time.perf_counter()
        ph = generate_phantom(params)
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        t0 = time.perf_counter()
        write_nifti(ph.ct, path)
        write_s = time.perf_counter() - t0
        reads = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            img = sitk.ReadImage(str(path))
            reads.append(time.perf_counter() - t0)
        assert img.GetSize() == tuple(int(n) for n in ph.ct.shape)
        nifti_mb = path.stat().st_size / 1e6
    queue.put({
        "spacing_mm": spacing_mm,
        "shape": list(ph.ct.shape),
        "voxels": int(np.prod(ph.ct.shape)),
        "generate_s": round(min(times), 3),
        "peak_rss_mb": round(peak_mb, 1),
        "peer_sitk_read_nifti_s": round(min(reads), 3),
        "generate_over_read": round(min(times) / min(reads), 2),
        "nifti_write_s": round(write_s, 3),
        "nifti_gz_mb": round(nifti_mb, 1),
    })


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spacing", type=float, nargs="+", default=[0.75, 1.0])
    ap.add_argument("--repeat", type=int, default=1, help="best of N (generation and read)")
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    runs = []
    for sp in args.spacing:
        q = ctx.Queue()
        p = ctx.Process(target=_one, args=(sp, args.repeat, q))
        p.start()
        runs.append(q.get())
        p.join()
    import numpy
    import SimpleITK

    print(json.dumps({
        "benchmark": "phantom_generate_T10_S1",
        "runs": runs,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "simpleitk": SimpleITK.Version_VersionString(),
        "machine": platform.machine(),
    }))


if __name__ == "__main__":
    sys.exit(main())
