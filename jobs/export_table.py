"""`semid-export` as a plain file for spark-submit (semid installed where it runs):

    spark-submit [spark options] jobs/export_table.py [the flags of semid-export]

The command itself is semid_udf.cli.export_table.
"""
from semid_udf.cli.export_table import cli

if __name__ == "__main__":
    cli()
