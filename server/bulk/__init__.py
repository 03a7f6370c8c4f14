"""Bulk embedding: a corpus file in, vectors out (`emberd embed-file`, Ray Data).

The names here are all the command line needs, so that `emberd` starts
without importing pyarrow.
"""

FORMATS = ("jsonl", "csv", "parquet", "text")
OUTPUT_FORMATS = ("parquet", "npy")
ON_ERROR = ("fail", "skip")
DEFAULT_BATCH = 1024
