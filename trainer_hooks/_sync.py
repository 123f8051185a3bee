"""The single device-to-host transfer of a monitor step.

Every value a :class:`trainer_hooks.Monitor` step reads on the host goes through :func:`to_host`,
called once per step on one packed tensor. On CUDA a device-to-host copy waits for the stream, so
keeping it to one call keeps the monitor's cost to one synchronisation per step. Host-to-device
copies of host-built index tensors go through :func:`host_to_device` (pinned + non-blocking on
CUDA, so they do not wait for the stream either).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["host_to_device", "to_host"]


def to_host(packed: torch.Tensor) -> list[float]:
    """Copy a 1-D tensor to the host as Python floats: the one synchronisation of a step."""
    values: list[float] = packed.detach().reshape(-1).tolist()
    return values


def host_to_device(
    data: Sequence[int] | Sequence[float] | torch.Tensor, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Build a tensor from host data (or a CPU tensor) on ``device`` without waiting for the
    device stream."""
    cpu = data.to(dtype) if isinstance(data, torch.Tensor) else torch.tensor(data, dtype=dtype)
    if device.type == "cuda":
        return cpu.pin_memory().to(device, non_blocking=True)
    return cpu.to(device)
