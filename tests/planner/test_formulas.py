"""Each planner formula against numbers worked by hand."""

from __future__ import annotations

import pytest

from motivation_profiles.planner import formulas as F


def test_rollout_counts_and_turns():
    assert F.rollouts_per_job(520, 3) == 3120  # the paper's condition size
    assert F.expected_turns(0.5, 4) == 1.0 and F.expected_turns(7, 4) == 4.0
    assert F.expected_turns(1.5, 4) == 1.5


def test_rollout_tokens():
    # 3120 rollouts x 2 turns x 0.25 x 4000 tokens
    assert F.rollout_generated(3120, 2, 0.25, 4000) == 3120 * 2000
    # turn 0 reads P=1000; turn 1 reads P + g, g = 0.25 * 4000 = 1000 -> 3000 per rollout
    assert F.rollout_prefill(10, 2, 1000, 0.25, 4000) == 10 * 3000
    assert F.rollout_prefill(10, 1, 1000, 0.25, 4000) == 10 * 1000
    # forced_choice: one more output generation per rollout after the drawn tag
    assert F.forced_output(12, 1.0, 8) == 96


def test_judge_and_capped_output():
    assert F.judge_requests(3120, 0.5, 3) == 4680
    assert F.capped_output(4680, 0.5, 600) == 4680 * 300


def test_document_requests():
    assert F.document_requests(100, 30, 5, True) == {
        "types": 1, "ideas": 100, "document": 15000, "revision": 15000}
    assert F.document_requests(3, 2, 2, False)["revision"] == 0


def test_training_and_rates():
    assert F.training_tokens(10e6, 3) == 30e6
    # 35,000 tok/s per GPU for 1B -> a 70B model on 4 GPUs: 2,000 tok/s
    assert F.job_rate(35000, 4, 70) == pytest.approx(2000)
    assert F.job_rate(35000, 0, 70) == F.job_rate(35000, 1, 70)  # a CPU job: one device
    assert F.hours(7.2e6, 2000) == pytest.approx(1.0)
    assert F.hours(0, 2000) == 0.0
    assert F.gpu_hours(1.5, 4) == 6.0


def test_api_usd_and_batches():
    # 1M in at $3, 1M out at $15
    assert F.api_usd(1e6, 1e6, 3.0, 15.0, batched=False) == pytest.approx(18.0)
    assert F.api_usd(1e6, 1e6, 3.0, 15.0, batched=True) == pytest.approx(9.0)
    assert F.api_usd(1e6, 0, 3.0, 15.0, batched=True, batch_factor=0.4) == pytest.approx(1.2)
    assert not F.uses_batches(19, 20) and F.uses_batches(20, 20)


def test_disk():
    assert F.checkpoint_bytes(70, "bfloat16") == 140e9
    assert F.checkpoint_bytes(0.135, "float32") == pytest.approx(0.54e9)
    layers, d = F.model_shape(70)
    assert layers == 80 and 8000 < d < 8600  # Llama-3.1-70B: 80 layers, 8192
    layers, d = F.model_shape(405)
    assert 120 <= layers <= 150 and 14000 < d < 17000  # 126 layers, 16384
    assert F.lora_adapter_bytes(70, 64) == pytest.approx(64 * 21.5 * d70() * 80 * 4)
    assert F.activation_cache_bytes(800, 70) == pytest.approx(800 * 80 * d70() * 2 * 4)
    assert F.text_bytes(1000, 4.0) == 12000


def d70() -> int:
    return F.model_shape(70)[1]
