"""Fault injection for the tests that kill a run at a stage boundary (tests/spark_helpers.py,
``failpoint``): a semid process started with ``SEMID_FAILPOINT=<start of a stage's label>`` and
this folder on its PYTHONPATH says ``failpoint: paused at <stage>`` on stderr and pauses there
for an hour, to be killed; or, with ``SEMID_FAILPOINT_RELEASE=<file>``, until that file exists, and
then goes on. semid itself has no test hook: this filter reads the stage lines it logs anyway."""
import logging
import os
import time

POINT = os.environ.get("SEMID_FAILPOINT")
RELEASE = os.environ.get("SEMID_FAILPOINT_RELEASE")


class _Pause(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if POINT and msg.startswith(POINT):
            logging.getLogger(record.name).warning("failpoint: paused at %s", msg)
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline and not (RELEASE and os.path.exists(RELEASE)):
                time.sleep(0.05)
        return True


if POINT:
    logging.getLogger("semid_udf.table.publish").addFilter(_Pause())  # the logger of the run's stages (Stages)
