"""Planning time after segmentation: 5 levels of pedicle screws, an MIS TLIF, a decompression.

The phantom L1-S1 at 1 mm is measured from its exact label map (not timed); then each plan
is timed (median of ``--repeats``, the first run also reported: it pays the imports and the
numba/k-d tree warm-up). Peer figure from the same run: the anatomy measurement that precedes
planning (``measure_spine``). Prints one JSON line. Target: screws at 5 levels < 5 s.

    .venv/bin/python benchmarks/bench_plan.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from spinenav.anatomy import measure_spine
    from spinenav.phantom import PhantomParams, generate_phantom
    from spinenav.planning import plan_procedure

    ph = generate_phantom(PhantomParams(levels=("L1", "S1"), spacing_mm=1.0, organs=False, seed=7))
    t0 = time.perf_counter()
    spine = measure_spine(ph.ct, ph.labels, dural_sac_label=79)
    measure_s = time.perf_counter() - t0
    cases = {"screws_L1-L5_both": dict(levels="L1-L5", procedure="screws", side="both"),
             "tlif_L4-L5_left": dict(levels="L4-L5", procedure="tlif", side="left"),
             "decompression_L3-L5_left_ott": dict(levels="L3-L5", procedure="decompression", side="left",
                                                  over_the_top=True)}
    out: dict = {"bench": "plan", "ct_shape": list(ph.ct.shape), "spacing_mm": 1.0, "measure_spine_s": round(measure_s, 3)}
    for name, kw in cases.items():
        times, plan = [], None
        for _ in range(max(args.repeats, 1)):
            t0 = time.perf_counter()
            plan = plan_procedure(ph.ct, spine, ph.labels, **kw)
            times.append(time.perf_counter() - t0)
        out[f"{name}_first_s"] = round(times[0], 3)
        out[f"{name}_median_s"] = round(statistics.median(times), 3)
        out[f"{name}_stages_s"] = plan.timings_s
        out[f"{name}_accepted"] = f"{sum(s.accepted for s in plan.screws)}/{len(plan.screws)}"
    out["target_screws_5_levels_s"] = 5.0
    out["meets_target"] = out["screws_L1-L5_both_median_s"] < 5.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
