"""`semid-report` as a plain file for spark-submit (semid installed where it runs):

    spark-submit [spark options] jobs/report.py [the flags of semid-report]

The command itself is semid_udf.cli.report.
"""
from semid_udf.cli.report import cli

if __name__ == "__main__":
    cli()
