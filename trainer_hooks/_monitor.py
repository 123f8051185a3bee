"""``Monitor``: the one object a training loop talks to, once per step.

It computes every per-step health metric of science.md (§1 group signal, §2 Z'(q), §3 IAC, §4
unsupervised-RLVR metrics, probe) on the tensors' device, packs every scalar and per-query vector
into one tensor and copies it to the host once (:func:`trainer_hooks._sync.to_host`), builds the
step's metrics, and hands the wire record to the sender without blocking and without raising
into the loop. A sender with ``submit_deferred`` (the client) gets it unbuilt and builds its
per-query part on its own thread (``_record.py``), so the training thread does no per-query
host work.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import torch

from trainer_hooks._dlc import DEFAULT_MU, _check_mu
from trainer_hooks._entropy import (
    DEFAULT_CHUNK_SIZE,
    check_temperature,
    entropy_summary,
    token_entropy_rows,
)
from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._group import group_stats, p_star
from trainer_hooks._iac import _check_alpha, check_s_plus, iac_calibrate
from trainer_hooks._layout import GroupLayout, make_layout, segment_sum
from trainer_hooks._probe import probe_metrics
from trainer_hooks._record import DeferredRecord, DeferredStepSender, finite_or_none
from trainer_hooks._sync import to_host
from trainer_hooks._types import AlphaChange, StepInputs, StepResult, StepSender, StopRequest
from trainer_hooks._unsupervised import (
    ModelCollapseTracker,
    label_accuracy_from_labels,
    repetition_rate,
    response_lengths,
    response_tokens_first,
    reward_agreement,
)
from trainer_hooks._zprime import (
    ModeAssignment,
    ZPrimeResult,
    assign_modes,
    log_zprime,
    modes_from_keys,
    sequence_keys,
)

__all__ = ["Monitor"]

DEFAULT_REFERENCE_BETA = 0.04
"""β used for Z'(q) when the run trains without KL (kl_beta == 0) and gives no ``reference_beta``:
the KL coefficient of the GRPO recipe (DeepSeekMath, TRL's former default); docs/science.md §2."""

logger = logging.getLogger("trainer_hooks")


def _positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    return value


class _Packer:
    """Collects 0-d and 1-d device tensors; one host copy returns them all."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.parts: list[torch.Tensor] = []
        self.slots: dict[str, tuple[int, int, bool]] = {}
        self.offset = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        if t.device != self.device:
            raise ShapeError(f"{name} is on {t.device}; the step's tensors are on {self.device}")
        flat = t.detach().reshape(-1).to(torch.float64)
        self.slots[name] = (self.offset, int(flat.shape[0]), t.dim() == 0)
        self.offset += int(flat.shape[0])
        self.parts.append(flat)

    def fetch(self) -> dict[str, list[float]]:
        if not self.parts:
            return {}
        host = to_host(torch.cat(self.parts))
        return {k: host[o : o + n] for k, (o, n, _) in self.slots.items()}


#: Step metrics of Z'(q), dropped together when no query of the step has a Z'.
ZPRIME_STEP_METRICS = (
    "log_zprime_mean",
    "log_zprime_p90",
    "zprime_gt1_frac",
    "log_zprime_raw_mean",
    "log_zprime_raw_p90",
    "zprime_raw_gt1_frac",
)


class Monitor:
    """Per-step RLVR health metrics, IAC, α control and stop requests.

    Settings (all validated here; the bad one is named): ``group_size`` G (nominal, for p*(G));
    ``kl_beta`` (the run's KL coefficient β, may be 0); ``reference_beta`` (β for Z'(q) when
    ``kl_beta == 0``; default ``DEFAULT_REFERENCE_BETA`` = 0.04, science.md §2 Decision);
    ``success_threshold`` (reward >= it is a success; default 0.5); ``alpha`` (IAC α, default
    1.0) and ``iac`` (apply IAC to the returned advantages); ``iac_s_plus`` (how IAC counts
    |S⁺|: ``"advantage"``, responses with A > 0 as in Algorithm 1, the default; or
    ``"threshold"``, rewards >= ``success_threshold``; science.md §7); ``mu`` (DLC μ the loop
    samples with, reported as a metric); ``temperature`` (the rollouts' sampling temperature:
    entropy from logits is that of softmax(logits / temperature), science.md §7; a step may
    override it);
    ``entropy_chunk_size``; ``probe_every`` (the loop evaluates the held-out probe when
    :meth:`probe_due`); ``collapse_threshold`` (Model Collapse Step threshold, default 0.01);
    ``repetition_n`` (n-gram size); ``sender`` (a :class:`StepSender`); ``on_stop`` (called with the
    :class:`StopRequest` when :meth:`request_stop` is called).
    """

    def __init__(
        self,
        *,
        group_size: int,
        kl_beta: float,
        reference_beta: float | None = None,
        success_threshold: float = 0.5,
        alpha: float = 1.0,
        iac: bool = True,
        iac_s_plus: str = "advantage",
        mu: float = DEFAULT_MU,
        temperature: float = 1.0,
        entropy_chunk_size: int = DEFAULT_CHUNK_SIZE,
        probe_every: int | None = None,
        collapse_threshold: float = 0.01,
        repetition_n: int = 4,
        sender: StepSender | None = None,
        on_stop: Callable[[StopRequest], None] | None = None,
    ) -> None:
        self.group_size = _positive_int("group_size", group_size)
        self.kl_beta = _positive_number("kl_beta", kl_beta, allow_zero=True)
        if reference_beta is not None:
            reference_beta = _positive_number("reference_beta", reference_beta)
        if self.kl_beta == 0.0 and reference_beta is None:
            # KL-free runs (DAPO, most GRPO recipes) still need a β for Z'(q): docs/science.md §2.
            reference_beta = DEFAULT_REFERENCE_BETA
        self.reference_beta = reference_beta
        if isinstance(success_threshold, bool) or not isinstance(success_threshold, int | float):
            raise ConfigurationError(
                f"success_threshold must be a number, got {success_threshold!r}"
            )
        if not math.isfinite(success_threshold):
            raise ConfigurationError(f"success_threshold must be finite, got {success_threshold!r}")
        self.success_threshold = float(success_threshold)
        try:
            self._alpha = _check_alpha(alpha)
        except ConfigurationError as exc:
            raise ConfigurationError(f"alpha: {exc}") from None
        if not isinstance(iac, bool):
            raise ConfigurationError(f"iac must be a bool, got {iac!r}")
        self.iac = iac
        self.iac_s_plus = check_s_plus(iac_s_plus, "iac_s_plus")
        try:
            self.mu = _check_mu(mu)
        except ConfigurationError as exc:
            raise ConfigurationError(f"mu: {exc}") from None
        self.temperature = check_temperature(temperature)
        self._warned_empty_rows = False
        self.entropy_chunk_size = _positive_int("entropy_chunk_size", entropy_chunk_size)
        self.probe_every = (
            None if probe_every is None else _positive_int("probe_every", probe_every)
        )
        self.collapse = ModelCollapseTracker(collapse_threshold)
        self.repetition_n = _positive_int("repetition_n", repetition_n)
        if sender is not None and not isinstance(sender, StepSender):
            raise ConfigurationError("sender must have a submit(record) method (StepSender)")
        self.sender = sender
        if on_stop is not None and not callable(on_stop):
            raise ConfigurationError("on_stop must be callable")
        self.on_stop = on_stop
        self.zprime_beta = self.kl_beta if self.kl_beta > 0 else float(reference_beta or 0.0)
        self.zprime_beta_is_reference = self.kl_beta == 0.0
        self._next_step = 0
        self._last_step: int | None = None
        self._pending_alpha: tuple[float, str, Callable[[AlphaChange], None] | None] | None = None
        self._lock = threading.Lock()
        self.alpha_history: list[AlphaChange] = []
        self._stop: StopRequest | None = None
        self.sender_errors = 0
        # False: build every record on the training thread (the path before issue 21; kept
        # for bench_hooks' same-run comparison and the tests' reference build).
        self._defer_records = True

    # -- control ----------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        """The α the next step uses (a pending change counts once it took effect)."""
        return self._alpha

    @property
    def pending_alpha(self) -> float:
        """The α the next :meth:`step` will use (a requested change, else the current α)."""
        with self._lock:
            return self._pending_alpha[0] if self._pending_alpha is not None else self._alpha

    @property
    def last_step(self) -> int | None:
        """The last step :meth:`step` processed, or ``None`` before the first."""
        return self._last_step

    def set_alpha(
        self,
        new_alpha: float,
        reason: str = "",
        *,
        on_applied: Callable[[AlphaChange], None] | None = None,
    ) -> None:
        """Change IAC α from the next :meth:`step` on (recorded in ``alpha_history``).

        Thread-safe (a command poller may call it). ``on_applied`` is called with the
        :class:`AlphaChange` when the change takes effect; its errors are logged, not raised.
        A later call before the next step replaces an earlier pending one.
        """
        try:
            value = _check_alpha(new_alpha)
        except ConfigurationError as exc:
            raise ConfigurationError(f"new_alpha: {exc}") from None
        with self._lock:
            self._pending_alpha = (value, str(reason), on_applied)

    @property
    def should_stop(self) -> bool:
        return self._stop is not None

    @property
    def stop_request(self) -> StopRequest | None:
        return self._stop

    def request_stop(self, reason: str, best_step: int | None = None) -> None:
        """Ask the loop to stop; calls ``on_stop`` (its errors are logged, not raised)."""
        self._stop = StopRequest(str(reason), best_step, self._last_step)
        if self.on_stop is not None:
            try:
                self.on_stop(self._stop)
            except Exception:
                logger.exception("sharpwatch on_stop callback failed")

    def probe_due(self, step: int | None = None) -> bool:
        """Whether the held-out probe should be evaluated at ``step`` (default: the next step)."""
        s = self._next_step if step is None else step
        return self.probe_every is not None and s % self.probe_every == 0

    # -- the step ---------------------------------------------------------------------------
    def step(self, inputs: StepInputs) -> StepResult:
        """Compute the step's metrics, calibrate advantages, send the record (one host sync)."""
        step = self._next_step if inputs.step is None else int(inputs.step)
        if step < 0:
            raise ConfigurationError(f"step must be >= 0, got {step}")
        with self._lock:
            pending, self._pending_alpha = self._pending_alpha, None
        if pending is not None:
            value, reason, on_applied = pending
            self._alpha = value
            change = AlphaChange(value, reason, self._last_step, step)
            self.alpha_history.append(change)
            if on_applied is not None:
                try:
                    on_applied(change)
                except Exception:
                    logger.exception("sharpwatch set_alpha on_applied callback failed")
        alpha = self._alpha

        rewards = inputs.rewards
        dev = rewards.device
        layout = make_layout(rewards, inputs.group_ids, num_groups=inputs.num_groups)
        pk = _Packer(dev)
        stats = group_stats(rewards, success_threshold=self.success_threshold, layout=layout)
        pk.add("q_size", stats.sizes)
        pk.add("q_successes", stats.successes)
        pk.add("success_rate", stats.success_rate)
        pk.add("degenerate_all_fail", stats.degenerate_all_fail)
        pk.add("degenerate_all_pass", stats.degenerate_all_pass)
        pk.add("reward_var_observed", stats.reward_var_observed)
        pk.add("reward_var_expected", stats.reward_var_expected)

        # entropy (science.md §1 (b), §3, §7: of the sampled distribution, masks select)
        ent = inputs.token_entropy
        empty = None
        if ent is None and inputs.logits is not None:
            temperature = (
                self.temperature
                if inputs.temperature is None
                else check_temperature(inputs.temperature, "StepInputs.temperature")
            )
            ent, empty = token_entropy_rows(
                inputs.logits, temperature=temperature, chunk_size=self.entropy_chunk_size
            )
        if ent is not None:
            es = entropy_summary(ent, inputs.mask, layout, empty=empty)
            pk.add("entropy", es.mean)
            pk.add("entropy_tokens", es.tokens)
            pk.add("q_entropy", es.per_query)
            if empty is not None:
                pk.add("entropy_empty_rows", es.empty_tokens)

        # IAC (science.md §3)
        used = inputs.advantages
        if inputs.advantages is not None and self.iac:
            used = iac_calibrate(
                inputs.advantages,
                rewards,
                alpha=alpha,
                layout=layout,
                successes=stats.successes,
                s_plus=self.iac_s_plus,
            )

        # Z'(q) (science.md §2 Decision, §7), from the used and the raw advantages
        zprime = self._zprime(inputs, layout, used)
        if zprime is not None:
            zr, zu, modes = zprime
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

        # unsupervised RLVR (science.md §4)
        if inputs.oracle_rewards is not None:
            ra = reward_agreement(
                rewards, inputs.oracle_rewards, layout, success_threshold=self.success_threshold
            )
            pk.add("reward_accuracy", ra.reward_accuracy)
            pk.add("reward_accuracy_agree", ra.agree)
            pk.add("reward_accuracy_total", ra.total)
            pk.add("q_reward_accuracy", ra.per_query_reward_accuracy)
            if inputs.pseudo_labels is None:
                pk.add("label_accuracy", ra.label_accuracy)
            pk.add("proxy_reward", ra.proxy_reward)
            pk.add("gt_reward", ra.gt_reward)
        lengths = None
        if inputs.response_lengths is not None or inputs.mask is not None:
            lengths = response_lengths(
                layout, mask=inputs.mask, lengths=inputs.response_lengths
            ).to(dev)
            pk.add("response_length", lengths.mean())
            pk.add(
                "q_response_length",
                segment_sum(lengths, layout.index, layout.num_groups) / layout.sizes,
            )
        if inputs.token_ids is not None:
            ids = inputs.token_ids.reshape(layout.num_responses, -1)
            if inputs.mask is not None:  # left- or right-padded: response tokens first
                ids = response_tokens_first(ids, inputs.mask)
            _, rep = repetition_rate(ids, lengths, n=self.repetition_n)
            pk.add("repetition_rate", rep)

        # probe (science.md §2 observable proxy)
        if inputs.probe is not None:
            ps, pe = probe_metrics(
                inputs.probe,
                success_threshold=self.success_threshold,
                chunk_size=self.entropy_chunk_size,
                temperature=self.temperature,
            )
            pk.add("probe_success", ps)
            if pe is not None:
                pk.add("probe_entropy", pe)

        host_scalars: dict[str, float] = {}
        for name in ("loss", "grad_norm", "kl"):
            v = getattr(inputs, name)
            if isinstance(v, torch.Tensor):
                pk.add(name, v.to(dev).reshape(()))
            elif v is not None:
                host_scalars[name] = float(v)
        for name, v in inputs.extra.items():
            if isinstance(v, torch.Tensor):
                pk.add(name, v.to(dev).reshape(()))
            else:
                host_scalars[name] = float(v)

        # ---- the one device-to-host copy of the step ----
        host = pk.fetch()
        return self._finish(step, alpha, used, layout, inputs, host, host_scalars, pk)

    def _zprime(
        self, inputs: StepInputs, layout: GroupLayout, used: torch.Tensor | None
    ) -> tuple[ZPrimeResult, ZPrimeResult, ModeAssignment] | None:
        """Z'(q) from the raw and the used advantages, or None when it cannot be defined.

        Modes: answer keys when given, else token sequences (``token_ids`` under ``mask``).
        π: ``ref_logprobs`` when given, else ``old_logprobs`` (its stand-in), else Good–Turing
        (science.md §7). Log-probs without a way to tell responses apart give no Z'."""
        adv = inputs.advantages
        if adv is None or used is None:
            return None
        if inputs.answer_keys is None and inputs.token_ids is None:
            return None
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
        beta = self.zprime_beta
        zr = log_zprime(adv, modes, layout, beta=beta, ref_logprobs=logprobs, sequences=sequences)
        zu = (
            zr
            if used is adv
            else log_zprime(
                used, modes, layout, beta=beta, ref_logprobs=logprobs, sequences=sequences
            )
        )
        return zr, zu, modes

    def _entropy_defined(self, raw: dict[str, float]) -> None:
        """science.md §7: a step without selected response tokens has no entropy (absent, not
        NaN); unmasked all ``-inf`` logit rows are an input error, logged once per Monitor and
        counted in ``entropy_empty_rows``, never a NaN that trips ``non_finite``."""
        if raw.get("entropy_tokens") == 0.0:
            raw.pop("entropy", None)
        empty = raw.get("entropy_empty_rows", 0.0)
        if empty > 0 and not self._warned_empty_rows:
            self._warned_empty_rows = True
            logger.warning(
                "sharpwatch: %d unmasked token positions have all -inf logits (no distribution); "
                "they are left out of entropy (entropy_empty_rows counts them each step). Check "
                "the response mask or the logits processor.",
                int(empty),
            )

    def _finish(
        self,
        step: int,
        alpha: float,
        used: torch.Tensor | None,
        layout: GroupLayout,
        inputs: StepInputs,
        host: dict[str, list[float]],
        host_scalars: dict[str, float],
        pk: _Packer,
    ) -> StepResult:
        raw: dict[str, float] = {
            k: v[0] for k, v in host.items() if not k.startswith("q_") and pk.slots[k][2]
        }
        if inputs.pseudo_labels is not None and inputs.true_labels is not None:
            raw["label_accuracy"] = label_accuracy_from_labels(
                inputs.pseudo_labels, inputs.true_labels
            )
        self._entropy_defined(raw)
        raw.update(host_scalars)
        raw["alpha"] = alpha
        raw["mu"] = self.mu
        raw["p_star"] = p_star(self.group_size)
        raw["iac"] = 1.0 if self.iac else 0.0
        raw["iac_s_plus_threshold"] = 1.0 if self.iac_s_plus == "threshold" else 0.0
        if raw.get("zprime_queries") == 0.0:  # no query has a Z' (science.md §7): absent
            for name in ZPRIME_STEP_METRICS:
                raw.pop(name, None)
        if "log_zprime_mean" in raw:
            raw["zprime_beta"] = self.zprime_beta
            raw["zprime_beta_is_reference"] = 1.0 if self.zprime_beta_is_reference else 0.0
            exact = inputs.ref_logprobs is not None or inputs.old_logprobs is not None
            raw["zprime_exact_support"] = 1.0 if exact else 0.0
            if exact:
                raw["zprime_pi_is_reference"] = 1.0 if inputs.ref_logprobs is not None else 0.0
        if "reward_accuracy" in raw:
            self.collapse.update(
                step,
                raw["reward_accuracy"],
                agree=raw.get("reward_accuracy_agree"),
                total=raw.get("reward_accuracy_total"),
            )
            raw["collapse_threshold"] = self.collapse.threshold
            if self.collapse.collapse_step is not None:
                raw["model_collapse_step"] = float(self.collapse.collapse_step)
        metrics: dict[str, float | None] = {}
        non_finite: list[str] = []
        for k in sorted(raw):
            val = finite_or_none(raw[k])
            metrics[k] = val
            if val is None:
                non_finite.append(k)

        b = layout.num_groups
        ids = list(inputs.query_ids) if inputs.query_ids is not None else None
        if ids is not None and len(ids) != b:
            raise ShapeError(f"query_ids has {len(ids)} entries; the step has {b} groups")
        # The per-query part of the record is built off the training thread when the sender
        # can take it unbuilt (issue 21); otherwise here, exactly as it would be there.
        deferred = DeferredRecord(
            step=step,
            time=datetime.now(UTC).isoformat(),
            metrics=metrics,
            non_finite=non_finite,
            host={k: v for k, v in host.items() if k.startswith("q_")},
            query_ids=ids,
            num_groups=b,
        )
        self._last_step = step
        self._next_step = step + 1
        sender = self.sender
        if sender is not None and not self._defer_records:
            deferred.build()
        if sender is not None:
            try:
                if isinstance(sender, DeferredStepSender) and not deferred.built:
                    sender.submit_deferred(deferred)
                else:
                    sender.submit(deferred.build())
            except Exception:
                self.sender_errors += 1
                logger.exception("sharpwatch sender failed at step %d (ignored)", step)
        return StepResult(advantages=used, record=deferred, metrics=metrics, step=step, alpha=alpha)
