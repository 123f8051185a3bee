"""Integrations with training frameworks. Import the one you use; each imports its framework only
when you import it (``import trainer_hooks`` never imports TRL, transformers or veRL):

- :mod:`trainer_hooks.integrations.trl` — ``SharpwatchCallback`` for TRL's ``GRPOTrainer`` (and
  any ``transformers.Trainer``), and ``IACGRPOTrainer``, a GRPOTrainer whose advantages are
  IAC-calibrated with the α the service controls.
- :mod:`trainer_hooks.integrations.verl` — an IAC advantage estimator for veRL's registry
  (``algorithm.adv_estimator=iac_grpo``) and a metrics tap.

See docs/integrations.md.
"""

from __future__ import annotations

from trainer_hooks.integrations._deferred import DeferredSender

__all__ = ["DeferredSender"]
