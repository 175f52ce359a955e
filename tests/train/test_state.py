"""TrainState: state_dict / load_state_dict round trip, state.json of earlier versions, best tracking, RNG."""

from __future__ import annotations

import json
import random

import mlx.core as mx
import numpy as np

from tinygpt_mlx.train.state import TrainState, capture_rng, restore_rng

SAMPLER = {"seed": 1337, "batch_index": 21, "batch_size": 4, "block_size": 32, "num_tokens": 11117}
# state.json as trainers wrote it before TrainState existed (a float16 run at step 20, rng shortened).
WRITTEN_BEFORE = {
    "step": 20, "tokens_seen": 5120, "elapsed_s": 3.25, "total_steps": 40,
    "rng": {"python": [3, [1, 2, 624], None], "numpy": ["MT19937", [5, 6], 624, 0, 0.0], "mlx": [0, 1337]},
    "sampler": SAMPLER,
    "best": {"metric": "val_loss", "value": 3.5, "step": 15},
    "nonfinite": {"consecutive": 1, "total": 2},
    "loss_scale": {"scale": 16384.0, "good_steps": 7},
}


def test_round_trip_through_json() -> None:
    state = TrainState(total_steps=40, best_by="val_bpb", step=12, tokens_seen=3072, elapsed_s=1.5,
                       sampler=SAMPLER, best_value=2.25, best_step=10, nonfinite_in_a_row=1, nonfinite_total=3,
                       loss_scale={"scale": 1024.0, "good_steps": 5}, rng=capture_rng())
    saved = json.loads(json.dumps(state.state_dict()))
    loaded = TrainState(total_steps=40, best_by="val_bpb")
    loaded.load_state_dict(saved)
    assert loaded == state
    assert saved["best"] == {"metric": "val_bpb", "value": 2.25, "step": 10}
    assert saved["nonfinite"] == {"consecutive": 1, "total": 3}


def test_reads_and_rewrites_earlier_state_json() -> None:
    state = TrainState(total_steps=40)
    state.load_state_dict(WRITTEN_BEFORE)
    assert (state.step, state.tokens_seen, state.elapsed_s) == (20, 5120, 3.25)
    assert (state.best_value, state.best_step) == (3.5, 15)
    assert (state.nonfinite_in_a_row, state.nonfinite_total) == (1, 2)
    assert state.sampler == SAMPLER and state.loss_scale == {"scale": 16384.0, "good_steps": 7}
    assert state.state_dict() == WRITTEN_BEFORE  # the same layout: older code reads new checkpoints too


def test_oldest_state_json_without_clock_or_loss_scale() -> None:
    oldest = {k: v for k, v in WRITTEN_BEFORE.items() if k not in ("elapsed_s", "loss_scale")}
    state = TrainState(total_steps=40)
    state.load_state_dict(oldest)
    assert state.elapsed_s == 0.0 and state.loss_scale is None and state.step == 20


def test_new_best_by_starts_its_own_record() -> None:
    state = TrainState(total_steps=40, best_by="val_bpb")
    state.load_state_dict(WRITTEN_BEFORE)  # its best is a val_loss
    assert (state.best_value, state.best_step) == (None, None)
    assert state.record_eval(9.0)  # any value beats no record


def test_record_eval_keeps_the_lowest() -> None:
    state = TrainState(total_steps=10)
    results = []
    for step, value in [(2, 3.0), (4, 2.5), (6, 2.5), (8, 2.7), (10, 2.0)]:
        state.step = step
        results.append(state.record_eval(value))
    assert results == [True, True, False, False, True]
    assert (state.best_value, state.best_step) == (2.0, 10)


def test_rng_round_trip() -> None:
    random.seed(1), np.random.seed(2), mx.random.seed(3)
    mx.random.normal((2,))  # move mx's key off a seed-shaped value
    saved = json.loads(json.dumps(capture_rng()))
    expected = (random.random(), np.random.rand(), mx.random.normal((3,)).tolist())
    random.seed(9), np.random.seed(9), mx.random.seed(9)
    restore_rng(saved)
    assert (random.random(), np.random.rand(), mx.random.normal((3,)).tolist()) == expected
