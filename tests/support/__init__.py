"""Helpers the tests share (processes, topic readers, simulated worlds, references); not tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
