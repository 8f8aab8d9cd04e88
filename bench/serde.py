"""Avro single-object encode/decode throughput for a realistic pupdate.

    python bench/serde.py [--seconds 2]

Prints records/s for: encode (current schema), decode (same writer and reader), and decode of an
app 1.x record resolved to the current reader (the collector's worst case).
"""

from __future__ import annotations

import argparse
import platform
import time

from libs.common.serde import Serde, serde

PUPDATE = {
    "event_id": "3f2a9c1e-7d4b-4e0a-9a51-6c2f8e1b0d47",
    "pupdate_id": "pup-000128734",
    "dog_id": "dog-004211",
    "posted_at": 1_795_814_980_316,
    "hashtags": ["#adorable", "#frenchie", "#dogsofsniffable", "#sunday", "#walkies", "#puppylove"],
    "dog_followers": 18_532,
    "app_version": "3.2.1",
    "caption": "First walk on the beach! She was not sure about the waves at all 🐶🌊",
    "photo_filter": "golden-hour",
    "dog": {"breed": "French Bulldog", "size": "SMALL", "age_months": 14},
    "country": "BR",
}
V1_FIELDS = ("event_id", "pupdate_id", "dog_id", "posted_at", "hashtags", "dog_followers", "app_version")


def rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(1000):
            fn()
        n += 1000
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    current = serde("pupdate_raw")
    v1 = Serde("pupdate_raw", writer_version=1)
    data = current.encode(PUPDATE)
    data_v1 = v1.encode({k: PUPDATE[k] for k in V1_FIELDS})
    results = {
        "encode (v3)": rate(lambda: current.encode(PUPDATE), args.seconds),
        "decode (v3 -> v3)": rate(lambda: current.decode(data), args.seconds),
        "decode (v1 -> v3, resolved)": rate(lambda: current.decode(data_v1), args.seconds),
    }
    print(f"serde benchmark: pupdate of {len(data)} bytes, python {platform.python_version()}, one core")
    for name, r in results.items():
        print(f"  {name:<30} {r:>12,.0f} records/s  ({1e6 / r:.1f} µs/record)")


if __name__ == "__main__":
    main()
