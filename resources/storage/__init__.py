"""Where data lives: immutable, content-addressed, local or on S3.

- :mod:`~resources.storage.tables` - ``TableStore`` (Parquet tables) and ``CheckpointStore`` (checkpoint folders)
- :mod:`~resources.storage.user_data` - loading and validating the user's instruction files
- :mod:`~resources.storage.retry` - retries with backoff for transient storage faults
- :mod:`~resources.storage.prune` - plan and delete old versions
- :mod:`~resources.storage.export` - a table as a Hugging Face dataset folder with its dataset card
- :mod:`~resources.storage.viewer` - one self-contained HTML page of a table version (``montessori view``)
"""
