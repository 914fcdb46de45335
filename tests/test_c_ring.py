"""Runs the C ring test suite (tests/c/test_ring.c) under ASan/UBSan.

scripts/ctest.sh builds tests/c/test_ring.c with _native/fb_ring.c and runs it.
The stress sizes scale with the environment variable FRAMEBUS_STRESS_SCALE
(default 1), passed to the test binary as its first argument.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ctest.sh"
SCALE_ENV = "FRAMEBUS_STRESS_SCALE"


def _scale() -> str:
    raw = os.environ.get(SCALE_ENV, "1").strip() or "1"
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        pytest.fail(f"{SCALE_ENV} must be a positive number, got {raw!r}", pytrace=False)
    return raw


def _time_budget() -> float:
    try:
        scale = max(float(os.environ.get(SCALE_ENV, "1") or "1"), 1.0)
    except ValueError:
        scale = 1.0
    return 300.0 + 300.0 * scale


# the C suite: built and run in processes of its own, under sanitizers
pytestmark = [pytest.mark.c, pytest.mark.slow, pytest.mark.xproc]
if importlib.util.find_spec("pytest_timeout") is not None:
    # the project default (300 s) is too short for large stress scales
    pytestmark.append(pytest.mark.timeout(_time_budget() + 60))


def test_c_ring_suite() -> None:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed: cannot build the C ring tests (tests/c/test_ring.c)")
    scale = _scale()
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), scale],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_time_budget(),
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(
            f"scripts/ctest.sh {scale} timed out after {exc.timeout:g} s\n{out or ''}",
            pytrace=False,
        )
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/ctest.sh {scale} exited with {proc.returncode}\n{proc.stdout}", pytrace=False
        )
