"""An alias of `tinygpt scaling fit` under the original TinyGPT repository's command line, so its scripts run as they are.

    python -m tinygpt_mlx.analyze_scaling --checkpoint_dirs runs/a runs/b --output_dir results/scaling
"""

from __future__ import annotations

import argparse
import sys

from tinygpt_mlx.config import ConfigError
from tinygpt_mlx.errors import UserError


def main(argv: list[str] | None = None) -> int:
    """Parse the seed's flags and run the same fit as `tinygpt scaling fit`; returns the exit code."""
    from tinygpt_mlx.scaling.analyze import LAW_CHOICES, LOSS_COLUMNS, X_COLUMNS, fit_results
    from tinygpt_mlx.scaling.runs import collect

    parser = argparse.ArgumentParser(prog="python -m tinygpt_mlx.analyze_scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dirs", "--results", nargs="+", required=True,
                        help="run folders, folders of runs, sweep folders or sweep_summary.csv files")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--law", default="all", choices=LAW_CHOICES)
    parser.add_argument("--x", default="non_embedding_params", choices=X_COLUMNS)
    parser.add_argument("--loss", default="final_val_loss", choices=LOSS_COLUMNS)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        fit_results(collect(args.checkpoint_dirs), args.output_dir, law=args.law, x=args.x, loss=args.loss,
                    n_bootstrap=args.bootstrap, seed=args.seed)
    except (UserError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output_dir}/fits.json, fits.yaml and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
