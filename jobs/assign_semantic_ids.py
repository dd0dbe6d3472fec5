"""`semid-assign` as a plain file for spark-submit (semid installed where it runs):

    spark-submit [spark options] jobs/assign_semantic_ids.py [the flags of semid-assign]

The command itself is semid_udf.cli.assign_semantic_ids.
"""
from semid_udf.cli.assign_semantic_ids import cli

if __name__ == "__main__":
    cli()
