"""The library type-checks: mypy, configured in pyproject.toml ([tool.mypy]), finds no error."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_library_type_checks():
    # no skip when mypy is missing: "No module named mypy" fails the test (it is in the test extra)
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"mypy exited {r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
