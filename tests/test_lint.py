"""The code base stays ruff clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_domain_core_has_no_dagster_imports():
    allowed = {"definitions.py", "cli.py"}
    offenders = [p for p in (ROOT / "ops_platform").rglob("*.py") if p.name not in allowed
                 and any(line.lstrip().startswith(("import dagster", "from dagster"))
                         for line in p.read_text().splitlines())]
    assert not offenders, offenders
