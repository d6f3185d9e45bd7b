"""Where the network runs: CUDA when present, else the CPU; an operator may force either.

On CUDA the fold models run under ``torch.autocast`` (bfloat16 where the GPU supports it,
float16 otherwise); on the CPU they run in float32.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def choose_device(choice: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cpu`` / ``cuda``: exactly that."""
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device: expected one of {DEVICE_CHOICES}, found {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected a CUDA GPU for 'cuda', found none available")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision used on ``device``; None where inference stays in float32."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def inference_precision(device: torch.device) -> ContextManager:
    """Autocast on CUDA, nothing on the CPU."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
