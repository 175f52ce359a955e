"""Scaling sweeps and laws.

sweep.py (sweep file -> named, validated runs), runner.py (train them, resumably, one or N at a time),
runs.py (run folder -> summary row; sweep_summary.csv), fit.py (pure law fitting with bootstrap
intervals and bound checks), selection.py (which runs each law describes), diagnostics.py (residuals,
leave-one-out, predictions of held-out runs), analyze.py (summary rows -> fits.json / fits.yaml),
tables.py (fits.md, Chinchilla beside the joint fit), plots.py (log-log fits and residuals, PNG + SVG).
"""
