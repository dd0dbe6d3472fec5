#!/usr/bin/env bash
# The tokenizer comparison of bench/QUALITY.md ("Which kind"): semid's kinds fitted as
# semid-train fits them, each scored as published and with output.collisions=nearest_free at
# cap 8, on the docstring sentences (bench/data/minilm.npy) and on PyPI package summaries
# (bench/data/pypi.npy). Two processes, one thread each (this machine has two cores).
#   bash bench/quality_kinds.sh [minilm|pypi|all]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
run() {  # data out variants
  OMP_NUM_THREADS=1 "$PY" bench/quality.py --data "bench/data/$1.npy" --grads "" \
    --skip rkmeans,faiss_rq_input,faiss_rq_latent --resolve-cap 8 --variants "$3" --out "bench/out/$2" \
    > "bench/out/$2.log" 2>&1
}
what=${1:-all}
mkdir -p bench/out
if [ "$what" = minilm ] || [ "$what" = all ]; then
  run minilm kinds-minilm-km rqkmeans,rqkmeans-balanced-last,rqkmeans-balanced-all &
  run minilm kinds-minilm-vae rqvae,rqvae-latent64 &
  wait
fi
if [ "$what" = pypi ] || [ "$what" = all ]; then
  run pypi kinds-pypi-km rqkmeans,rqkmeans-balanced-last,rqkmeans-balanced-all &
  run pypi kinds-pypi-vae rqvae,rqvae-latent64 &
  wait
fi
