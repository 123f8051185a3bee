"""A real (CI-sized) TRL GRPOTrainer run with ``report_to="tensorboard"`` — a tiny Qwen2 built
from a config, a tokenizer built in code, CPU, no downloads — then ``sharpwatch import`` of its
event files and of its ``trainer_state.json``, against a real service."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("trl")

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer

from service.importer import detect_format, read_logs, run_import
from tests._servers import ServerThread

# TRL 1.16 itself calls an API transformers 5 deprecated (nothing a caller can change).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

G = 4
STEPS = 4
WORDS = ["<pad>", "<eos>", "<unk>", *[str(d) for d in range(10)], "+", "="]


def _tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def _model(tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(
        Qwen2Config(
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
    )


def odd_digit(completions: list[str], **kwargs: Any) -> list[float]:
    """1 for a completion that starts with an odd digit: a coin flip for the untrained model."""
    out = []
    for text in completions:
        first = text.strip().split(" ")[0] if text.strip() else ""
        out.append(1.0 if first.isdigit() and int(first) % 2 == 1 else 0.0)
    return out


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Train once: returns the output directory and TRL's own log history."""
    out = tmp_path_factory.mktemp("trl") / "grpo-tiny"
    tokenizer = _tokenizer()
    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=8,
        num_generations=G,
        max_completion_length=4,
        max_steps=STEPS,
        learning_rate=5e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=["tensorboard"],
        use_cpu=True,
        bf16=False,
        seed=0,
        beta=0.04,
        disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=None,
        activation_checkpointing=False,
    )
    # Saved and passed by path: with beta > 0 TRL loads the reference model from the same path.
    model_dir = out.parent / "tiny-qwen2"
    _model(tokenizer).save_pretrained(model_dir)
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=[odd_digit],
        args=args,
        train_dataset=Dataset.from_dict(
            {"prompt": [f"{a} + {b} =" for a in range(3) for b in range(3)][:8]}
        ),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_state()  # <output_dir>/trainer_state.json
    return out, [e for e in trainer.state.log_history if "entropy" in e]


def test_trl_tensorboard_events_import(
    sqlite_server: ServerThread, trl_run: tuple[Path, list[dict[str, Any]]]
) -> None:
    out, history = trl_run
    assert [e["step"] for e in history] == list(range(1, STEPS + 1))
    assert detect_format(out) == "tensorboard"  # the event files win over trainer_state.json
    (logged,) = read_logs([out])
    assert logged.hints == {"group_size": G, "kl_beta": 0.04}  # from the logged TrainingArguments
    (report,) = run_import([out], url=sqlite_server.url, project="trl")
    assert report.group_size == G
    assert report.steps == STEPS
    for key, ours in {
        "train/entropy": "entropy",
        "train/reward": "success_rate",
        "train/frac_reward_zero_std": "frac_reward_zero_std",
        "train/completions/mean_length": "response_length",
        "train/kl": "kl",
        "train/loss": "loss",
        "train/grad_norm": "grad_norm",
    }.items():
        assert report.mapped.get(key) == ours, key
    run = httpx.get(f"{sqlite_server.url}/api/v1/runs/{report.run_id}").json()
    assert (run["kl_beta"], run["source"]) == (0.04, "imported")
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{report.run_id}/steps").json()["items"]
    for stored, logged_entry in zip(steps, history, strict=True):
        assert stored["step"] == logged_entry["step"]
        assert stored["time"] is not None
        for ours, theirs in (("entropy", "entropy"), ("success_rate", "reward"), ("kl", "kl")):
            # TensorBoard stores float32: equal to TRL's logged float64 to float32 precision
            assert math.isclose(
                stored["metrics"][ours], logged_entry[theirs], rel_tol=1e-6, abs_tol=1e-7
            )
    again = run_import([out], url=sqlite_server.url, project="trl")[0]
    assert (again.accepted, again.duplicates) == (0, STEPS)


def test_trl_trainer_state_import(
    sqlite_server: ServerThread, trl_run: tuple[Path, list[dict[str, Any]]]
) -> None:
    out, history = trl_run
    (report,) = run_import(
        [out / "trainer_state.json"], url=sqlite_server.url, project="trl-state", group_size=G
    )
    assert report.format == "trl-state"
    assert report.steps == STEPS
    assert report.mapped["entropy"] == "entropy"
    assert report.mapped["frac_reward_zero_std"] == "frac_reward_zero_std"
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{report.run_id}/steps").json()["items"]
    assert [s["metrics"]["entropy"] for s in steps] == [e["entropy"] for e in history]
    assert [s["time"] for s in steps] == [None] * STEPS  # the file holds no wall times
