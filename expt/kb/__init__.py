"""The knowledge base ``expt recommend`` starts from: ``records.jsonl.gz`` (shipped in the wheel) and its
builder (:mod:`expt.kb.build`, ``make kb``, on :mod:`expt.kb.protocol` and :mod:`expt.kb.cells`). The builder
cross-validates recipes/kb/'s datasets x portfolio with expt's own ``prepare`` and ``cross_validate`` on the
grid's worker pool (:mod:`expt.grid.workers`), so it sits above ``grid``; :mod:`expt.meta.records` reads the
file by its path and never imports this package."""
