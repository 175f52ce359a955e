"""`python -m tinygpt_mlx` runs the `tinygpt` command."""

from tinygpt_mlx.cli import main

main()
