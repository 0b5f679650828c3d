"""MLflow: URIs and credential masking (uri), the environment lock and tags (environment), the run-tree writer
(client). Imports expt.core only.
"""
