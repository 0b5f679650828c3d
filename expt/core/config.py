"""Compose configs with Hydra: the packaged groups, a user's config dir, recipes and overrides, into one config.

Hydra is used only as a composition engine (its compose API), never as the app
runner: the CLI stays a typer app and Optuna is driven directly. Nothing is built
here: :func:`expt.core.build.build` is the one door from config to object, and it
checks every ``_target_`` first. Since a config may come from a logged run
(untrusted input), composing refuses what composing alone could leak: resolvers
that read the environment or files (:func:`check_resolvers`).
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from expt.core.errors import ConfigError

if TYPE_CHECKING:
    from types import TracebackType

    from omegaconf import DictConfig

GROUPS = ("data", "model", "learner", "tracking", "search")
RECIPE_GROUP = "recipe"
SAFE_RESOLVERS = ("by_task", "oc.select")  # they read other keys of the config, nothing else
_RESOLVER_CALL = re.compile(r"(?<!\\)\$\{\s*([A-Za-z_][\w.\-]*)\s*:")
# Prefixes trusted beyond the defaults for one invocation (`--trust-target`). An environment variable, not a
# module global, so that a sweep's worker processes (multiprocessing 'spawn') inherit it with nothing passed.
LOGGED_HEADER = "# @package _global_\n"


def conf_dir() -> Path:
    """The packaged config groups.

    They live in the checkout's top-level ``conf/`` (where a Hydra user looks for them);
    the wheel carries the same files as ``expt/conf/`` (a build-backend mapping in
    pyproject.toml, not a second copy). An installed wheel finds them inside the package,
    a checkout or an editable install beside it.
    """
    package = Path(__file__).resolve().parents[1]
    inside = package / "conf"
    return inside if (inside / "config.yaml").is_file() else package.parent / "conf"  # a stray empty folder: not it


@dataclass
class Composed:
    """A composed config plus the group options it was made of."""

    cfg: DictConfig
    choices: dict[str, str] = field(default_factory=dict)


def _by_task(classifier: str, regressor: str, *, _root_: DictConfig) -> str:
    task = _root_.data.task
    if task == "classification":
        return classifier
    if task == "regression":
        return regressor
    raise ConfigError(
        f"data.task is {task!r} where a model needs to know the task; "
        "set data.task=classification or data.task=regression"
    )


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("by_task"):
        OmegaConf.register_new_resolver("by_task", _by_task)


def _split_overrides(overrides: Iterable[str]) -> tuple[str | None, list[str]]:
    """Pull ``conf=PATH`` out of the overrides: it names a recipe or logged config."""
    conf, rest = None, []
    for item in overrides:
        if item.startswith("conf="):
            conf = item[len("conf="):]
        else:
            rest.append(item)
    return conf, rest


def read_yaml(path: Path, label: str) -> object:
    """A user's YAML file; unreadable text or broken syntax becomes a ConfigError naming ``label`` and the line."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{label} is not UTF-8 text; save it as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label} is not valid YAML{where}; fix its syntax") from None


def _stage_conf_file(path_str: str, stage: Path, overridden: set[str]) -> str:
    """Copy a recipe or logged config into a temporary ``recipe/`` group.

    A recipe (``# @package _global_`` with ``override /group: option`` defaults) is
    used as is. A config without a defaults list is taken as plain values and
    composed on top of the defaults; groups the user overrides on the command
    line are dropped from it so their old values are not merged onto the new option.
    """
    import yaml

    path = Path(path_str).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path_str!r} not found; pass conf=PATH to an existing YAML file")
    loaded = read_yaml(path, f"config file {path_str!r}")
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        kind = type(loaded).__name__
        raise ConfigError(f"config file {path_str!r} must hold a mapping of keys to values, not a {kind}")
    defaults = loaded.get("defaults", [])
    if not isinstance(defaults, list) or not all(
            isinstance(d, str) or (isinstance(d, dict) and len(d) == 1) for d in defaults):
        raise ConfigError(f"config file {path_str!r}: defaults must be a list of entries like "
                          f"'- override /model: svm', got {defaults!r}")
    if "${" in str(defaults):  # Hydra resolves these while composing, before check_resolvers sees anything
        raise ConfigError(f"config file {path_str!r}: its defaults list may not interpolate (${{...}}); name each "
                          "option, e.g. '- override /model: svm'")
    if overridden:
        loaded["defaults"] = [
            d for d in loaded.get("defaults", []) if not (isinstance(d, dict) and _default_group(d) in overridden)
        ]
        for group in overridden:
            loaded.pop(group, None)
    loaded.pop("hydra", None)
    # A letter first: Hydra's override grammar reads `recipe=1` (from conf=recommended/1.yaml) as the number 1.
    name = "conf_" + re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    (stage / RECIPE_GROUP).mkdir(parents=True, exist_ok=True)
    (stage / RECIPE_GROUP / f"{name}.yaml").write_text(LOGGED_HEADER + yaml.safe_dump(loaded, sort_keys=False))
    return name


