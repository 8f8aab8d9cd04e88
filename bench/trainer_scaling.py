"""Trainer scaling: one training run at 1x and 10x today's window, in one process and on Dask.

    flock /tmp/pooch-heavy.lock python bench/trainer_scaling.py [--sizes 200000,2000000] [--rounds 300]

Today's window is the trainer's default ``WINDOW_MAX_COUNT`` (200,000 instances per extractor
version). Each (size, engine) runs in a fresh subprocess, on the same synthetic window
(``services.trainer.synthetic.window_chunk``), as the service runs it (``train.train``: early
stopping on the newest training slice, refit, validation against the baseline):

* ``local/1``: LightGBM in the process, 1 thread (the trainer's default)
* ``local/2``: LightGBM in the process, 2 threads
* ``dask/2x1``: ``POOCH_TRAINER_ENGINE=dask`` on a LocalCluster of 2 worker processes x 1 thread
  (the cluster's start is timed apart: a long-lived trainer pays it once)

Prints a table (fit seconds, rows/s of the whole run, rounds, validation Poisson deviance, peak
RSS of the trainer process; a spawned Dask worker's ``ru_maxrss`` reports its parent's, so it is
not shown) and one JSON line per row as it finishes. On this 2-core
machine the Dask rows measure the engine's overhead (the same two cores, plus scatter and socket
reduction), not a second machine's gain; docs/scaling.md says what follows from them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script (python bench/trainer_scaling.py)
    sys.path.insert(0, str(REPO))

from bench.trainer import run_child  # noqa: E402  (the repository is on the path only now)

ENGINES = ("local/1", "local/2", "dask/2x1")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(n: int, engine: str, rounds: int) -> dict:
    from libs.common.features.extractors import CATEGORICAL
    from services.trainer.distributed import DaskFitter, DaskOptions
    from services.trainer.synthetic import NAMES, window_chunk
    from services.trainer.train import TrainParams, fit, train
    from services.trainer.window import build_snapshot

    snap = build_snapshot("v1", NAMES, CATEGORICAL, [window_chunk(n)], max_count=n, max_age_ms=10**13)
    kind, shape = engine.split("/")
    fitter, cluster_s = fit, 0.0
    if kind == "dask":
        workers, threads = (int(x) for x in shape.split("x"))
        fitter = DaskFitter(DaskOptions(workers=workers, threads_per_worker=threads))
        started = time.perf_counter()
        fitter.client()
        cluster_s = time.perf_counter() - started
        params = TrainParams(num_boost_round=rounds, num_threads=threads)
    else:
        params = TrainParams(num_boost_round=rounds, num_threads=int(shape))
    try:
        started = time.perf_counter()
        cand = train(snap, params, fitter=fitter)
        run_s = time.perf_counter() - started
    finally:
        if isinstance(fitter, DaskFitter):
            fitter.close()
    return {
        "instances": n,
        "engine": engine,
        "rounds": int(cand.metrics["rounds"]),
        "cluster_start_s": round(cluster_s, 2),
        "fit_s": round(cand.metrics["fit_seconds"], 2),
        "run_s": round(run_s, 2),
        "rows_per_s": round(n / run_s),
        "poisson_deviance": round(cand.metrics["poisson_deviance"], 5),
        "improvement_vs_baseline": round(cand.metrics["improvement_vs_baseline"], 4),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200000,2000000")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument(
        "--rounds", type=int, default=300, help="num_boost_round (early stopping may stop sooner)"
    )
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.rounds)))
        return

    print(
        f"trainer scaling bench: python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for engine in args.engines.split(","):
            cmd = [sys.executable, __file__, "--one", str(n), engine, "--rounds", str(args.rounds)]
            row = run_child(cmd, f"{n:>10,} {engine}")
            if row is None:
                continue
            rows.append(row)
            print(json.dumps(rows[-1] | {"load": round(os.getloadavg()[0], 2)}), flush=True)
    print(
        f"{'instances':>10} {'engine':>9} {'rounds':>6} {'cluster s':>9} {'fit s':>7} {'run s':>7} "
        f"{'rows/s':>8} {'val deviance':>12} {'vs baseline':>11} {'RSS MiB':>8}"
    )
    for r in rows:
        print(
            f"{r['instances']:>10,} {r['engine']:>9} {r['rounds']:>6} {r['cluster_start_s']:>9.2f} "
            f"{r['fit_s']:>7.2f} {r['run_s']:>7.2f} {r['rows_per_s']:>8,} {r['poisson_deviance']:>12.5f} "
            f"{r['improvement_vs_baseline']:>11.2%} {r['peak_rss_mib']:>8.1f}"
        )


if __name__ == "__main__":
    main()
