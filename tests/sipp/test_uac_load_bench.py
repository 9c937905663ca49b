"""bench/uac_load.py --json prints one JSON object: our figures with SIPp's UAC run inside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sipp.harness import requires_sipp

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(120), requires_sipp]

ROOT = Path(__file__).resolve().parents[2]


def test_json_output_is_one_object_holding_both_runs() -> None:
    completed = subprocess.run(
        [sys.executable, "bench/uac_load.py", "--calls", "20", "--rate", "100", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1, completed.stdout
    figures = json.loads(lines[0])
    assert (figures["calls"], figures["answered"], figures["failed"]) == (20, 20, 0)
    sipp = figures["sipp_uac"]
    assert sipp["tool"] == "sipp -sn uac" and sipp["answered"] == 20
    assert figures["cps_ratio_to_sipp"] == round(figures["cps"] / sipp["cps"], 2)
