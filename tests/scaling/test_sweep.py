"""Sweep files: crossed and zipped grids, run names, overrides, token budgets, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tinygpt_mlx.config import ConfigError
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.sweep import expand, expand_grid, load_sweep, run_name

BASE = {"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "data": {"batch_size": 4, "block_size": 32}, "schedule": {"max_steps": 10, "warmup_steps": 2}}


def _sweep(tmp_path: Path, **fields) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base_config": "base.yaml", **fields}, sort_keys=False))
    return path


def test_cross_grid_gives_every_combination_with_readable_names(tmp_path):
    sweep = load_sweep(_sweep(tmp_path, grid={"model.d_model": [32, 64], "model.n_layers": [1, 2]}))
    runs = expand(sweep, tmp_path / "out")
    assert [r.name for r in runs] == ["d_model-32_n_layers-1", "d_model-32_n_layers-2",
                                      "d_model-64_n_layers-1", "d_model-64_n_layers-2"]
    assert [(r.config.model.d_model, r.config.model.n_layers) for r in runs] == [(32, 1), (32, 2), (64, 1), (64, 2)]
    assert runs[3].values == {"model.d_model": 64, "model.n_layers": 2}
    assert runs[3].config.checkpoint.save_dir == str(tmp_path / "out" / "runs" / "d_model-64_n_layers-2")


def test_zip_grid_pairs_the_ith_values_and_applies_overrides(tmp_path):
    path = _sweep(tmp_path, mode="zip", grid={"model.d_model": [32, 64, 96], "model.n_heads": [2, 4, 6]},
                  overrides={"optim.lr": 0.002, "schedule": {"max_steps": 7}})
    runs = expand(load_sweep(path), tmp_path / "out")
    assert [r.name for r in runs] == ["d_model-32_n_heads-2", "d_model-64_n_heads-4", "d_model-96_n_heads-6"]
    assert [r.config.model.n_heads for r in runs] == [2, 4, 6]
    assert {r.config.optim.lr for r in runs} == {0.002}
    assert {r.config.schedule.max_steps for r in runs} == {7}
    assert {r.config.model.n_layers for r in runs} == {1}  # from the base config


def test_token_budget_sets_max_steps_per_run(tmp_path):
    path = _sweep(tmp_path, grid={"data.block_size": [16, 32]}, token_budget=1000)
    runs = expand(load_sweep(path), tmp_path / "out")
    # 4 x 16 = 64 tokens a step -> ceil(1000 / 64) = 16 steps; 4 x 32 = 128 -> 8 steps.
    assert [r.config.schedule.max_steps for r in runs] == [16, 8]


def test_names_format_floats_strings_and_colliding_keys():
    assert run_name({"optim.lr": 1e-3, "data.tokenizer": "gpt2"}) == "lr-0.001_tokenizer-gpt2"
    assert run_name({"a.x": 1, "b.x": 2}) == "a-x-1_b-x-2"
    assert run_name({}) == "base"
    assert expand_grid({}, "cross") == [{}]


def test_bad_grid_keys_are_refused_once_by_config_validation(tmp_path):
    path = _sweep(tmp_path, grid={"model.d_modle": [32, 64], "optim.optimizer": ["adamw", "lion"]})
    with pytest.raises(ConfigError) as err:
        expand(load_sweep(path), tmp_path / "out")
    problems = err.value.problems
    assert problems.count("unknown key 'model.d_modle' (did you mean 'd_model'?)") == 1
    assert "run d_modle-32_optimizer-lion: optim.optimizer = 'lion' is not one of adamw, adam, sgd" in problems


def test_a_group_zips_its_keys_and_is_crossed_with_the_rest(tmp_path):
    grid = {"size": {"model.d_model": [32, 64], "model.n_heads": [2, 4], "optim.lr": [0.004, 0.002]},
            "schedule.max_steps": [10, 20]}
    sweep = load_sweep(_sweep(tmp_path, grid=grid))
    assert sweep.keys == ["model.d_model", "model.n_heads", "optim.lr", "schedule.max_steps"]
    runs = expand(sweep, tmp_path / "out")
    assert [r.name for r in runs] == ["d_model-32_max_steps-10", "d_model-32_max_steps-20",
                                      "d_model-64_max_steps-10", "d_model-64_max_steps-20"]
    assert [(r.config.model.d_model, r.config.model.n_heads, r.config.optim.lr, r.config.schedule.max_steps)
            for r in runs] == [(32, 2, 0.004, 10), (32, 2, 0.004, 20), (64, 4, 0.002, 10), (64, 4, 0.002, 20)]
    assert runs[3].values == {"model.d_model": 64, "model.n_heads": 4, "optim.lr": 0.002, "schedule.max_steps": 20}
    # In zip mode a group is one list among the others.
    zipped = expand(load_sweep(_sweep(tmp_path, mode="zip", grid=grid)), tmp_path / "out")
    assert [r.name for r in zipped] == ["d_model-32_max_steps-10", "d_model-64_max_steps-20"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grid": {"size": {"model.d_model": [32, 64], "model.n_heads": [2]}}},
         "grid.size zips its lists, so they need equal lengths, got model.d_model: 2, model.n_heads: 1"),
        ({"grid": {"size": {}}}, "grid.size is an empty group"),
        ({"grid": {"size": {"d_model": [32]}}}, "grid.size key 'd_model' must look like section.key"),
        ({"grid": {"size": {"model.d_model": 32}}}, "grid.size.model.d_model must be a non-empty list"),
        ({"grid": {"size": {"model.d_model": [32]}, "model.d_model": [64]}}, "grid sets model.d_model twice"),
        ({"mode": "zip", "grid": {"size": {"model.d_model": [32, 64]}, "optim.lr": [0.1]}},
         "mode zip needs lists of equal length, got size: 2, optim.lr: 1"),
        ({"mode": "zip", "grid": {"model.d_model": [32, 64], "model.n_heads": [2]}},
         "mode zip needs lists of equal length, got model.d_model: 2, model.n_heads: 1"),
        ({"mode": "diagonal"}, "mode = 'diagonal' is not one of cross, zip"),
        ({"grid": {"d_model": [32]}}, "grid key 'd_model' must look like section.key"),
        ({"grid": {"model.d_model": []}}, "grid.model.d_model must be a non-empty list of values"),
        ({"token_budget": -5}, "token_budget must be a positive number of tokens"),
        ({"grdi": {}}, "unknown sweep key 'grdi'"),
    ],
)
def test_malformed_sweep_files_are_refused(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_sweep(_sweep(tmp_path, **fields))


def test_duplicate_run_names_are_refused(tmp_path):
    path = _sweep(tmp_path, grid={"optim.lr": [0.001, 1e-3]})
    with pytest.raises(UserError, match=r"several runs the same name \(lr-0.001\)"):
        expand(load_sweep(path), tmp_path / "out")


def test_base_config_is_relative_to_the_sweep_file(tmp_path):
    sub = tmp_path / "configs"
    sub.mkdir()
    path = _sweep(sub, grid={"model.d_model": [32]})
    assert load_sweep(path).base_config == (sub / "base.yaml").resolve()


REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["scaling_width", "scaling_depth", "scaling_context", "scaling_data", "scaling_joint", "lr_probe",
           "ablation_optimizer", "ablation_tokenizer"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sweep_files_expand_to_valid_runs(name, tmp_path):
    runs = expand(load_sweep(REPO / "configs" / f"{name}.yaml"), tmp_path)
    assert len(runs) >= 3
    assert {r.config.data.dataset for r in runs} == {"tinystories"}


def test_width_sweep_varies_only_width_at_one_token_budget(tmp_path):
    runs = expand(load_sweep(REPO / "configs" / "scaling_width.yaml"), tmp_path)
    widths = [r.config.model.d_model for r in runs]
    assert len(widths) >= 5 and widths == sorted(widths) and widths[0] <= 32 and widths[-1] >= 256
    assert len({(r.config.model.n_layers, r.config.schedule.max_steps, r.config.data.batch_size,
                 r.config.data.block_size, r.config.data.tokenizer) for r in runs}) == 1


def test_joint_grid_scales_width_and_depth_together_with_a_learning_rate_per_size(tmp_path):
    runs = expand(load_sweep(REPO / "configs" / "scaling_joint.yaml"), tmp_path)
    assert len(runs) >= 20
    sizes = sorted({(r.config.model.d_model, r.config.model.n_layers, r.config.model.n_heads) for r in runs})
    budgets = sorted({r.config.schedule.max_steps for r in runs})
    assert len(sizes) >= 5 and len(budgets) >= 4 and len(runs) == len(sizes) * len(budgets)
    assert [d // layers for d, layers, _ in sizes] == [32] * len(sizes)  # width and depth grow together
    assert {d // heads for d, _, heads in sizes} == {32}
    for run in runs:
        cfg = run.config
        assert (cfg.data.tokenizer, cfg.data.bpe_vocab_size, cfg.data.batch_size, cfg.data.block_size) == \
            ("bpe", 2048, 16, 128)
        # The rule in the file's comments (configs/lr_probe.yaml): lr = 1.56e-3 * (192 / d_model)^0.66,
        # min_lr = lr / 10, warmup 5% of the budget but at least 30 steps.
        assert cfg.optim.lr == pytest.approx(1.56e-3 * (192 / cfg.model.d_model) ** 0.66, rel=5e-3)
        assert cfg.schedule.min_lr == pytest.approx(cfg.optim.lr / 10)
        assert cfg.schedule.warmup_steps == max(30, -(-cfg.schedule.max_steps // 20))
        assert cfg.schedule.lr_schedule == "cosine" and cfg.optim.optimizer == "adamw"
        assert cfg.eval.eval_subset == 131072
    # Largest runs first, so two workers (--jobs 2) finish close together.
    flops = [r.config.model.d_model ** 2 * r.config.model.n_layers * r.config.schedule.max_steps for r in runs]
    assert flops[0] == max(flops) and flops[-1] == min(flops)
