"""Run every benchmark in bench/ (``make bench``)."""

from __future__ import annotations

import runpy
from pathlib import Path

for path in sorted(Path(__file__).parent.glob("*.py")):
    if path.name != "run.py":
        print(f"== {path.name}")
        runpy.run_path(str(path), run_name="__main__")
