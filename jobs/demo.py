"""`semid-demo` as a plain file for spark-submit (semid installed where it runs):

    spark-submit [spark options] jobs/demo.py [the flags of semid-demo]

The command itself is semid_udf.cli.demo.
"""
from semid_udf.cli.demo import cli

if __name__ == "__main__":
    cli()
