"""The running worker: the Faust app, its agents (ingest, track), output producer and metrics."""
