"""``Monitor``: the one object a training loop talks to, once per step.

A step runs the metric sections of ``_sections.py`` (science.md §1 group signal, §2 Z'(q), §3
IAC, §4 unsupervised-RLVR metrics, probe) on the tensors' device and copies their results to the
host once (:func:`trainer_hooks._sync.to_host`); ``_step_metrics.py`` completes the step's
metrics on the host, and the wire record goes to every sender (:meth:`Monitor.add_sender`)
without blocking and without raising into the loop. A sender with ``submit_deferred`` (the
client) gets it unbuilt and builds its per-query part on its own thread (``_record.py``), so the
training thread does no per-query host work.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from trainer_hooks._dlc import DEFAULT_MU, _check_mu
from trainer_hooks._entropy import DEFAULT_CHUNK_SIZE, check_temperature
from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._group import p_star
from trainer_hooks._iac import _check_alpha, check_s_plus
from trainer_hooks._layout import make_layout
from trainer_hooks._record import DeferredRecord, DeferredStepSender
from trainer_hooks._sections import Measurement, StepContext, measure
from trainer_hooks._step_metrics import (
    collapse_metrics,
    entropy_defined,
    wire_metrics,
    zprime_metrics,
)
from trainer_hooks._types import AlphaChange, StepInputs, StepResult, StepSender, StopRequest
from trainer_hooks._unsupervised import ModelCollapseTracker, label_accuracy_from_labels

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
    ``repetition_n`` (n-gram size); ``sender`` (a first :class:`StepSender`; more with
    :meth:`add_sender`); ``on_stop`` (called with the :class:`StopRequest` when
    :meth:`request_stop` is called).
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
        self._senders: tuple[StepSender, ...] = ()
        if on_stop is not None and not callable(on_stop):
            raise ConfigurationError("on_stop must be callable")
        self.on_stop = on_stop
        self.zprime_beta = self.kl_beta if self.kl_beta > 0 else float(reference_beta or 0.0)
        self.zprime_beta_is_reference = self.kl_beta == 0.0
        self._next_step = 0
        self._last_step: int | None = None
        self._pending_alpha: tuple[float, str, Callable[[AlphaChange], None] | None] | None = None
        self._lock = threading.Lock()
        if sender is not None:
            self.add_sender(sender)
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

    # -- senders ----------------------------------------------------------------------------
    @property
    def senders(self) -> tuple[StepSender, ...]:
        """The senders every step's record goes to, in the order they were added."""
        return self._senders

    def add_sender(self, sender: StepSender) -> None:
        """Send every later step's record to ``sender`` too (thread-safe). A sender with
        ``submit_deferred`` (:class:`DeferredStepSender`) gets the record unbuilt."""
        if not isinstance(sender, StepSender):
            raise ConfigurationError("sender must have a submit(record) method (StepSender)")
        with self._lock:
            if any(s is sender for s in self._senders):
                raise ConfigurationError("this sender is already attached to the monitor")
            self._senders = (*self._senders, sender)

    def remove_sender(self, sender: StepSender) -> None:
        """Stop sending records to ``sender`` (thread-safe); unknown senders are an error."""
        with self._lock:
            kept = tuple(s for s in self._senders if s is not sender)
            if len(kept) == len(self._senders):
                raise ConfigurationError("this sender is not attached to the monitor")
            self._senders = kept

    # -- the step ---------------------------------------------------------------------------
    def step(self, inputs: StepInputs) -> StepResult:
        """Compute the step's metrics, calibrate advantages, send the record (one host sync)."""
        step = self._next_step if inputs.step is None else int(inputs.step)
        if step < 0:
            raise ConfigurationError(f"step must be >= 0, got {step}")
        alpha = self._apply_pending_alpha(step)
        ctx = StepContext(
            inputs=inputs,
            layout=make_layout(inputs.rewards, inputs.group_ids, num_groups=inputs.num_groups),
            alpha=alpha,
            success_threshold=self.success_threshold,
            temperature=self.temperature,
            entropy_chunk_size=self.entropy_chunk_size,
            iac=self.iac,
            iac_s_plus=self.iac_s_plus,
            zprime_beta=self.zprime_beta,
            repetition_n=self.repetition_n,
        )
        measured = measure(ctx)  # the one device-to-host copy of the step
        metrics, non_finite = wire_metrics(self._host_metrics(step, alpha, inputs, measured))
        b = ctx.layout.num_groups
        ids = list(inputs.query_ids) if inputs.query_ids is not None else None
        if ids is not None and len(ids) != b:
            raise ShapeError(f"query_ids has {len(ids)} entries; the step has {b} groups")
        # The per-query part of the record is built off the training thread when the sender
        # can take it unbuilt (issue 21); otherwise here, exactly as it would be there.
        record = DeferredRecord(
            step=step,
            time=datetime.now(UTC).isoformat(),
            metrics=metrics,
            non_finite=non_finite,
            host=measured.columns,
            query_ids=ids,
            num_groups=b,
        )
        self._last_step = step
        self._next_step = step + 1
        self._deliver(record)
        return StepResult(
            advantages=ctx.used, record=record, metrics=metrics, step=step, alpha=alpha
        )

    def _apply_pending_alpha(self, step: int) -> float:
        """The α of this step: a change requested since the last step takes effect now."""
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
        return self._alpha

    def _host_metrics(
        self, step: int, alpha: float, inputs: StepInputs, measured: Measurement
    ) -> dict[str, float]:
        """The step's metrics from its host values (names from the metric table)."""
        raw = dict(measured.scalars)
        if inputs.pseudo_labels is not None and inputs.true_labels is not None:
            raw["label_accuracy"] = label_accuracy_from_labels(
                inputs.pseudo_labels, inputs.true_labels
            )
        self._warned_empty_rows = entropy_defined(raw, warned=self._warned_empty_rows)
        raw.update(measured.passthrough)
        raw["alpha"] = alpha
        raw["mu"] = self.mu
        raw["p_star"] = p_star(self.group_size)
        raw["iac"] = 1.0 if self.iac else 0.0
        raw["iac_s_plus_threshold"] = 1.0 if self.iac_s_plus == "threshold" else 0.0
        zprime_metrics(
            raw,
            inputs,
            beta=self.zprime_beta,
            beta_is_reference=self.zprime_beta_is_reference,
        )
        collapse_metrics(raw, self.collapse, step)
        return raw

    def _deliver(self, record: DeferredRecord) -> None:
        """Hand the record to every sender; a sender's error is logged and counted, never
        raised into the loop."""
        defer = self._defer_records
        for sender in self._senders:
            try:
                if defer and isinstance(sender, DeferredStepSender):
                    sender.submit_deferred(record)
                else:
                    sender.submit(record.build())
            except Exception:
                self.sender_errors += 1
                logger.exception("sharpwatch sender failed at step %d (ignored)", record.step)
