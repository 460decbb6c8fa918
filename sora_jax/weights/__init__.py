"""Weights in and out: reference PyTorch checkpoints, safetensors and PyTorch exports."""
