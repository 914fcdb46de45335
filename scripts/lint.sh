#!/usr/bin/env bash
# ruff (lint + format check) and mypy over the Python package.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check framebus tests bench scripts
ruff format --check framebus tests bench scripts
mypy framebus
