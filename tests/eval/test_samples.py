"""Seeded sample records."""

from __future__ import annotations

from tinygpt_mlx.config import EvalConfig
from tinygpt_mlx.eval.samples import sample_records


def test_sample_records_reproducible(tiny_run, kit) -> None:
    from tinygpt_mlx.train.checkpoint import load_for_inference

    _, run = tiny_run
    model, tok, cfg, state = load_for_inference(run / "last")
    e = EvalConfig(sample_n=3, sample_max_new_tokens=10, sample_prompt="The", sample_temperature=1.0,
                   sample_top_k=5)
    a = sample_records(model, tok, e, seed=11, checkpoint="x", step=6)
    b = sample_records(model, tok, e, seed=11, checkpoint="x", step=6)
    assert a == b and [r["seed"] for r in a] == [11, 12, 13]
    assert len({r["completion"] for r in a}) > 1  # different seeds, different text
    assert all(r["top_k"] == 5 and 0 < r["new_tokens"] <= 10 for r in a)