# learner.cv keys newer than the learner option a config may use (a user's own, or one logged before they existed):
# set on the command line, they are added where that option lacks them (Hydra's ++), and expt.core.folds fills the
# rest with their defaults, so `learner.cv.groups=site` works with any learner.
LATER_CV_KEYS = ("learner.cv.kind", "learner.cv.groups", "learner.cv.order", "learner.cv.gap",
                 "learner.cv.order_feature")


def _add_or_override(override: str) -> str:
    return f"++{override}" if override.split("=", 1)[0] in LATER_CV_KEYS else override


def _default_group(entry: Mapping[str, Any]) -> str:
    key = next(iter(entry))
    return key.removeprefix("override ").strip().lstrip("/")


def compose(overrides: Iterable[str] = (), *, config_dir: str | Path | None = None) -> Composed:
    """Compose the packaged config with a user's config dir, a ``conf=`` file and overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    conf, rest = _split_overrides(overrides)
    rest = [_add_or_override(o) for o in rest]
    overridden = {o.split("=", 1)[0].lstrip("+~") for o in rest if "=" in o} & set(GROUPS)
    with tempfile.TemporaryDirectory(prefix="expt-conf-") as stage:
        search = []
        if config_dir is not None:
            user_dir = Path(config_dir).expanduser().resolve()
            if not user_dir.is_dir():
                raise ConfigError(f"--config-dir {str(config_dir)!r} is not a directory; pass a folder of groups")
            search.append(user_dir.as_uri())
        if conf is not None:
            rest.append(f"{RECIPE_GROUP}={_stage_conf_file(conf, Path(stage), overridden)}")
            search.append(Path(stage).as_uri())
        if search:
            rest.insert(0, "hydra.searchpath=[" + ",".join(search) + "]")
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
                cfg = hydra_compose("config", overrides=rest, return_hydra_config=True)
                runtime = cfg.hydra.runtime.choices
                choices = {g: str(runtime[g]) for g in GROUPS if runtime.get(g) is not None}
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(_explain_compose_error(exc, rest)) from None
        finally:
            GlobalHydra.instance().clear()
    asked = next((o.split("=", 1)[1] for o in rest if o.split("=", 1)[0].lstrip("+") == "search"), None)
    if asked is not None and "search" not in cfg:  # `optional search` skips an unknown option silently
        dirs = [Path(config_dir).expanduser()] if config_dir else []
        known = sorted({p.stem for d in [*dirs, conf_dir()] for p in (d / "search").glob("*.yaml")
                        if not p.stem.startswith("_")})
        close = difflib.get_close_matches(asked, known, 1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown search {asked!r}{hint} Available: {', '.join(known)} (choose with search=NAME)")
    with _open(cfg):
        del cfg["hydra"]
    check_resolvers(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(cfg, True)
    return Composed(cfg=cfg, choices=choices)


def check_resolvers(node: object, where: str = "") -> None:
    """Refuse interpolations that call a resolver other than the ones that only read the config itself.

    A config may come from anyone (a logged run, a storage, a file), and ``${oc.env:...}``
    would copy an environment variable (a secret) into the config, and from there into
    logged params; ``oc.decode`` would turn text into new interpolations. Credentials
    belong in the environment, where MLflow and the database drivers read them.
    """
    if isinstance(node, Mapping):
        for key, value in node.items():
            check_resolvers(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_resolvers(value, f"{where}[{i}]")
    elif isinstance(node, str):
        for name in _RESOLVER_CALL.findall(node):
            if name not in SAFE_RESOLVERS:
                why = "it reads the environment" if name in ("oc.env", "env") else "it reads more than the config"
                raise ConfigError(f"{where or 'config'} uses the resolver {name!r}, which a config may not use ({why}; "
                                  f"allowed: {', '.join(SAFE_RESOLVERS)}); write the value itself, and keep "
                                  "credentials in the environment (MLFLOW_TRACKING_PASSWORD, PGPASSWORD)")


class _open:
    """Temporarily lift struct mode (``omegaconf.open_dict`` without importing at module level)."""

    def __init__(self, cfg: DictConfig) -> None:
        from omegaconf import open_dict

        self._ctx = open_dict(cfg)

    def __enter__(self) -> None:
        self._ctx.__enter__()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._ctx.__exit__(kind, exc, tb)


def _explain_compose_error(exc: Exception, overrides: list[str]) -> str:
    """Hydra's messages are several lines with a search-path dump; keep the part a user acts on."""
    msg = str(exc)
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", msg)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", msg.split("Config search path")[0], re.M)
        close = difflib.get_close_matches(option, options, 1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {group} {option!r}{hint} Available: {', '.join(options)} (choose with {group}=NAME)"
    key = re.search(r"Could not override '([^']+)'", msg)
    if key:
        return _unknown_key_message(key.group(1))
    there = re.search(r"An item is already at '([^']+)'", msg)
    if there:
        return f"{there.group(1)} is already set; drop the + to change it ({there.group(1)}=VALUE)"
    if "override_grammar" in msg or "mismatched input" in msg or "no viable alternative" in msg:
        bad = next((o for o in overrides if not re.fullmatch(r"[+~]?[\w./@-]+=.*", o)), None)
        fragment = re.search(r"at input '([^']+)'", msg)
        if bad is None and fragment:  # the key is fine, the value is not: name the override it is in
            bad = next((o for o in overrides if fragment.group(1) in o), None)
        first = msg.splitlines()[0]
        shown = f" {bad!r}" if bad else ""
        return f"cannot parse override{shown} ({first}); write overrides as key=value, e.g. model.estimator.C=3"
    return msg.split("\n")[0] + " (see --help for how to write overrides)"


def _unknown_key_message(key: str) -> str:
    if key.startswith("model.estimator."):
        param = key.rsplit(".", 1)[1]
        return (
            f"'{key}' is not set by this model's config; to pass a new estimator parameter write "
            f"+{key}=VALUE, or check the spelling of {param!r}"
        )
    return f"unknown config key {key!r}; check the spelling (expt train --cfg shows every key)"


def resolve_values(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations into a plain dict (data.task must be known by now)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    try:
        return cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        full_key = getattr(exc, "full_key", None)
        if "Missing mandatory value" in str(exc) and full_key:
            raise ConfigError(f"{full_key} has no value; set it on the command line ({full_key}=...)") from None
        raise ConfigError(f"cannot resolve config value {full_key or ''}: {str(exc).splitlines()[0]}") from None


def logged_yaml(values: Mapping[str, Any], choices: Mapping[str, str]) -> str:
    """The config as logged with a run: a recipe that `expt train conf=...` composes back."""
    import yaml

    header = LOGGED_HEADER + "# Written by expt; run it as is with: expt train conf=FILE (or expt sweep conf=FILE)\n"
    doc = {"defaults": [{f"override /{g}": choices[g]} for g in GROUPS if g in choices]}
    doc.update(values)
    return header + yaml.safe_dump(doc, sort_keys=False)


def with_tracking_uri(values: Mapping[str, Any], rewrite: Callable[[str], str]) -> dict[str, Any]:
    """The config as written, with ``tracking.uri`` rewritten (masked, by :func:`expt.tracking.uri.masked_config`,
    to be shown or logged): a new top level and ``tracking``, every other group shared."""
    tracking = values["tracking"]
    return {**values, "tracking": {**tracking, "uri": rewrite(tracking["uri"])}}


def model_configs(names: tuple[str, ...], values: Mapping[str, Any],
                  config_dir: str | Path | None) -> dict[str, Any]:
    """The resolved config of each named model (``conf/model/NAME.yaml``, a user's config dir first):
    the families a model_selection search chooses among, or a model's packaged defaults."""
    from omegaconf import OmegaConf

    _register_resolvers()
    dirs = [Path(config_dir)] if config_dir else []
    dirs.append(conf_dir())
    out: dict[str, Any] = {}
    for name in names:
        path = next((d / "model" / f"{name}.yaml" for d in dirs if (d / "model" / f"{name}.yaml").is_file()), None)
        if path is None:
            raise ConfigError(f"search.space.model names unknown model {name!r}; add conf model/{name}.yaml")
        root = OmegaConf.create({"seed": values["seed"], "data": values["data"],
                                 "model": OmegaConf.load(path)})
        out[name] = cast("dict[str, Any]", OmegaConf.to_container(root, resolve=True))["model"]
    return out
