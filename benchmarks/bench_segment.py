"""Builtin segmentation + level naming: time, peak memory and per-level Dice.

Cases: the real chest CT (reference: its TotalSegmentator v2 labels) and a T10-S1 phantom at
1 mm (reference: its exact label map). Each case runs in a fresh process so peak memory is its
own. The peer figure from the same run is the reference label map's own import through the
``labelmap`` backend (what a user with TotalSegmentator output pays instead).

Prints one JSON line per case, then a Markdown per-level table on stderr.

    .venv/bin/python benchmarks/bench_segment.py [--case chest|phantom]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def run_case(case: str) -> dict:
    from spinenav.anatomy.segment import segment_spine

    if case == "chest":
        from spinenav.datasets import test_data_dir, test_data_missing_reason
        from spinenav.imaging import read_volume

        reason = test_data_missing_reason("chest_ct/ct.nii.gz", "chest_ct/labels.nii.gz")
        if reason:
            return {"case": case, "skipped": reason}
        ct = read_volume(test_data_dir() / "chest_ct/ct.nii.gz")
        ref_path = test_data_dir() / "chest_ct/labels.nii.gz"
        ref = read_volume(ref_path).array
    else:
        from spinenav.phantom import PhantomParams, generate_phantom

        ph = generate_phantom(PhantomParams(spacing_mm=1.0, seed=0))
        ct, ref, ref_path = ph.ct, ph.labels.array, None
    t0 = time.perf_counter()
    seg = segment_spine(ct)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rows = []
    for v in seg.vertebrae:
        in_ref = bool(np.any(ref == v.label_id))
        rows.append({"level": v.name, "label_id": v.label_id, "partial": v.partial,
                     "confidence": round(v.confidence, 2),
                     "dice": round(_dice(seg.labels.array == v.label_id, ref == v.label_id), 3)
                     if in_ref else None})
    full = [r["dice"] for r in rows if not r["partial"] and r["dice"] is not None]
    peer_s = None
    if ref_path is not None:
        t1 = time.perf_counter()
        segment_spine(ct, backend="labelmap", labelmap=ref_path)
        peer_s = round(time.perf_counter() - t1, 2)
    return {"case": case, "shape": list(ct.shape), "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak_mb), "levels": [r["level"] for r in rows],
            "naming": seg.naming.reason, "naming_confidence": seg.naming.confidence,
            "dice_median_full": round(float(np.median(full)), 3) if full else None,
            "dice_min_full": round(float(np.min(full)), 3) if full else None,
            "stages_s": seg.parameters.get("timings_s"),
            "peer_labelmap_import_s": peer_s, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["chest", "phantom"])
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    for case in ("chest", "phantom"):
        proc = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True,
                              text=True, check=True)
        line = proc.stdout.strip().splitlines()[-1]
        result = json.loads(line)
        rows = result.pop("rows", [])
        print(json.dumps(result))
        print(f"\n{case}: level | Dice | partial | confidence", file=sys.stderr)
        for r in rows:
            print(f"  {r['level']} | {r['dice']} | {r['partial']} | {r['confidence']}", file=sys.stderr)


if __name__ == "__main__":
    main()
