"""Scaling sweeps and laws.

sweep.py (sweep file -> named, validated runs), runner.py (train them, resumably, one or N at a time),
runs.py (run folder -> summary row; sweep_summary.csv), fit.py (pure law fitting with bootstrap
intervals), analyze.py (summary rows -> fits.json / fits.yaml), plots.py (log-log PNG + SVG).
"""
