"""Archives of the messages retention removes: Parquet files, one set per UTC day of
created_at (parquet.py, which loads pyarrow: imported only where archives are written), in a
folder or on S3 or a store that speaks its API (stores.py)."""
