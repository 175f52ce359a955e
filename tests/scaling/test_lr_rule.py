"""The lr rule recovers a known optimum and exponent from synthetic probes."""

import math

import pytest

from tinygpt_mlx.scaling.lr_rule import best_lr, fit_lr_rule

LRS = (1e-3, 2e-3, 4e-3, 8e-3)


def _loss(lr: float, optimum: float) -> float:
    return 3.0 + 0.2 * (math.log2(lr) - math.log2(optimum)) ** 2


def test_best_lr_recovers_a_parabolas_minimum():
    assert best_lr([(lr, _loss(lr, 2.7e-3)) for lr in LRS]) == pytest.approx(2.7e-3, rel=1e-9)


def test_best_lr_at_the_edge_is_the_edge():
    assert best_lr([(lr, _loss(lr, 2e-2)) for lr in LRS]) == 8e-3


def test_fit_lr_rule_recovers_the_exponent():
    rows = [{"status": "done", "model.d_model": d, "optim.lr": lr, "final_val_loss": _loss(lr, opt)}
            for d, opt in ((64, 5.0e-3), (192, 5.0e-3 / 3 ** 0.7)) for lr in LRS]
    rows.append({"status": "failed", "model.d_model": 64, "optim.lr": 8e-3, "final_val_loss": ""})
    rule, _ = fit_lr_rule(rows)
    assert rule.d_ref == 192 and rule.exponent == pytest.approx(0.7, abs=1e-9)
    assert rule.lr(64) == pytest.approx(5.0e-3, rel=1e-9)


def test_fit_lr_rule_needs_two_widths():
    with pytest.raises(ValueError, match="exactly two widths"):
        fit_lr_rule([{"status": "done", "model.d_model": 64, "optim.lr": 1e-3, "final_val_loss": 3.0}])
