"""`python -m tinygpt_mlx.cli` runs the `tinygpt` command."""

from tinygpt_mlx.cli import main

main()
