#!/usr/bin/env bash
# The job before and after a change, on the same data and machine, alternately:
#   bash bench/before_after.sh REV [ROUNDS]      (default: 3 rounds, 1M x 768, ceiling + job)
# REV is checked out in a worktree and installed (not editable, with constraints.txt) into a venv
# of its own, so its driver and its Spark workers run its code; this tree runs with .venv.
# Results: bench/out/before_<i>.json, after_<i>.json, and the medians printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: bench/before_after.sh REV [ROUNDS]}
ROUNDS=${2:-3}
PY=${PY:-.venv/bin/python}
export PYSPARK_PYTHON=$(realpath "$PY")
TMP=$(mktemp -d)
OLD=$TMP/before
git worktree add -q "$OLD" "$REV"
trap 'git worktree remove --force "$OLD"; rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q -c constraints.txt "$OLD" 2>&1 | grep -v "^WARNING: Location" || true
mkdir -p bench/out
for i in $(seq 1 "$ROUNDS"); do
  # from its own tree: Spark starts the Python workers with `python -m`, which puts the
  # working directory (and so a semid_udf/ in it) first on their path
  (cd "$OLD" && PYSPARK_PYTHON="$TMP/venv/bin/python" "$TMP/venv/bin/python" bench/run.py --n 1000000 --dim 768 \
    --skip baseline,noop --data-dir "$OLDPWD/bench/data" --tag "before_$i")
  cp "$OLD/bench/out/before_$i.json" bench/out/
  $PY bench/run.py --n 1000000 --dim 768 --skip baseline,noop --tag "after_$i"
done
$PY - <<'PY'
import json, statistics
from pathlib import Path
out = Path("bench/out")
for side in ("before", "after"):
    runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{side}_*.json"))]
    job = [r["job"]["items_s"] for r in runs]
    ceil = [r["ceiling"]["items_s"] for r in runs]
    print(f"{side}: job {[round(v) for v in job]} (median {statistics.median(job):,.0f}), ceiling "
          f"{[round(v) for v in ceil]} (median {statistics.median(ceil):,.0f}), job/ceiling "
          f"{statistics.median(job) / statistics.median(ceil):.2f}")
PY
