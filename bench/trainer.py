"""Trainer cost curve: one training run's time and peak memory for 10k, 100k and 1M instances.

    python bench/trainer.py [--sizes 10000,100000,1000000] [--threads 2] [--rounds 300]

Each size runs in a fresh subprocess (so peak RSS is that size's alone): synthetic instances
with the v1 features (services/trainer/synthetic.py) are put in a window, then one full run
as the service does it: snapshot (de-duplicate, trim, sort), early stopping on the newest
training slice, refit, validation on the newest 20% against the baseline, 21 quantiles, gain
importance, packing the artifact. Prints a table and one JSON line per size.

Peak memory is ``ru_maxrss`` of the subprocess (C++ allocations by LightGBM included, which
tracemalloc would miss); "RSS before" is after the data was generated, so the difference is
what the run itself needs. Also prints the replay rate (Avro decode + window append), which
bounds how long a restarted trainer takes to rebuild its window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_child(cmd: list[str], label: str) -> dict | None:
    """One measurement in a fresh process (its own RSS, no warm caches): its last JSON line."""
    out = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    if out.returncode != 0:
        print(f"{label}: failed\n{out.stderr[-2000:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(n: int, threads: int, rounds: int) -> dict:
    from libs.common.artifacts import build_artifact
    from libs.common.features.extractors import CATEGORICAL
    from services.trainer.synthetic import NAMES, window_chunk
    from services.trainer.train import TrainParams, train
    from services.trainer.window import build_snapshot

    chunk = window_chunk(n, seed=1)
    rss_before = _rss_mib()
    params = TrainParams(num_threads=threads, num_boost_round=rounds)
    started = time.perf_counter()
    snap = build_snapshot("v1", NAMES, CATEGORICAL, [chunk], max_count=n, max_age_ms=10**13)
    snapped = time.perf_counter()
    cand = train(snap, params)
    trained = time.perf_counter()
    art = build_artifact(cand.model_text, extractor_version="v1", feature_names=NAMES, metrics=cand.metrics)
    done = time.perf_counter()
    return {
        "instances": n,
        "threads": threads,
        "rounds": int(cand.metrics["rounds"]),
        "snapshot_s": round(snapped - started, 3),
        "train_s": round(trained - snapped, 3),
        "pack_s": round(done - trained, 3),
        "total_s": round(done - started, 3),
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "model_text_kib": round(len(cand.model_text) / 1024, 1),
        "artifact_kib": round(len(art.artifact) / 1024, 1),
        "improvement_vs_baseline": round(cand.metrics["improvement_vs_baseline"], 4),
    }


def replay_rate(n: int = 50_000) -> float:
    from libs.common.serde import serde
    from services.trainer.synthetic import SyntheticWorld
    from services.trainer.window import Windows

    enc = serde("instance")
    data = [enc.encode(r) for r in SyntheticWorld(seed=2).instances(n)]
    windows = Windows(max_count=10**7, max_age_ms=10**13, categorical_of={})
    started = time.perf_counter()
    for i, value in enumerate(data):
        windows.add(enc.decode(value), 0, i)
    return n / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--rounds", type=int, default=300, help="num_boost_round (early stopping may stop sooner)"
    )
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.threads, args.rounds)))
        return

    load = os.getloadavg()[0]
    print(
        f"trainer bench: python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {load:.2f}, {time.strftime('%Y-%m-%d')}"
    )
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--threads",
            str(args.threads),
            "--rounds",
            str(args.rounds),
        ]
        row = run_child(cmd, f"{n:>9,}")
        if row is None:
            continue
        rows.append(row)
    header = (
        f"{'instances':>10} {'threads':>7} {'rounds':>6} {'snapshot s':>10} {'train s':>8} {'total s':>8} "
        f"{'RSS before MiB':>14} {'peak RSS MiB':>12} {'model KiB':>9} {'artifact KiB':>12}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['instances']:>10,} {r['threads']:>7} {r['rounds']:>6} {r['snapshot_s']:>10.2f} "
            f"{r['train_s']:>8.2f} {r['total_s']:>8.2f} {r['rss_before_mib']:>14.1f} "
            f"{r['peak_rss_mib']:>12.1f} {r['model_text_kib']:>9.1f} {r['artifact_kib']:>12.1f}"
        )
    rate = replay_rate()
    print(f"replay (Avro decode + window append): {rate:,.0f} instances/s")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
