"""The learning-rate rule of configs/scaling_joint.yaml from the probe of configs/lr_probe.yaml.

    python scripts/lr_rule.py docs/scaling/lr_probe.csv

For each d_model, a parabola in log2(lr) through the best probed lr and its two neighbours gives the optimum;
the two widths then give the exponent k of lr(d) = lr(d_ref) * (d_ref / d)^k, printed with the rule's lr at
every width of the grid.
"""

from __future__ import annotations

import argparse
import sys

from tinygpt_mlx.scaling.lr_rule import fit_lr_rule
from tinygpt_mlx.scaling.runs import read_summary

GRID_WIDTHS = (192, 160, 128, 96, 64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", help="sweep_summary.csv of the lr probe")
    parser.add_argument("--loss", default="final_val_loss", help="summary column to minimise")
    args = parser.parse_args()
    try:
        rule, by_width = fit_lr_rule(read_summary(args.summary), args.loss)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for d, points in sorted(by_width.items()):
        probed = ", ".join(f"{lr:.0e}: {loss:.4f}" for lr, loss in sorted(points))
        print(f"d_model {d}: {probed} -> best lr {rule.lr(d):.2e}")
    print(f"lr(d) = {rule.lr_ref:.2e} * ({rule.d_ref} / d)^{rule.exponent:.2f}")
    print("  ".join(f"d{d}: {rule.lr(d):.2e}" for d in GRID_WIDTHS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
