"""Group layout: which response belongs to which query.

Rewards arrive either dense, shaped ``[B, G]``, or flat, shaped ``[N]`` with one group id per
response (variable group sizes: dynamic sampling drops or refills groups). Internally every
per-response tensor is flat ``[N]`` and ``layout.index[n]`` is the contiguous group number
``0..B-1`` of response ``n``; group-wise reductions are segment sums (``index_add_``), so nothing
loops over ``B`` in Python and nothing needs a device-to-host copy.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._sync import host_to_device

__all__ = ["GroupLayout", "make_layout", "segment_sum"]


@dataclass(frozen=True)
class GroupLayout:
    """Mapping of ``N`` flat responses to ``num_groups`` groups (queries).

    ``index``: ``[N]`` int64 group number per response; ``sizes``: ``[B]`` float group sizes (on
    the device); ``dense_shape``: ``(B, G)`` when the input was dense, else ``None``;
    ``host_keys``: the caller's group ids in group order, when they were given on the host.
    """

    index: torch.Tensor
    sizes: torch.Tensor
    num_groups: int
    dense_shape: tuple[int, int] | None
    host_keys: tuple[Hashable, ...] | None = None

    @property
    def num_responses(self) -> int:
        return int(self.index.shape[0])

    @property
    def device(self) -> torch.device:
        return self.index.device

    def group_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` ``[N, ...]`` summed per group: :func:`segment_sum` over ``index``; for a
        dense layout a row sum of the ``[B, G, ...]`` view (half the cost of ``index_add_`` on
        CPU at B = 512, G = 16)."""
        if self.dense_shape is not None:
            return values.reshape(*self.dense_shape, *values.shape[1:]).sum(dim=1)
        return segment_sum(values, self.index, self.num_groups)

    def flatten(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Return ``x`` as a flat ``[N]`` tensor, checking that it matches the layout."""
        if self.dense_shape is not None and tuple(x.shape) == self.dense_shape:
            return x.reshape(-1)
        if x.dim() == 1 and x.shape[0] == self.num_responses:
            return x
        want = f"{list(self.dense_shape)} or " if self.dense_shape is not None else ""
        raise ShapeError(f"{name} has shape {list(x.shape)}; expected {want}[{self.num_responses}]")


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum ``values[n]`` into ``out[index[n]]`` along dim 0 (no host synchronisation)."""
    out = torch.zeros((num_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def make_layout(
    rewards: torch.Tensor,
    group_ids: Sequence[Hashable] | torch.Tensor | None = None,
    *,
    num_groups: int | None = None,
) -> GroupLayout:
    """Build the layout from ``rewards`` (``[B, G]``, or ``[N]`` with ``group_ids``).

    ``group_ids`` given on the host (a sequence of hashables, e.g. veRL's ``uid`` strings) are
    numbered in order of first appearance on the host. A ``group_ids`` tensor must already hold
    contiguous numbers ``0..num_groups-1`` and ``num_groups`` must be passed (inferring it would
    need a device-to-host copy).
    """
    device = rewards.device
    if group_ids is None:
        if rewards.dim() != 2:
            raise ShapeError(
                f"rewards has shape {list(rewards.shape)}; expected [B, G], or [N] with group_ids"
            )
        b, g = int(rewards.shape[0]), int(rewards.shape[1])
        if b == 0 or g == 0:
            raise ShapeError(f"rewards has shape {[b, g]}; need at least one group and response")
        # group b repeated G times (a copy of a broadcast view: repeat_interleave is 4x slower)
        index = torch.arange(b, device=device).unsqueeze(1).expand(b, g).reshape(-1)
        sizes = torch.full((b,), float(g), device=device)
        return GroupLayout(index=index, sizes=sizes, num_groups=b, dense_shape=(b, g))
    if rewards.dim() != 1:
        raise ShapeError(
            f"rewards has shape {list(rewards.shape)}; with group_ids, rewards must be flat [N]"
        )
    n = int(rewards.shape[0])
    if n == 0:
        raise ShapeError("rewards is empty")
    if isinstance(group_ids, torch.Tensor):
        if num_groups is None or num_groups < 1:
            raise ConfigurationError(
                "num_groups must be given (>= 1) when group_ids is a tensor; "
                "pass group_ids as a host sequence to have them numbered automatically"
            )
        if tuple(group_ids.shape) != (n,):
            raise ShapeError(f"group_ids has shape {list(group_ids.shape)}; expected [{n}]")
        index = group_ids.to(device=device, dtype=torch.int64)
        sizes = segment_sum(torch.ones(n, device=device), index, num_groups)
        return GroupLayout(index=index, sizes=sizes, num_groups=num_groups, dense_shape=None)
    if len(group_ids) != n:
        raise ShapeError(f"group_ids has {len(group_ids)} entries; rewards has {n}")
    numbering: dict[Hashable, int] = {}
    host_index = [numbering.setdefault(k, len(numbering)) for k in group_ids]
    counts = [0] * len(numbering)
    for i in host_index:
        counts[i] += 1
    if num_groups is not None and num_groups != len(numbering):
        raise ConfigurationError(
            f"num_groups={num_groups} but group_ids name {len(numbering)} distinct groups"
        )
    return GroupLayout(
        index=host_to_device(host_index, torch.int64, device),
        sizes=host_to_device([float(c) for c in counts], torch.float32, device),
        num_groups=len(numbering),
        dense_shape=None,
        host_keys=tuple(numbering),
    )
