"""The Python worker daemon of the sessions semid builds (``spark.python.daemon.module``).

It is pyspark's own daemon, with numpy and torch imported before it forks the workers:
each worker then starts with them loaded (shared copy-on-write) instead of spending about
2 CPU seconds importing torch when its first task arrives. Imports only, and the daemon
stays single-threaded: no torch thread pool, device or model is touched before the fork,
and pyarrow (whose allocator starts a background thread at import) is left to the workers.
"""
import os

# numpy's OpenBLAS would start its thread pool at import, in the process that forks;
# the workers set their own thread counts (semid_udf.model.encode.set_numerics).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy  # noqa: E402,F401
import torch  # noqa: E402,F401
from pyspark import daemon  # noqa: E402

if __name__ == "__main__":
    daemon.manager()
