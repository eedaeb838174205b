"""The attention model at serving time: features, the artifact format, the ONNX Runtime session and
the recommender that answers a micro-batch. Shared with ``export/`` (training), which imports it."""
