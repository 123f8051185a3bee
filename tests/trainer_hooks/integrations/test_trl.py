"""TRL's GRPOTrainer for real (tiny Qwen2 built from a config, a tokenizer built in code, CPU, a few
steps, no downloads) with the sharpwatch callback and the IAC trainer, against a real service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    TrainerCallback,
)
from trl import GRPOConfig, GRPOTrainer

from tests._servers import ServerThread
from trainer_hooks import iac_calibrate, watch
from trainer_hooks.integrations.trl import IACGRPOTrainer, SharpwatchCallback

# TRL 1.16 itself calls an API transformers 5 deprecated (nothing a caller can change).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

G = 4
WORDS = ["<pad>", "<eos>", "<unk>", *[str(d) for d in range(10)], "+", "="]


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def _model(tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


def _dataset() -> Dataset:
    prompts = [f"{a} + {b} =" for a in range(3) for b in range(3)]
    return Dataset.from_dict({"prompt": prompts[:8]})


def digit_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """1 for a completion that starts with an odd digit: a coin flip for the untrained model."""
    out = []
    for text in completions:
        first = text.strip().split(" ")[0] if text.strip() else ""
        out.append(1.0 if first.isdigit() and int(first) % 2 == 1 else 0.0)
    return out


def _args(tmp_path: Path, max_steps: int) -> GRPOConfig:
    return GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_generations=G,
        max_completion_length=4,
        max_steps=max_steps,
        learning_rate=5e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
        temperature=1.0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        # TRL's default sets the deprecated gradient_checkpointing alias; name the new field.
        gradient_checkpointing=None,
        activation_checkpointing=False,
    )


def _wait(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def _steps(url: str, run_id: int) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/api/v1/runs/{run_id}/steps").json()["items"]


def test_callback_streams_trl_metrics_and_group_successes(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    tokenizer = _tokenizer()
    with watch(
        sqlite_server.url,
        name="trl-callback",
        group_size=G,
        kl_beta=0.0,
        reference_beta=0.04,
        iac=False,
    ) as run:
        callback = SharpwatchCallback(run)
        trainer = GRPOTrainer(
            model=_model(tokenizer),
            reward_funcs=[callback.reward_func(digit_reward)],
            args=_args(tmp_path, max_steps=3),
            train_dataset=_dataset(),
            processing_class=tokenizer,
            callbacks=[callback],
        )
        trainer.train()
        assert run.run is not None
        run_id = run.run.id
    steps = _steps(sqlite_server.url, run_id)
    assert [s["step"] for s in steps] == [0, 1, 2]
    detail = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps/1").json()
    metrics = detail["metrics"]
    # TRL's own logged metrics, and the monitor's group statistics from the wrapped rewards.
    for name in ("entropy", "frac_reward_zero_std", "loss", "grad_norm", "success_rate", "alpha"):
        assert metrics[name] is not None, name
    assert metrics["iac"] == 0.0
    # frac_reward_zero_std (TRL) is the monitor's degenerate fraction (all-fail + all-pass).
    degenerate = metrics["degenerate_all_fail"] + metrics["degenerate_all_pass"]
    assert metrics["frac_reward_zero_std"] == pytest.approx(degenerate)
    queries = detail["queries"]
    assert len(queries) == 8 // G
    assert all(q["group_size"] == G and 0 <= q["successes"] <= G for q in queries)


def test_iac_trainer_calibrates_obeys_alpha_and_early_stop(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    tokenizer = _tokenizer()
    seen: list[tuple[torch.Tensor, float]] = []
    calls: list[list[float]] = []

    def recorded_reward(completions: list[str], **kwargs: Any) -> list[float]:
        calls.append(digit_reward(completions))
        return calls[-1]

    class Capture(IACGRPOTrainer):
        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
            seen.append((inputs["advantages"].detach().clone(), self.sharpwatch.alpha))
            return super()._compute_loss(model, inputs)

    class Operator(TrainerCallback):  # type: ignore[misc]
        """Sends adjust_alpha after step 1 and early_stop after step 3, like a person would."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            assert run.run is not None
            url = f"{sqlite_server.url}/api/v1/runs/{run.run.id}/commands"
            if state.global_step == 2:
                httpx.post(url, json={"kind": "adjust_alpha", "alpha": 2.0, "reason": "test"})
                _wait(lambda: run.monitor.pending_alpha == 2.0)
            if state.global_step == 4:
                httpx.post(url, json={"kind": "early_stop", "reason": "test", "best_step": 1})
                _wait(lambda: run.should_stop)

    with watch(
        sqlite_server.url,
        name="trl-iac",
        group_size=G,
        kl_beta=0.0,
        reference_beta=0.04,
        poll_wait=2,
    ) as run:
        trainer = Capture(
            model=_model(tokenizer),
            reward_funcs=[recorded_reward],
            args=_args(tmp_path, max_steps=10),
            train_dataset=_dataset(),
            processing_class=tokenizer,
            callbacks=[Operator()],
            sharpwatch=run,
            # the first character of the answer (the reward reads its parity): keys repeat, so
            # Z'(q) is defined (all-distinct keys without log-probs give none, science.md §7)
            answer_key=lambda c: c.strip()[:1],
        )
        trainer.train()
        assert run.run is not None
        run_id = run.run.id
        # Stopped by the command, not by max_steps.
        assert trainer.state.global_step == 4
        last = trainer.sharpwatch_callback.last_result
        assert last is not None
    # The trainer trained on exactly the monitor's calibrated advantages of the last round: TRL's
    # advantages with (G - S+)^2 on the positive ones (TRL shuffles the rows after scoring, so
    # compare them sorted).
    assert last.advantages is not None
    advantages, alpha = seen[-1]
    assert alpha == 2.0
    advantages = advantages.sort().values
    assert torch.allclose(advantages, last.advantages.reshape(-1).sort().values)
    rewards = torch.tensor(calls[-1]).view(-1, G)
    raw = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    expected = iac_calibrate(raw, rewards, alpha=2.0).reshape(-1)
    assert torch.allclose(advantages, expected.sort().values, atol=1e-5)
    assert not torch.allclose(raw.reshape(-1).sort().values, expected.sort().values)
    steps = _steps(sqlite_server.url, run_id)
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    assert [s["metrics"]["alpha"] for s in steps] == [1.0, 1.0, 2.0, 2.0]
    history = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/commands/history").json()[
        "items"
    ]
    by_kind = {c["kind"]: c for c in history}
    assert by_kind["adjust_alpha"]["status"] == "applied"
    assert by_kind["adjust_alpha"]["applied_step"] == 2
    assert by_kind["early_stop"]["status"] == "applied"
    assert httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}").json()["status"] == "stopped"
    # TRL's own logged metrics travelled with the record computed at generation time, and the
    # monitor's Z'(q) saw both the raw and the calibrated advantages.
    metrics = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps/3").json()["metrics"]
    for name in ("entropy", "frac_reward_zero_std", "loss", "success_rate"):
        assert metrics[name] is not None, name
    # the completions' tokens travel (repetition rate, distinct sequences for Z'(q))
    assert metrics["repetition_rate"] is not None
    # Z'(q) where a group's answer keys repeat (without repeats or log-probs it is absent,
    # never a constant: science.md §7)
    assert any(s["metrics"].get("log_zprime_raw_mean") is not None for s in steps)
    assert metrics["iac"] == 1.0
