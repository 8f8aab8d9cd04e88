"""The Flink featurizer job's plan (services/featurizer/flink/job.py), read from PyFlink without
running it: every operator from a reader to its watermark generator runs once per partition and
forward, so each watermark generator sees exactly one partition in offset order.

PyFlink's ``assign_timestamps_and_watermarks`` with a Python timestamp assigner adds three
operators (Extract-Timestamp, Timestamps/Watermarks, Remove-Timestamp); ``set_parallelism`` on
the stream it returns reaches only the last. The generator then ran at the job's default
parallelism behind a rebalance, each fed several partitions at once: one partition ahead of
another by more than the lateness moved the watermark past likes still to come, and Labels
closed horizons before their last likes arrived (222 of 802 labels wrong on a clean run).

Needs ``.venv-flink``: skipped without it. ~10 s (a JVM, no cluster).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.featurizer.test_flink_featurizer import _needs_pyflink
from tests.support import REPO
from tooling.stack import flink
from tooling.stack.config import StackSettings

pytestmark = [pytest.mark.integration]

PLAN = """
import json, sys
from pathlib import Path
from services.featurizer.flink.job import JobConfig, build
cfg = JobConfig(
    bootstrap="127.0.0.1:1", topic_prefix="plan.", versions=["v1", "v2"], horizon_ms=60_000,
    lateness_ms=1_000, parallelism=int(sys.argv[2]), partitions=int(sys.argv[3]),
    connector_jar=Path(sys.argv[1]), checkpoint_dir=Path(sys.argv[4]), redis_view=False,
)
print(build(cfg).get_execution_plan())
"""


@pytest.mark.parametrize(("parallelism", "partitions"), [(2, 3)])
def test_every_watermark_generator_sees_one_partition(parallelism, partitions, tmp_path):
    _needs_pyflink()
    jar = flink.connector_jar(StackSettings(), print)
    out = subprocess.run(
        [str(flink.python()), "-c", PLAN, str(jar), str(parallelism), str(partitions), str(tmp_path)],
        cwd=REPO,
        env=os.environ | flink.job_env(jar),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    plan = json.loads(out.stdout[out.stdout.index("{") :])
    nodes = {n["id"]: n for n in plan["nodes"]}
    generators = [n for n in nodes.values() if "Watermarks" in n["contents"]]
    assert len(generators) == 2, [n["contents"] for n in nodes.values()]  # pupdates, likes
    for node in generators:
        # Back to the reader: one operator per partition, each fed forward by the one before.
        chain = [node]
        while not chain[-1]["contents"].startswith("Source"):
            [pred] = chain[-1]["predecessors"]
            assert pred["ship_strategy"] == "FORWARD", (chain[-1]["contents"], pred["ship_strategy"])
            chain.append(nodes[pred["id"]])
        assert [n["parallelism"] for n in chain] == [partitions] * len(chain), [
            (n["contents"], n["parallelism"]) for n in chain
        ]
