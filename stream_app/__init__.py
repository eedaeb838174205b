"""Real-time streaming interest tracker: Faust workers, RocksDB state, ONNX attention model."""

__version__ = "0.1.0"
