"""An example project for tuner: your own training loop (gan.py) and your own Task (blobs.py)."""
