"""Integrations with training frameworks. Import the one you use; each imports its framework only
when you import it (``import trainer_hooks`` never imports TRL, transformers, veRL or slime):

- :mod:`trainer_hooks.integrations.trl` — ``SharpwatchCallback`` for TRL's ``GRPOTrainer`` (and
  any ``transformers.Trainer``), and ``IACGRPOTrainer``, a GRPOTrainer whose advantages are
  IAC-calibrated with the α the service controls.
- :mod:`trainer_hooks.integrations.verl` — an IAC advantage estimator for veRL's registry
  (``algorithm.adv_estimator=iac_grpo``), registered in every process by the ``verl.plugins``
  entry point (:mod:`trainer_hooks.integrations._verl_plugin`), and a metrics tap on veRL's
  ``Tracking`` (the v1 trainer's logger).
- :mod:`trainer_hooks.integrations.slime` — slime's custom advantage function (IAC) and custom
  rollout log function (streams each rollout).

Every integration also puts the step's numbers into the trainer's own loggers as
``sharpwatch/...`` (:mod:`trainer_hooks.integrations._logged`).

See docs/integrations.md.
"""

from __future__ import annotations

from trainer_hooks.integrations._deferred import DeferredSender

__all__ = ["DeferredSender"]
