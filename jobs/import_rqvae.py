"""`semid-import` as a plain file for spark-submit (semid installed where it runs):

    spark-submit [spark options] jobs/import_rqvae.py [the flags of semid-import]

The command itself is semid_udf.cli.import_rqvae.
"""
from semid_udf.cli.import_rqvae import cli

if __name__ == "__main__":
    cli()
