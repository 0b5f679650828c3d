"""What every command shares: errors, config composition and the one door from config to object, the config schema,
data loading, cross-validation and pipelines, search spaces, preparing a run, and the timeline's phase marks.
Imports nothing else of expt but expt.models.
"""
