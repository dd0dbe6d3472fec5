"""Fault injection for the Spark tests, as a semid plugin model (shipped with addPyFile).

The plugin wraps semid's own RQ-VAE, so a run that survives its faults must produce the
same table as a fault-free run. Which fault a task injects comes from the job's local
property ``semid.test.fault`` (set by the test around one run; none on the driver, where
semid builds and probes the model before any Spark work), so one factory serves every mode
and a version keeps one model whatever the fault.
"""
import os
import signal

from pyspark import TaskContext

from semid_udf.model.checkpoint import model_config_from_dict
from semid_udf.model.coder import RQVAE

PROPERTY = "semid.test.fault"
MARKER = "semid-test-slow-encoding-started"
MODES = ("raise_first_attempt", "kill_first_attempt", "always_raise", "slow")


class Faulty:
    def __init__(self, model, mode=None):
        self.model, self.mode = model, mode  # mode: a fixed fault, else the job's local property

    def to(self, device):
        self.model = self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    def encode(self, x):
        ctx = TaskContext.get()
        mode = (self.mode or ctx.getLocalProperty(PROPERTY)) if ctx is not None else None
        if mode is None:
            return self.model.encode(x)
        first = ctx.attemptNumber() == 0
        if ctx.partitionId() == 0:
            if mode == "raise_first_attempt" and first:
                raise RuntimeError("injected fault on a first attempt")
            if mode == "kill_first_attempt" and first:
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "always_raise":
                raise RuntimeError("injected permanent fault")
        if mode == "slow":  # tell the test that encoding runs, then take long enough to be killed
            import tempfile
            import time

            open(os.path.join(tempfile.gettempdir(), MARKER), "a").close()
            time.sleep(0.25)
        return self.model.encode(x)


def _build(config, tensors, mode=None):
    model = RQVAE(model_config_from_dict(config["model"]))
    model.load_state_dict(tensors, strict=True)
    return Faulty(model, mode)


def controlled(config, tensors):
    """Faults chosen per job by the local property semid.test.fault."""
    return _build(config, tensors)


def slow(config, tensors):
    """Every task slow (for a job that spark-submit starts: no local property to set)."""
    return _build(config, tensors, "slow")
