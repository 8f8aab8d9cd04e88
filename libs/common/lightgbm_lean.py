"""Keep LightGBM's optional integrations out of processes that only predict.

``import lightgbm`` imports scikit-learn, pandas and dask whenever they are installed, and they
are (for the trainer's Dask engine): 2.5 s of CPU on an idle core (4.2 s against 1.7 s for the
scorer's imports, 2026-12-01), several times that on a loaded one. Every start of a scorer pays
it, and a scorer's restart is the what-if API's downtime (the demo's SIGKILL took 25 s to recover
with them). A process that never fits marks them absent before LightGBM is first imported, and
``lightgbm.compat`` takes the fallbacks it has for their absence.
"""

from __future__ import annotations

import sys

_OPTIONAL = ("sklearn", "pandas", "dask", "distributed")


def keep_lightgbm_lean() -> None:
    """Call first thing in a process's entry point; a no-op once LightGBM is imported."""
    if "lightgbm" in sys.modules:
        return
    for name in _OPTIONAL:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import fails"
