"""Training data: ``prepare`` turns videos (or still portraits) into the prepared-dataset
format of ``docs/DATASET.md``; ``data`` reads it back as torch datasets."""
