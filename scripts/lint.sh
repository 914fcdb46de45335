#!/usr/bin/env bash
# ruff (lint + format check) and mypy over the Python packages (framebus and wal/).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check framebus wal tests bench scripts
ruff format --check framebus wal tests bench scripts
mypy framebus wal
