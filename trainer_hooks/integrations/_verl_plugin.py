"""The ``verl.plugins`` entry point (pyproject.toml): ``import verl`` loads this module in every
process when ``VERL_USE_EXTERNAL_PLUGINS`` is ``auto`` (veRL's default) or names ``sharpwatch``.
Importing it registers the ``iac_grpo`` advantage estimator and hooks veRL's ``Tracking``
(see :func:`trainer_hooks.integrations.verl.install_plugin`)."""

from __future__ import annotations

from trainer_hooks.integrations.verl import install_plugin

install_plugin()
