#!/usr/bin/env bash
# The GPU check for issue 6, run once on a lent GPU machine (device tool) from the repo root:
#   bash bench/gpu_check.sh            (writes results to $OUT, or bench/out/gpu if unset)
# It uses that machine's own python3 (torch with CUDA, pyarrow, safetensors, numpy, PyYAML).
# The Spark job itself needs Java and pyspark there; when either is missing it says so and
# measures the ceiling (pyarrow read + encode on the GPU) and the origin-style baseline only.
set -uo pipefail
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
N=${N:-5700000}
DIM=${DIM:-768}
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, pyarrow, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0)); print('pyarrow', pyarrow.__version__, 'numpy', numpy.__version__)"
  echo "cpus: $(nproc)"; which java || echo "java: not installed"
  python3 -c "import pyspark; print('pyspark', pyspark.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$OUT/machine.txt"
python3 bench/run.py --n "$N" --dim "$DIM" --device cuda --skip job,noop --tag gpu_n${N}_d${DIM} \
  --data-dir /tmp/semid-bench 2>&1 | tee "$OUT/run.log"
cp bench/out/gpu_n${N}_d${DIM}.json "$OUT/" 2>/dev/null
python3 bench/cpu_vs_gpu.py --data /tmp/semid-bench/emb_${N}_${DIM} --ckpt /tmp/semid-bench/ckpt_${DIM} \
  --rows 200000 --dim "$DIM" 2>&1 | tee "$OUT/cpu_vs_gpu.log"
