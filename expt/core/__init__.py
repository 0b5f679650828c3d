"""What every command shares: errors, config composition and the one door from config to object, the config schema,
data loading, cross-validation and pipelines, search spaces, and preparing a run. Imports nothing else of expt
but expt.models.
"""
