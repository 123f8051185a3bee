"""The sections of a :meth:`trainer_hooks.Monitor.step`: one small function per group of metrics.

Each section reads the step's inputs (:class:`StepContext`), computes its metrics on the
tensors' device and adds them to the step's :class:`StepPacker` under names from the metric
table (``service/wire/metrics.py``; per-query columns as ``q_<field>``). :func:`measure` runs
the sections in order and copies everything the host needs with the step's one
device-to-host copy (:func:`trainer_hooks._sync.to_host`). Adding a metric means adding it to
the table and to the section that computes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from service.wire.metrics import HOOK_STEP_METRIC_NAMES, STEP_METRIC_NAMES
from service.wire.query import QUERY_FIELDS
from trainer_hooks._entropy import check_temperature, entropy_summary, token_entropy_rows
from trainer_hooks._errors import ShapeError
from trainer_hooks._group import GroupStats, group_stats
from trainer_hooks._iac import iac_calibrate
from trainer_hooks._layout import GroupLayout, segment_sum
from trainer_hooks._probe import probe_metrics
from trainer_hooks._sync import to_host
from trainer_hooks._types import StepInputs
from trainer_hooks._unsupervised import (
    repetition_rate,
    response_lengths,
    response_tokens_first,
    reward_agreement,
)
from trainer_hooks._zprime import assign_modes, log_zprime_each, modes_from_keys, sequence_keys

__all__ = ["SECTIONS", "Measurement", "StepContext", "StepPacker", "measure"]

#: Names a section may add: the table's step metrics and the per-query columns (``q_`` + a
#: query field, plus the group's size and successes that every query row carries).
TABLE_NAMES: frozenset[str] = (
    STEP_METRIC_NAMES
    | HOOK_STEP_METRIC_NAMES
    | {f"q_{f.name}" for f in QUERY_FIELDS}
    | {"q_size", "q_successes"}
)


class StepPacker:
    """Collects 0-d and 1-d device tensors; one host copy returns them all."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.parts: list[torch.Tensor] = []
        #: name -> (index in ``parts``, length, 0-d)
        self.slots: dict[str, tuple[int, int, bool]] = {}

    def add(self, name: str, t: torch.Tensor) -> None:
        """A metric of the table (``name`` must be in it)."""
        if name not in TABLE_NAMES:
            raise KeyError(f"{name!r} is not in the metric table (service/wire/metrics.py)")
        self._add(name, t)

    def add_passthrough(self, name: str, t: torch.Tensor) -> None:
        """A caller-named value (``StepInputs.extra``), passed through as it is."""
        self._add(name, t)

    def _add(self, name: str, t: torch.Tensor) -> None:
        if t.device != self.device:
            raise ShapeError(f"{name} is on {t.device}; the step's tensors are on {self.device}")
        flat = t.detach().reshape(-1)
        self.slots[name] = (len(self.parts), int(flat.shape[0]), t.dim() == 0)
        self.parts.append(flat)

    def fetch(self) -> dict[str, list[float]]:
        if not self.parts:
            return {}
        # parts of one dtype are concatenated first and converted to float64 once (a step adds
        # ~50 parts of 3-4 dtypes: one conversion per part cost ~0.2 ms on CPU, issue 21)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, part in enumerate(self.parts):
            by_dtype.setdefault(part.dtype, []).append(i)
        start: dict[int, int] = {}
        chunks = []
        offset = 0
        for idxs in by_dtype.values():
            for i in idxs:
                start[i] = offset
                offset += int(self.parts[i].shape[0])
            chunks.append(torch.cat([self.parts[i] for i in idxs]).to(torch.float64))
        host = to_host(chunks[0] if len(chunks) == 1 else torch.cat(chunks))
        return {k: host[start[i] : start[i] + n] for k, (i, n, _) in self.slots.items()}


@dataclass
class StepContext:
    """One step's inputs and settings, and what earlier sections computed for later ones."""

    inputs: StepInputs
    layout: GroupLayout
    alpha: float
    success_threshold: float
    temperature: float
    entropy_chunk_size: int
    iac: bool
    iac_s_plus: str
    zprime_beta: float
    repetition_n: int
    stats: GroupStats | None = None
    #: The advantages for the update (after IAC when it is on); set by :func:`iac_section`.
    used: torch.Tensor | None = None
    #: Selected tokens per response ``[N]`` under ``inputs.mask`` (every position of the mask
    #: counted, no empty logit rows): the response lengths, set by :func:`entropy_section`.
    mask_counts: torch.Tensor | None = None
    #: Response lengths ``[N]`` when known; set by :func:`length_section`.
    lengths: torch.Tensor | None = None
    #: Floats the caller passed as floats (no device copy needed).
    host_scalars: dict[str, float] | None = None


