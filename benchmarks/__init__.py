"""Reproducible benchmarks of the poller against baselines; run them with ``make bench``."""
