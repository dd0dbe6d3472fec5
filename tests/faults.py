"""Fault injection for the Spark tests, as a semid plugin model (shipped with addPyFile).

The plugin wraps semid's own RQ-VAE, so a run that survives its faults must produce the
same table as a fault-free run.
"""
import os
import signal

from pyspark import TaskContext

from semid_udf.checkpoint import model_config_from_dict
from semid_udf.model import RQVAE

MARKER = "semid-test-slow-encoding-started"
MODES = ("raise_first_attempt", "kill_first_attempt", "always_raise", "slow")


class Faulty:
    def __init__(self, model, mode):
        self.model, self.mode = model, mode

    def to(self, device):
        self.model = self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    def encode(self, x):
        ctx = TaskContext.get()
        first = ctx.attemptNumber() == 0
        if ctx.partitionId() == 0:
            if self.mode == "raise_first_attempt" and first:
                raise RuntimeError("injected fault on a first attempt")
            if self.mode == "kill_first_attempt" and first:
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "always_raise":
                raise RuntimeError("injected permanent fault")
        if self.mode == "slow":  # tell the test that encoding runs, then take long enough to be killed
            import tempfile
            import time

            open(os.path.join(tempfile.gettempdir(), MARKER), "a").close()

            time.sleep(0.25)
        return self.model.encode(x)


def _build(config, tensors, mode):
    model = RQVAE(model_config_from_dict(config["model"]))
    model.load_state_dict(tensors, strict=True)
    return Faulty(model, mode)


def raise_first_attempt(config, tensors):
    return _build(config, tensors, "raise_first_attempt")


def kill_first_attempt(config, tensors):
    return _build(config, tensors, "kill_first_attempt")


def always_raise(config, tensors):
    return _build(config, tensors, "always_raise")


def slow(config, tensors):
    return _build(config, tensors, "slow")
