"""Evaluation: checkpoints -> evaluation_results.csv, samples.jsonl and plots (see evaluate.py)."""
