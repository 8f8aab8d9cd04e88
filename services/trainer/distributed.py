"""The fit on a Dask cluster (``POOCH_TRAINER_ENGINE=dask``): ``lightgbm.dask``, data-parallel.

For windows whose fit outgrows one machine: the rows are cut into one part per Dask worker and
scattered, and LightGBM's own data-parallel tree learner builds each tree from histograms all
workers reduce over its socket network. Only the fit moves; the time split, the validation
against the baseline and the champion, the decision and the artifact are ``train.train`` as in
the local engine, and the result is the same LightGBM text model the scorer already loads.

Differences from :func:`services.trainer.train.fit`, on purpose:

* **Early stopping from a curve.** ``lightgbm.dask`` evaluates an eval set only on the workers
  that hold a piece of it, and each worker would stop on its own piece. Instead the probe model
  is fit for ``num_boost_round`` rounds on the cluster, and the number of rounds is read from its
  loss curve on the early-stopping slice, here, with LightGBM's metric and LightGBM's stopping
  rule (``train.rounds_from_curve``). The slice is 10 % of the training part, small next to it.
* **Not bit-identical to the local model.** Each worker proposes bin boundaries from its own
  rows, and histogram sums are added in another order, so the trees differ slightly (the model
  is as good on validation within a tolerance: ``tests/unit/trainer/test_trainer_dask.py``).
  For a fixed window and cluster shape the result is still deterministic.

The cluster: ``POOCH_TRAINER_DASK_SCHEDULER`` (``tcp://host:8786``) names an existing one; empty,
a ``LocalCluster`` of ``DASK_WORKERS`` processes is started in this process at the first run (a
laptop, or a test). The client is made on the first run, not at start, so a scheduler that is
away fails runs (retried with back-off, shown in ``/readyz``), never the service.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.trainer.train import Split, TrainParams, loss_curve, rounds_from_curve
from services.trainer.window import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaskOptions:
    scheduler: str = ""  # empty: a LocalCluster of `workers` processes, started on first use
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    parts_per_worker: int = 1


def regressor_params(p: TrainParams, rounds: int) -> dict[str, Any]:
    """``TrainParams.lgb_params`` in the names ``DaskLGBMRegressor`` takes: the sklearn
    arguments where one exists (else it would also send its own default under the other name),
    the rest as LightGBM parameters. ``num_threads`` is the Dask workers' own thread count."""
    params = p.lgb_params()
    params.pop("num_threads")
    renamed = {
        "learning_rate": "learning_rate",
        "num_leaves": "num_leaves",
        "min_data_in_leaf": "min_child_samples",
        "feature_fraction": "colsample_bytree",
        "lambda_l2": "reg_lambda",
        "seed": "random_state",
        "objective": "objective",
    }
    out: dict[str, Any] = {new: params.pop(old) for old, new in renamed.items()}
    out["n_estimators"] = rounds
    return out | params


class DaskFitter:
    """A ``train.Fitter`` on a Dask cluster; thread-safe (runs come from the trainer's run thread)."""

    def __init__(self, options: DaskOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._client: Any = None
        self._cluster: Any = None

    # -- the cluster ---------------------------------------------------------------------------

    def client(self) -> Any:
        from distributed import Client, LocalCluster

        if self._client is not None:
            return self._client
        o = self.options
        if o.scheduler:
            self._client = Client(o.scheduler, timeout="30s")
        else:
            self._cluster = LocalCluster(
                n_workers=o.workers,
                threads_per_worker=o.threads_per_worker,
                processes=True,
                memory_limit=o.memory_limit,
                host="127.0.0.1",
                # No dashboard: nothing would serve it, and its fixed port clashes between trainers.
                scheduler_kwargs={"dashboard": False},
            )
            self._client = Client(self._cluster)
        log.info(
            "dask cluster connected",
            extra={"scheduler": self._client.scheduler.address, "workers": len(self.workers())},
        )
        return self._client

    def workers(self) -> list[str]:
        return sorted(self._client.scheduler_info()["workers"])

    def close(self) -> None:
        # Not under the lock: a shutdown must not wait for a run; the run fails and is dropped.
        self._drop_client()

    # -- the fit -------------------------------------------------------------------------------

    def __call__(self, snap: Snapshot, p: TrainParams, split: Split) -> tuple[str, int]:
        with self._lock:
            try:
                return self._fit(snap, p, split)
            except Exception:
                # A lost scheduler or worker leaves a client that may never recover: the next
                # run starts from a fresh one.
                self._drop_client()
                raise

    def _drop_client(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        for part in (client, cluster):
            if part is not None:
                try:
                    part.close()
                except Exception:  # closing must not hide why we are closing
                    log.warning("dask client or cluster did not close cleanly", exc_info=True)

    def _fit(self, snap: Snapshot, p: TrainParams, split: Split) -> tuple[str, int]:
        client = self.client()
        r = snap.rows
        rounds = p.num_boost_round
        if split.train_end > split.fit_end:
            probe = self._fit_rows(client, snap, p, split.fit_end, p.num_boost_round)
            es = slice(split.fit_end, split.train_end)
            curve = loss_curve(probe, r.X[es], r.likes[es], p)
            rounds = rounds_from_curve(curve, p.early_stopping_rounds)
        return self._fit_rows(client, snap, p, split.train_end, rounds), rounds

    def _fit_rows(self, client: Any, snap: Snapshot, p: TrainParams, end: int, rounds: int) -> str:
        import dask.array as da
        from lightgbm.dask import DaskLGBMRegressor

        workers = self.workers()
        if not workers:
            raise RuntimeError("the dask cluster has no workers")
        r = snap.rows
        n_parts = max(1, min(len(workers) * self.options.parts_per_worker, end // 100))
        bounds = np.linspace(0, end, n_parts + 1).astype(int)
        xs, ys = [], []
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            # Each part and its labels on one worker, parts spread over the workers: LightGBM
            # trains where the data is, one machine per worker holding a part.
            where = [workers[i % len(workers)]]
            fx = client.scatter(np.ascontiguousarray(r.X[a:b]), workers=where, hash=False)
            fy = client.scatter(np.ascontiguousarray(r.likes[a:b]), workers=where, hash=False)
            xs.append(da.from_delayed(fx, shape=(b - a, r.X.shape[1]), dtype=np.float64))
            ys.append(da.from_delayed(fy, shape=(b - a,), dtype=np.float64))
        model = DaskLGBMRegressor(client=client, **regressor_params(p, rounds))
        model.fit(
            da.concatenate(xs),
            da.concatenate(ys),
            feature_name=list(snap.names),
            categorical_feature=snap.categorical_indices,
        )
        text = model.booster_.model_to_string()
        if model.booster_.current_iteration() < 1:
            raise RuntimeError("the dask fit returned a model without trees")
        return text
