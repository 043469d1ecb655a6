"""Benchmark: landmarks + measurements of every vertebra (spinenav.anatomy.measure_spine).

Two cases, each in a fresh process so that its peak memory (resident set) is its own:

* ``chest_ct``: the real chest CT (``shared/data/chest_ct``, 512 x 512 x 133, 0.7 x 0.7 x 2.5 mm)
  with its TotalSegmentator labels (C5-L3, 18 vertebrae), imported with the labelmap backend;
* ``phantom``: the T10-S1 phantom (9 vertebrae) at 1.0 mm.

Prints one JSON line: per case the time of the import (chest only), of landmarks + measures,
the number of vertebrae, the time per vertebra and the peak RSS; and, as the peer figure from
the same run, the time to read that CT from its NIfTI file (what a user waits for anyway).

    .venv/bin/python benchmarks/bench_anatomy_measure.py [--repeat 1]
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


def _chest(repeat: int, queue) -> None:
    from spinenav.anatomy import import_label_map, measure_spine
    from spinenav.datasets import test_data_dir, test_data_missing_reason
    from spinenav.imaging import read_volume

    reason = test_data_missing_reason("chest_ct/ct.nii.gz", "chest_ct/labels.nii.gz")
    if reason:
        queue.put({"case": "chest_ct", "skipped": reason})
        return
    root = test_data_dir() / "chest_ct"
    t0 = time.perf_counter()
    ct = read_volume(root / "ct.nii.gz")
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    imp = import_label_map(root / "labels.nii.gz", ct)
    import_s = time.perf_counter() - t0
    times = []
    sm = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        sm = measure_spine(ct, imp.labels, names=imp.names)
        times.append(time.perf_counter() - t0)
    n = len(sm.vertebrae)
    queue.put({"case": "chest_ct", "shape": list(ct.shape), "vertebrae": n, "import_s": round(import_s, 2),
               "landmarks_measure_s": round(min(times), 2), "per_vertebra_s": round(min(times) / n, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
               "peer_read_ct_s": round(read_s, 2)})


def _phantom(repeat: int, queue) -> None:
    from spinenav.anatomy import measure_spine
    from spinenav.imaging import read_volume, write_nifti
    from spinenav.phantom import PhantomParams, generate_phantom

    ph = generate_phantom(PhantomParams(levels=("T10", "S1"), spacing_mm=1.0, seed=0))
    times = []
    sm = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        sm = measure_spine(ph.ct, ph.labels, dural_sac_label=79)
        times.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "ct.nii.gz"
        write_nifti(ph.ct, p)
        t0 = time.perf_counter()
        read_volume(p)
        read_s = time.perf_counter() - t0
    n = len(sm.vertebrae)
    queue.put({"case": "phantom_T10-S1_1mm", "shape": list(ph.ct.shape), "vertebrae": n,
               "landmarks_measure_s": round(min(times), 2), "per_vertebra_s": round(min(times) / n, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
               "peer_read_ct_s": round(read_s, 2)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is reported")
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    results = []
    for fn in (_chest, _phantom):
        q = ctx.Queue()
        p = ctx.Process(target=fn, args=(args.repeat, q))
        p.start()
        results.append(q.get())
        p.join()
    print(json.dumps({"benchmark": "anatomy_measure", "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                      "machine": platform.machine(), "cases": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
