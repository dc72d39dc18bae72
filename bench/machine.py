"""Where and when a benchmark's figures were taken: one line to head (and end) its output.

Imports nothing beyond the package's own device module, so that every bench can use it
on a board too.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

from edge.runtime.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """Return the date, commit, CPU and load: where and when the figures were taken."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"date {datetime.datetime.now().isoformat(timespec='seconds')}, commit {commit}, "
            f"CPU {cpu_model() or 'unknown'} ({os.cpu_count()} cores), load average {load}")
