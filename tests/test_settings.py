"""The typed config: a prepared config reads as frozen dataclasses with the schema's keys, and only core reads
config values by string."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from expt.core.config import compose
from expt.core.prepare import Prepared, prepare
from expt.core.schema import SCHEMA, Open
from expt.core.settings import CV, Config, Data, Learner, Metric, Model, Preprocessing, Search, Tracking, settings_of

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"data": Data, "model": Model, "learner": Learner, "search": Search, "tracking": Tracking}
NESTED = {"cv": CV, "metric": Metric, "preprocessing": Preprocessing}


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    return prepare(compose(["data=wine", "model=svm", "model.estimator.C=3", "learner.cv.folds=3",
                            "learner.preprocessing.scale=minmax", "search.n_trials=7", "tracking.records=null",
                            "tracking.tags={team: vision}", "seed=5"]))


def plain(node: Any) -> Any:
    """A dataclass as the config writes it: mappings and lists."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [plain(v) for v in node]
    return node


def test_a_prepared_config_reads_as_typed_values(prepared: Prepared) -> None:
    config = prepared.config
    assert isinstance(config, Config)
    assert config.seed == 5 and config.learner.seed == 5
    assert (config.data.name, config.data.source, config.data.task, config.data.drop) == (
        "wine", "sklearn", "classification", ())
    assert (config.model.name, config.model.family, config.model.tasks) == ("svm", "svm", ("classification",
                                                                                       "regression"))
    assert config.model.estimator["C"] == 3 and config.model.estimator["_target_"] == "sklearn.svm.SVC"
    cv = config.learner.cv
    assert (cv.folds, cv.repeats, cv.shuffle, cv.stratify, cv.kind, cv.groups, cv.gap) == (3, 1, True, "auto",
                                                                                           "kfold", None, 0)
    assert config.learner.metric.of(config.data.task) == prepared.metric == "accuracy"
    assert config.learner.preprocessing == Preprocessing(impute="median", scale="minmax", one_hot=True,
                                                         max_categories=50)
    assert config.search is not None and (config.search.name, config.search.n_trials) == ("svm", 7)
    assert "model.estimator.C" in config.search.space
    assert (config.tracking.records, config.tracking.log_model, dict(config.tracking.tags or {})) == (
        None, True, {"team": "vision"})


def test_nothing_is_lost_or_renamed_between_the_values_and_the_typed_config(prepared: Prepared) -> None:
    assert plain(dataclasses.asdict(prepared.config)) == prepared.values


def test_the_typed_config_has_the_schemas_keys_one_for_one() -> None:
    assert [f.name for f in dataclasses.fields(Config)] == list(SCHEMA)
    for group, cls in GROUPS.items():
        assert [f.name for f in dataclasses.fields(cls)] == list(SCHEMA[group]), group
    for key, cls in NESTED.items():
        assert [f.name for f in dataclasses.fields(cls)] == list(SCHEMA["learner"][key]), key
    open_ones = {f"{g}.{k}" for g, spec in SCHEMA.items() if isinstance(spec, dict)
                 for k, v in spec.items() if isinstance(v, Open)}
    assert open_ones == {"model.estimator", "search.space", "search.families"}  # the only mappings left


def test_it_is_frozen_and_survives_a_pickle(prepared: Prepared) -> None:
    config = prepared.config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tracking.log_model = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.learner.cv.folds = 10  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(config)) == config  # noqa: S301 - its own bytes; workers get it pickled


def test_an_older_config_without_the_newer_keys_reads_as_prepare_fills_them(prepared: Prepared) -> None:
    old = copy.deepcopy(prepared.values)
    for key in ("kind", "groups", "order", "gap", "order_feature"):
        del old["learner"]["cv"][key]
    for key in ("path", "package", "item", "image_shape"):  # null by default
        del old["data"][key]
    del old["search"]
    assert settings_of(old) == dataclasses.replace(prepared.config, search=None)


def test_the_logged_config_is_the_values_not_the_dataclasses(prepared: Prepared) -> None:
    from expt.core.config import logged_yaml

    text = logged_yaml(prepared.values, prepared.choices)
    assert "!!python" not in text and "tuple" not in text
    assert "  C: 3\n" in text


# A config value read by its key outside core: ``prepared.values["tracking"]``, ``plan.values["seed"]``,
# ``plan.search["n_trials"]``. Outside core, code reads ``prepared.config.tracking.log_model``.
STRING_KEYED = re.compile(r"""values\[\s*['"](?:seed|data|model|learner|search|tracking)['"]\s*\]"""
                          r"""|\.values\[\s*['"]|\.values\.get\(\s*['"]|\.search\[\s*['"]""")


def test_no_module_outside_core_reads_config_values_by_string() -> None:
    hits = []
    for path in sorted((ROOT / "expt").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("expt/core/"):
            continue
        hits += [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
                 if STRING_KEYED.search(line)]
    assert not hits, "read the typed config (prepared.config, plan.config, plan.settings) instead:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_is_for() -> None:
    for line in ('tracking = plan.values["tracking"]', "name = prepared.values['model']['name']",
                 'seed = values["seed"]', 'n = sweep.plan.search["n_trials"]', 'x = self.values.get("search")'):
        assert STRING_KEYED.search(line), line
    for line in ('model = record["model"]', "seed = prepared.config.seed", 'head["seed"]'):
        assert not STRING_KEYED.search(line), line