def group_section(ctx: StepContext, pk: StepPacker) -> None:
    """S⁺, success rate, degenerate groups, reward variance (science.md §1)."""
    stats = group_stats(
        ctx.inputs.rewards, success_threshold=ctx.success_threshold, layout=ctx.layout
    )
    ctx.stats = stats
    pk.add("q_size", stats.sizes)
    pk.add("q_successes", stats.successes)
    pk.add("success_rate", stats.success_rate)
    pk.add("degenerate_all_fail", stats.degenerate_all_fail)
    pk.add("degenerate_all_pass", stats.degenerate_all_pass)
    pk.add("reward_var_observed", stats.reward_var_observed)
    pk.add("reward_var_expected", stats.reward_var_expected)


def entropy_section(ctx: StepContext, pk: StepPacker) -> None:
    """Token entropy of the sampled distribution under the mask (science.md §1 (b), §3, §7)."""
    inputs = ctx.inputs
    ent, empty = inputs.token_entropy, None
    if ent is None and inputs.logits is not None:
        temperature = (
            ctx.temperature
            if inputs.temperature is None
            else check_temperature(inputs.temperature, "StepInputs.temperature")
        )
        ent, empty = token_entropy_rows(
            inputs.logits, temperature=temperature, chunk_size=ctx.entropy_chunk_size
        )
    if ent is None:
        return
    es = entropy_summary(ent, inputs.mask, ctx.layout, empty=empty)
    if inputs.mask is not None and empty is None:
        ctx.mask_counts = es.tokens_per_sequence
    pk.add("entropy", es.mean)
    pk.add("entropy_tokens", es.tokens)
    pk.add("q_entropy", es.per_query)
    if empty is not None:
        pk.add("entropy_empty_rows", es.empty_tokens)


def iac_section(ctx: StepContext, pk: StepPacker) -> None:
    """The advantages for the update: IAC-calibrated when it is on (science.md §3)."""
    inputs, stats = ctx.inputs, ctx.stats
    ctx.used = inputs.advantages
    if inputs.advantages is None or not ctx.iac:
        return
    assert stats is not None
    ctx.used = iac_calibrate(
        inputs.advantages,
        inputs.rewards,
        alpha=ctx.alpha,
        layout=ctx.layout,
        successes=stats.successes,
        s_plus=ctx.iac_s_plus,
    )


def zprime_section(ctx: StepContext, pk: StepPacker) -> None:
    """log Z'(q) from the used and the raw advantages (science.md §2 Decision, §7).

    Modes: answer keys when given, else token sequences (``token_ids`` under ``mask``).
    π: ``ref_logprobs`` when given, else ``old_logprobs`` (its stand-in), else Good–Turing.
    Log-probs without a way to tell responses apart give no Z'."""
    inputs, layout, used = ctx.inputs, ctx.layout, ctx.used
    adv = inputs.advantages
    if adv is None or used is None:
        return
    if inputs.answer_keys is None and inputs.token_ids is None:
        return
    seq = None
    if inputs.token_ids is not None:
        ids = inputs.token_ids.reshape(layout.num_responses, -1)
        seq = sequence_keys(ids, inputs.mask)
    if inputs.answer_keys is not None:
        modes = assign_modes(inputs.answer_keys, layout, sequence_keys=seq)
    else:
        assert seq is not None
        modes = modes_from_keys(seq, layout)
    logprobs = inputs.ref_logprobs if inputs.ref_logprobs is not None else inputs.old_logprobs
    sequences = None
    if logprobs is not None and seq is not None:
        sequences = modes if inputs.answer_keys is None else modes_from_keys(seq, layout)
    both = (adv,) if used is adv else (adv, used)  # one batched pass for raw and used
    zs = log_zprime_each(
        both, modes, layout, beta=ctx.zprime_beta, ref_logprobs=logprobs, sequences=sequences
    )
    zr, zu = zs[0], zs[-1]
    pk.add("q_n_modes", modes.n_modes)
    assert zu.queries is not None
    pk.add("zprime_queries", zu.queries)
    pk.add("log_zprime_mean", zu.mean)
    pk.add("log_zprime_p90", zu.p90)
    pk.add("zprime_gt1_frac", zu.gt1_frac)
    pk.add("q_log_zprime", zu.log_zprime)
    pk.add("log_zprime_raw_mean", zr.mean)
    pk.add("log_zprime_raw_p90", zr.p90)
    pk.add("zprime_raw_gt1_frac", zr.gt1_frac)
    pk.add("q_log_zprime_raw", zr.log_zprime)


