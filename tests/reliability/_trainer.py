"""A real trainer process for the kill tests: ``trainer_hooks.watch`` around a loop of steps.

``python -m tests.reliability._trainer URL NAME INCARNATION STEPS PACE [own-handler]``

After each ``run.step()`` returns it prints ``step S T E`` (the step number, ``time.time()`` and
the entropy it produced, which tells the incarnations apart), so the test knows exactly what was
produced and when. The spool directory comes from ``$SHARPWATCH_SPOOL_DIR``. With
``own-handler`` the trainer installs its own SIGTERM handler first (it prints ``own handler``
and exits with status 3, as a trainer that checkpoints on SIGTERM would); on SIGINT
(``KeyboardInterrupt``) it prints ``interrupted`` and exits with 130.
``$SHARPWATCH_TEST_COMPACT_BYTES`` sets the size at which a drained log is emptied (1: every
time, so kills land in compactions).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

import torch

from trainer_hooks import StepInputs, grpo_advantages, watch

B, G, T = 4, 4, 8


def entropy_of(incarnation: int, i: int) -> float:
    """The entropy incarnation's i-th step produces (exact in float32): tells them apart."""
    return 1.0 + incarnation + (i % 1000) / 1024


def inputs(incarnation: int, i: int) -> StepInputs:
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * B)
    return StepInputs(
        rewards=rewards,
        advantages=grpo_advantages(rewards),
        token_entropy=torch.full((B, G, T), entropy_of(incarnation, i)),
        mask=torch.ones(B, G, T),
    )


def main() -> int:
    url, name, incarnation, steps, pace = sys.argv[1:6]
    if os.environ.get("SHARPWATCH_TEST_COMPACT_BYTES"):
        from trainer_hooks import _spool

        _spool.COMPACT_BYTES = int(os.environ["SHARPWATCH_TEST_COMPACT_BYTES"])
    own_handler = sys.argv[6:] == ["own-handler"]
    if own_handler:

        def on_term(signum: int, frame: FrameType | None) -> None:
            print("own handler", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, on_term)
    try:
        with watch(url, name=name, group_size=G, kl_beta=0.04, commands=False) as run:
            print("ready", flush=True)
            for i in range(int(steps)):
                result = run.step(inputs(int(incarnation), i))
                entropy = result.metrics["entropy"]
                print(f"step {result.step} {time.time():.6f} {entropy!r}", flush=True)
                time.sleep(float(pace))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
