"""The scorer's process never imports scikit-learn, pandas or dask (LightGBM would, when installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

PROBE = """
import sys
import services.scorer.__main__  # the scorer's entry point, as `python -m services.scorer` runs it
import lightgbm
import numpy as np

heavy = sorted(n for n in ("sklearn", "pandas", "dask", "distributed") if sys.modules.get(n) is not None)
assert not heavy, f"imported: {heavy}"
x = np.arange(200, dtype=float).reshape(100, 2)
booster = lightgbm.train({"objective": "poisson", "verbose": -1}, lightgbm.Dataset(x, x[:, 0] % 7), 5)
assert booster.predict(x[:3]).shape == (3,)
print("lean")
"""


def test_the_scorer_process_imports_lightgbm_without_its_optional_integrations():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "lean", out.stderr[-2000:]
