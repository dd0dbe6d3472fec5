#!/usr/bin/env bash
# Build semid's wheel: packages semid_udf and jobs, console scripts semid-train, semid-assign,
# semid-demo (whatever [project.scripts] in pyproject.toml names). Prints the wheel's path.
#
#   scripts/build_wheel.sh [OUT_DIR]        (default: dist/)
#   PYTHON=python3.11 scripts/build_wheel.sh  (default: .venv/bin/python, else python3)
#
# Builds from a fresh copy of the sources, so files left in a stale build/ directory never
# end up in the wheel, and nothing is written into the source tree.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
mkdir -p "${1:-$ROOT/dist}"
OUT="$(cd "${1:-$ROOT/dist}" && pwd)"
VERSION="$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
WHEEL="$OUT/semid-$VERSION-py3-none-any.whl"

SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$SRC/"
cp -R "$ROOT/semid_udf" "$ROOT/jobs" "$SRC/"
find "$SRC" -name __pycache__ -type d -prune -exec rm -rf {} +

# Offline with the interpreter's own setuptools when it has one (Python <= 3.11 venvs do);
# otherwise pip fetches the build backend named in pyproject.toml.
ISOLATION=()
if "$PY" -c 'import setuptools' 2>/dev/null; then ISOLATION=(--no-build-isolation); fi
rm -f "$WHEEL"
"$PY" -m pip wheel -q --no-deps "${ISOLATION[@]}" -w "$OUT" "$SRC" >&2
[[ -f "$WHEEL" ]] || { echo "build_wheel.sh: expected $WHEEL, not built" >&2; exit 1; }
echo "$WHEEL"
