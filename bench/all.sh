#!/usr/bin/env bash
# Every CPU figure in bench/RESULTS.md, in one go (about 40 minutes on 2 cores), then the
# table itself:  bash bench/all.sh   (run it on an otherwise idle machine). --repeat K measures
# the ceiling and the job K times, alternately, and reports the median run of each: this
# machine's speed drifted by tens of percent between minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYSPARK_PYTHON=$(realpath "$PY")
$PY bench/run.py --n 1000000 --dim 768 --repeat 3 --stages --tag main_n1m_d768
$PY bench/run.py --n 1000000 --dim 64 --repeat 2 --tag n1m_d64
$PY bench/run.py --n 250000 --dim 4096 --baseline-n 50000 --repeat 2 --tag n250k_d4096
$PY bench/run.py --n 250000 --dim 768 --skip ceiling,baseline,noop --repeat 2 --stages --tag scale_n250k_d768
$PY bench/run.py --n 2000000 --dim 768 --skip ceiling,baseline,noop --tag scale_n2m_d768
$PY bench/run.py --n 1000000 --dim 768 --master 'local[1]' --skip ceiling,baseline,noop --repeat 2 --tag cores_local1
$PY bench/run.py --n 1000000 --dim 768 --master 'local[1]' --cpus 0 --skip ceiling,baseline,noop --repeat 2 --tag cores_local1_cpu0
$PY bench/run.py --n 1000000 --dim 768 --master 'local[2]' --skip ceiling,baseline,noop --repeat 2 --tag cores_local2
$PY bench/results_md.py > bench/RESULTS.md
