"""Writes ``verl_file_logger.jsonl`` with veRL's own ``Tracking`` (backend ``file``), as veRL's
PPO trainer does each step. Run in a venv with veRL (``.ci/envs/verl.sh`` builds one):

    VERL_FILE_LOGGER_PATH=tests/service/importer/data/verl_file_logger.jsonl \\
        <verl venv>/bin/python tests/service/importer/data/make_verl_file_log.py

A GRPO-shaped run of 60 steps: entropy decays from 0.6 by 0.012 nats a step to a 0.02 floor
(below 0.10 from step 43 on, as steps start at 1), the 0/1 score climbs, a validation line at
step 0 and every 20 steps, and ``actor/grad_norm`` is NaN at step 50 (numpy, as veRL logs it).
"""

import numpy as np
from verl.utils.tracking import Tracking

tracker = Tracking("sharpwatch-tests", "grpo-collapse", default_backend=["file"])
tracker.log({"val-core/openai/gsm8k/reward/mean@1": 0.21}, step=0)
for step in range(1, 61):
    data = {
        "actor/entropy": np.float32(max(0.02, 0.6 - 0.012 * (step - 1))),
        "actor/kl_loss": 0.001 * step,
        "actor/pg_loss": -0.01,
        "actor/pg_clipfrac": 0.002,
        "actor/grad_norm": np.float64("nan") if step == 50 else 0.8,
        "critic/score/mean": min(1.0, 0.3 + 0.01 * step),
        "critic/score/max": 1.0,
        "critic/score/min": 0.0,
        "response_length/mean": 180.0 - step,
        "response_length/clip_ratio": 0.01,
        "timing_s/gen": 4.2,
        "training/global_step": step,
    }
    if step % 20 == 0:
        data["val-core/openai/gsm8k/reward/mean@1"] = 0.2 + step / 200
    tracker.log(data, step=step)
