"""Timing backends (ONNX Runtime, torch CPU/CUDA) and the profile that builds a LUT."""
