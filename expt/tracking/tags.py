"""The MLflow tag keys expt writes and reads, and its run types, in one module (as MLflow keeps its own in
``mlflow/utils/mlflow_tags.py``).

A key here is part of the store's format, not a name in the code: ``expt rerun``, ``expt report``, ``expt runs``,
the records and the registry read runs that older versions of expt logged, by these keys. So a key is added,
never renamed; the Python names may change. Filters for MLflow's search are built from the same constants
(``f"tags.`{RUN_TYPE_TAG}` = '{SWEEP_RUN}'"``). Plain strings only: imported at start-up by modules the CLI
loads, so nothing heavy comes with it. ``expt.``-prefixed keys are reserved: a user's ``tracking.tags``
cannot set them (:mod:`expt.core.schema`).
"""

from __future__ import annotations

# What a run is and what it ran on: what `expt runs` lists and filters by.
RUN_TYPE_TAG = "expt.run_type"  # one of the run types below
DATA_TAG = "expt.data"  # the dataset's name
MODEL_TAG = "expt.model"  # the model config's name
FAMILY_TAG = "expt.family"  # the model family (records and the registry group by it)
SEARCH_TAG = "expt.search"  # a sweep's search-space config name
METRIC_TAG = "expt.metric"  # the selecting metric among those logged

# What a later re-run compares against (expt.tracking.environment.environment_tags).
VERSION_TAG = "expt.version"
GIT_COMMIT_TAG = "expt.git_commit"
GIT_DIRTY_TAG = "expt.git_dirty"  # "true", "false", or "unknown" outside a git checkout
FINGERPRINT_TAG = "expt.dataset_fingerprint"
SEED_TAG = "expt.seed"
PYTHON_TAG = "expt.python"
PACKAGE_TAG_PREFIX = "expt.pkg."  # + a distribution name: its installed version
TRUSTED_TAG = "expt.trusted_targets"  # the --trust-target prefixes a train run or sweep ran with
SPLIT_TAG = "expt.split"  # how the rows were split: shuffled, grouped by COLUMN, time by COLUMN (expt.core.folds)
FOLDS_TAG = "expt.folds_hash"  # the fold manifest's hash (test rows of every fold, and their kind)
RERUN_OF_TAG = "expt.rerun_of"  # on a run `expt rerun` made: the run it re-ran

# The run tree below a train run or a sweep.
FOLD_TAG = "expt.fold"  # a train run's fold number
OUTER_FOLD_TAG = "expt.outer_fold"  # a sweep's outer fold (on its outer-fold, final and trial runs)
TRIAL_NUMBER_TAG = "expt.trial_number"  # the Optuna trial's number in its study
TRIAL_STATE_TAG = "expt.trial_state"  # COMPLETE, PRUNED or FAIL (MLflow's own status says nothing of pruning)
BEST_TRIAL_TAG = "expt.best_trial"  # on an outer-fold or final run: its study's best trial number
ERROR_TAG = "expt.error"  # why a fold or trial failed, one line
EVALUATION_ERROR_TAG = "expt.evaluation_error"  # why the evaluation plots are missing (not fatal)
RECORDS_TAG = "expt.records"  # how many records the run emitted: what `expt recommend` searches for

# Sweeps.
SWEEP_ID_TAG = "expt.sweep_id"  # on every run of a sweep: `expt sweep --resume ID` finds them by it
KEY_TAG = "expt.key"  # the sink's key of a run, so that a resumed sweep never logs a run twice
WORKERS_TAG = "expt.sweep.workers"  # what shaped a sweep beyond its config (expt.sweep.runner.shape_tags)
WARM_START_TAG = "expt.sweep.warm_start"
RESUMES_TAG = "expt.sweep.resumes"

# Grids (`expt train -m`, `expt sweep -m`) and probes (`expt recommend --probe`), which run as one-cell grids.
GRID_TAG = "expt.grid_id"
CELL_TAG = "expt.grid.cell"
ROW_TAG = "expt.grid.row"
COLUMN_TAG = "expt.grid.column"
KIND_TAG = "expt.grid.kind"  # the run type of the grid's cells: train or sweep
FAILED_CELLS_TAG = "expt.grid.failed"
PROBE_TAG = "expt.probe_id"
CANDIDATE_TAG = "expt.probe.candidate"

# On a registered model version: the run it came from.
RUN_ID_TAG = "expt.run_id"

# MLflow's own, which expt sets or reads (the values of mlflow.utils.mlflow_tags, without importing mlflow).
PARENT_TAG = "mlflow.parentRunId"
USER_TAG = "mlflow.user"  # MLflow's client leaves it to the caller: without it the UI shows "unknown"
NOTE_TAG = "mlflow.note.content"  # the Description on a run's page in the MLflow UI
SOURCE_COMMIT_TAG = "mlflow.source.git.commit"

# The values of RUN_TYPE_TAG.
TRAIN_RUN = "train"  # `expt train`: CV folds, then a refit
FOLD_RUN = "fold"  # a train run's fold
SWEEP_RUN = "sweep"  # `expt sweep`: nested CV
OUTER_FOLD_RUN = "outer_fold"  # a sweep's outer fold
FINAL_RUN = "final"  # a sweep's final search on all rows, and the refit model
TRIAL_RUN = "trial"  # an Optuna trial, under an outer fold or the final search
GRID_RUN = "grid"  # a grid's parent run: its spec and comparison
PROBE_RUN = "probe"  # a probe's parent run
TOP_LEVEL_RUNS = (TRAIN_RUN, SWEEP_RUN)  # what a run tree's root is: rerun and report walk up to one
FOLD_RUNS = {TRAIN_RUN: FOLD_RUN, SWEEP_RUN: OUTER_FOLD_RUN}  # where a run type's held-out scores are


def package_tag(name: str) -> str:
    """The key of a distribution's version (``expt.pkg.scikit-learn``)."""
    return PACKAGE_TAG_PREFIX + name


def tag_filter(key: str, value: str) -> str:
    """An MLflow search clause matching runs whose tag ``key`` is ``value`` (a quote in it escaped)."""
    escaped = value.replace("'", "\\'")
    return f"tags.`{key}` = '{escaped}'"
