"""Which ONNX Runtime execution provider can run here."""

from __future__ import annotations

import ctypes
from pathlib import Path

CUDA_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcudnn.so.9")


def cuda_usable() -> bool:
    """True only when onnxruntime has the CUDA provider *and* a GPU and the CUDA 13 libraries are
    present (onnxruntime-gpu logs errors when asked for CUDA without them)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers() or not Path("/dev/nvidiactl").exists():
        return False
    try:
        for lib in CUDA_LIBRARIES:
            ctypes.CDLL(lib)
    except OSError:
        return False
    return True
