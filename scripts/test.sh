#!/usr/bin/env bash
# The README's test command: set up (idempotent), then lint, type-check,
# check the layering, and run every test against the real control plane and
# the real sandbox. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/setup.sh

echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy (strict)" && .venv/bin/mypy
echo "== import-linter" && .venv/bin/lint-imports
echo "== pytest"
set +e
.venv/bin/pytest "$@"
code=$?
set -e
if [ "$code" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$code"
