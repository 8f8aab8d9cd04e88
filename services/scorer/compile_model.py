"""``python -m services.scorer.compile_model MODEL_TXT OUT_SO``: one model compiled by lleaves.

Run by :class:`services.scorer.compiled.Compiler` in a child process, so the seconds of CPU
and the GIL it holds never stall the scorer's scoring threads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from libs.common.lightgbm_lean import keep_lightgbm_lean

keep_lightgbm_lean()  # before lightgbm is imported: the compiler never fits

from services.scorer.compiled import compile_to  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m services.scorer.compile_model MODEL_TXT OUT_SO", file=sys.stderr)
        return 2
    compile_to(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
