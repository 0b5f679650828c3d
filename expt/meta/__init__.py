"""Learning from past runs: meta-features, the records every run emits, recommenders and their evaluation, and the
dataset.yaml advice. Imports expt.core and expt.tracking.
"""
