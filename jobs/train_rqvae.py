"""`semid-train` as a plain file for spark-submit (semid installed where it runs):

    spark-submit [spark options] jobs/train_rqvae.py [the flags of semid-train]

The command itself is semid_udf.cli.train_rqvae.
"""
from semid_udf.cli.train_rqvae import cli

if __name__ == "__main__":
    cli()
