#!/usr/bin/env bash
# Set up everything the tests need, then run the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy sipstack workers models carrier cli migrations tests
echo "== pytest"; .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
