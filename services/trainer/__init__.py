"""The trainer service: instances in, LightGBM model versions out (see docs/trainer.md)."""

import os

# LightGBM's OpenMP threads otherwise spin while waiting for each other: on a busy machine
# (the consuming loop, other pods on the node) that burns a core and made 2-thread training
# 3-8x slower than 1 thread in bench/trainer.py. Must be set before lightgbm is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
