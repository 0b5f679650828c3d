"""MLflow: URIs and credential masking (uri), the tag keys and run types (tags), what a re-run compares against
(environment: git state, package versions, the environment lock), the run-tree writer (client). Imports expt.core
only.
"""
