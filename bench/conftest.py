"""Lets ``pytest bench`` collect bench_*.py (the project's python_files is test_*.py).

The default ``pytest`` run never reaches this directory: testpaths = ["tests"].
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)  # given by name: pytest collects it
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