def reward_accuracy_section(ctx: StepContext, pk: StepPacker) -> None:
    """Pseudo vs oracle rewards: reward and label accuracy, proxy and ground truth (§4)."""
    inputs = ctx.inputs
    if inputs.oracle_rewards is None:
        return
    ra = reward_agreement(
        inputs.rewards, inputs.oracle_rewards, ctx.layout, success_threshold=ctx.success_threshold
    )
    pk.add("reward_accuracy", ra.reward_accuracy)
    pk.add("reward_accuracy_agree", ra.agree)
    pk.add("reward_accuracy_total", ra.total)
    pk.add("q_reward_accuracy", ra.per_query_reward_accuracy)
    if inputs.pseudo_labels is None:
        pk.add("label_accuracy", ra.label_accuracy)
    pk.add("proxy_reward", ra.proxy_reward)
    pk.add("gt_reward", ra.gt_reward)


def length_section(ctx: StepContext, pk: StepPacker) -> None:
    """Mean response length, per step and per query (science.md §4)."""
    inputs, layout = ctx.inputs, ctx.layout
    if inputs.response_lengths is None and inputs.mask is None:
        return
    if inputs.response_lengths is None and ctx.mask_counts is not None:
        # the entropy section has counted the mask's response tokens already: the same count
        # (0/1 masks), without reading the [N, T] mask a second time (issue 21)
        lengths = ctx.mask_counts.to(torch.float32)
    else:
        lengths = response_lengths(layout, mask=inputs.mask, lengths=inputs.response_lengths).to(
            pk.device
        )
    ctx.lengths = lengths
    pk.add("response_length", lengths.mean())
    pk.add(
        "q_response_length", segment_sum(lengths, layout.index, layout.num_groups) / layout.sizes
    )


def repetition_section(ctx: StepContext, pk: StepPacker) -> None:
    """Share of repeated n-grams in the responses (science.md §4)."""
    inputs = ctx.inputs
    if inputs.token_ids is None:
        return
    ids = inputs.token_ids.reshape(ctx.layout.num_responses, -1)
    if inputs.mask is not None:  # left- or right-padded: response tokens first
        ids = response_tokens_first(ids, inputs.mask)
    _, rep = repetition_rate(ids, ctx.lengths, n=ctx.repetition_n)
    pk.add("repetition_rate", rep)


def probe_section(ctx: StepContext, pk: StepPacker) -> None:
    """Held-out probe success and entropy (science.md §2 observable proxy)."""
    probe = ctx.inputs.probe
    if probe is None:
        return
    ps, pe = probe_metrics(
        probe,
        success_threshold=ctx.success_threshold,
        chunk_size=ctx.entropy_chunk_size,
        temperature=ctx.temperature,
    )
    pk.add("probe_success", ps)
    if pe is not None:
        pk.add("probe_entropy", pe)


def passthrough_section(ctx: StepContext, pk: StepPacker) -> None:
    """``loss``, ``grad_norm``, ``kl`` and ``extra`` as the caller gave them: tensors travel in
    the step's one copy, floats stay on the host."""
    inputs, dev = ctx.inputs, pk.device
    host: dict[str, float] = {}
    for name in ("loss", "grad_norm", "kl"):
        v = getattr(inputs, name)
        if isinstance(v, torch.Tensor):
            pk.add(name, v.to(dev).reshape(()))
        elif v is not None:
            host[name] = float(v)
    for name, v in inputs.extra.items():
        if isinstance(v, torch.Tensor):
            pk.add_passthrough(name, v.to(dev).reshape(()))
        else:
            host[name] = float(v)
    ctx.host_scalars = host


#: The sections in the order they run (IAC before Z', lengths before repetition).
SECTIONS: tuple[Callable[[StepContext, StepPacker], None], ...] = (
    group_section,
    entropy_section,
    iac_section,
    zprime_section,
    reward_accuracy_section,
    length_section,
    repetition_section,
    probe_section,
    passthrough_section,
)


@dataclass(frozen=True)
class Measurement:
    """A step's values on the host after its one copy.

    ``scalars``: the 0-d values that travelled in the copy; ``passthrough``: the caller's
    floats (``loss``, ``grad_norm``, ``kl``, ``extra``), which never left the host;
    ``columns``: the per-query ``q_`` columns."""

    scalars: dict[str, float]
    passthrough: dict[str, float]
    columns: dict[str, list[float]]


def measure(ctx: StepContext) -> Measurement:
    """Run every section on the device, then copy the results to the host once."""
    pk = StepPacker(ctx.inputs.rewards.device)
    for section in SECTIONS:
        section(ctx, pk)
    host = pk.fetch()
    return Measurement(
        scalars={k: v[0] for k, v in host.items() if pk.slots[k][2] and not k.startswith("q_")},
        passthrough=ctx.host_scalars or {},
        columns={k: v for k, v in host.items() if k.startswith("q_")},
    )
