"""Run one service module with the environment in a JSON file: what supervisord starts.

supervisord's ``environment=`` line has its own quoting rules, and the services' settings hold
JSON (arm weights, extractor versions) full of quotes and commas. Writing the environment to a
file and starting ``python -m tooling.stack.launch ENV_FILE services.<name>`` keeps every value
exactly as given, whatever it contains.
"""

from __future__ import annotations

import json
import os
import runpy
import sys


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m tooling.stack.launch ENV_JSON_FILE MODULE")
    env_file, module = argv
    with open(env_file, encoding="utf-8") as f:
        os.environ.update(json.load(f))
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
