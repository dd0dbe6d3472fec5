#!/usr/bin/env bash
# Pack semid and its Python dependencies for `spark-submit --archives` (see docs/deploy.md,
# "Running on a cluster with spark-submit").
#
#   scripts/pack_env.sh [--out DIR] [--python PY] [--python-prefix PREFIX] [--with-pyspark]
#                       [--link-deps SITE_PACKAGES]
#
# Makes, under DIR (default dist/):
#   semid-<version>-py3-none-any.whl   the wheel (scripts/build_wheel.sh)
#   semid-env/                         a venv with the wheel and its dependencies (constraints.txt);
#                                      in client deploy mode, the driver's Python
#   semid-env.tar.gz                   that venv packed by venv-pack: --archives semid-env.tar.gz#environment
#                                      with spark.pyspark.python=./environment/bin/python
#
# --python PY             interpreter the venv is made from (default: .venv/bin/python, else python3);
#                         it needs pip >= 22.3 and venv-pack (pip install venv-pack).
# --python-prefix PREFIX  where Python lives on the cluster nodes, if not at the same path as here:
#                         the packed venv's bin/python links to PREFIX/bin/python3.X (venv-pack).
# --with-pyspark          keep pyspark and py4j in the archive. Left out by default: spark-submit puts
#                         the cluster's own pyspark on every Python process's path (it must match the
#                         cluster's Spark anyway), and they are ~0.5 GB.
# --link-deps DIR         for tests and offline machines only: install semid alone and put DIR (a
#                         site-packages holding the dependencies) on the venv's path. Such an archive
#                         works only where DIR exists.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/dist"
PY=""
PREFIX=""
WITH_PYSPARK=0
LINK=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        --python-prefix) PREFIX="$2"; shift 2 ;;
        --with-pyspark) WITH_PYSPARK=1; shift ;;
        --link-deps) LINK="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "pack_env.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
"$PY" -c 'import venv_pack' 2>/dev/null || { echo "pack_env.sh: $PY has no venv-pack (pip install venv-pack)" >&2; exit 1; }
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
ENV="$OUT/semid-env"
ARCHIVE="$OUT/semid-env.tar.gz"

WHEEL="$(PYTHON="$PY" "$ROOT/scripts/build_wheel.sh" "$OUT")"
rm -rf "$ENV" "$ARCHIVE"
"$PY" -m venv --without-pip "$ENV"
PIP=("$PY" -m pip --python "$ENV/bin/python")
if [[ -n "$LINK" ]]; then
    [[ -d "$LINK" ]] || { echo "pack_env.sh: --link-deps $LINK: not a directory" >&2; exit 2; }
    "${PIP[@]}" install -q --no-deps "$WHEEL"
    SITE="$("$ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    # An import line, not a path line: venv-pack refuses path lines that leave the venv, and
    # sys.path.append (unlike a site dir) does not run DIR's own .pth files (editable installs).
    echo "import sys; sys.path.append($("$PY" -c 'import os, sys; print(repr(os.path.abspath(sys.argv[1])))' "$LINK"))" \
        > "$SITE/_semid_linked_deps.pth"
else
    "${PIP[@]}" install -q -c "$ROOT/constraints.txt" "$WHEEL"
    if [[ "$WITH_PYSPARK" == 0 ]]; then "${PIP[@]}" uninstall -q -y pyspark py4j; fi
fi
PACK=(-p "$ENV" -o "$ARCHIVE" -q)
if [[ -n "$PREFIX" ]]; then PACK+=(--python-prefix "$PREFIX"); fi
"$PY" -m venv_pack "${PACK[@]}"
echo "$ARCHIVE"
