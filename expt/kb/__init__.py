"""The knowledge base ``expt recommend`` starts from: ``records.jsonl.gz`` (shipped in the wheel) and its
builder (:mod:`expt.kb.build`, ``make kb``). The builder runs ``expt train`` over recipes/kb/, so it sits above
the features; :mod:`expt.meta.records` reads the file by its path and never imports this package."""
