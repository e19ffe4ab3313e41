"""What auto tries. A recipe is a model with the config keys it sets, its portfolio settings (a run
known to work: the kit's starting parameters, the shipped configs' schedules) and its main knobs, which
Optuna searches. Tables: the MLP, scikit-learn's models and the GBDT libraries; images: each backbone
of auto.backbones, fine-tuned from its pretrained weights or trained from scratch.

Nothing here imports Optuna or a model library (the config check uses this module): the trial that
suggests values comes from the caller."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from competition.core.choices import shipped_dir
from competition.core.errors import CompetitionError
from competition.core.schema import Config, build_config

GBDT_PATIENCE = 50  # early-stopping rounds of the GBDT recipes (train.patience), as benchmarks/tables.py
TIMM_WEIGHTS = "timm"  # auto.backbones value: timm's own weights (model.pretrained: true)


@dataclass(frozen=True)
class Knob:
    """One searched config key: a range (`low`..`high`, on a log scale or of integers) or `choices`;
    `default` is the portfolio's value; `when` says, from the values chosen before it, whether it applies."""

    key: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple = ()
    default: Any = None
    when: Callable[[dict], bool] | None = None

    @property
    def short(self) -> str:
        return self.key.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Recipe:
    name: str  # the study's choice, and part of each trial run's name
    sets: dict  # fixed config keys
    knobs: tuple[Knob, ...]
    epochs: bool  # trained in epochs: fold 0's per-epoch scores can prune it (a one-fit model reports none)
    derive: Callable[[dict], dict] = field(default=lambda values: {})  # keys that follow from the knobs


def _gbdt(name: str, knobs: tuple[Knob, ...]) -> Recipe:
    return Recipe(name, {"model.name": name, "model.params": {}, "train.patience": GBDT_PATIENCE}, knobs, False)


def _estimator(name: str, params: dict, knobs: tuple[Knob, ...]) -> Recipe:
    return Recipe(name, {"model.name": name, "model.params": params}, knobs, False)


def _p(key: str, low: float, high: float, default: Any, log: bool = False, integer: bool = False) -> Knob:
    return Knob(f"model.params.{key}", low, high, log, integer, default=default)


def _mlp(cfg: Config) -> Recipe:
    """The MLP, from the config's own settings when its model is the MLP, else from the shipped titanic
    config's (its schedule, known to work on tables), read from that file."""
    own = cfg.model.name == "mlp"
    if own:
        src = cfg
    else:
        import yaml

        src = build_config(yaml.safe_load((shipped_dir() / "titanic.yaml").read_text()))
    d = {"model.hidden_sizes": ",".join(map(str, src.model.hidden_sizes)), "model.drop_rate": src.model.drop_rate,
         "train.epochs": src.train.epochs, "train.batch_size": src.train.batch_size, "train.lr": src.train.lr,
         "train.weight_decay": src.train.weight_decay}
    sizes = tuple(dict.fromkeys([d["model.hidden_sizes"], "32", "64,32", "128,64", "256,128"]))
    batches = tuple(dict.fromkeys([d["train.batch_size"], 16, 32, 64, 128]))
    sets = {"model.name": "mlp", "model.params": {}, "train.freeze_epochs": 0}
    if not own:
        sets |= {"train.warmup_epochs": src.train.warmup_epochs, "train.patience": src.train.patience}
    return Recipe("mlp", sets, (
        Knob("train.lr", 3e-4, 3e-2, log=True, default=d["train.lr"]),
        Knob("model.hidden_sizes", choices=sizes, default=d["model.hidden_sizes"]),
        Knob("model.drop_rate", 0.0, 0.5, default=d["model.drop_rate"]),
        Knob("train.weight_decay", 1e-5, 1e-1, log=True, default=d["train.weight_decay"]),
        Knob("train.epochs", 1, max(60, d["train.epochs"]), integer=True, default=d["train.epochs"]),
        Knob("train.batch_size", choices=batches, default=d["train.batch_size"]),
    ), True)


def _table_recipes(cfg: Config) -> dict[str, Recipe]:
    """Every table recipe, in the portfolio's order: fast and strong first (benchmarks/RESULTS.md, "Tables")."""
    recipes = [
        _gbdt("lightgbm", (_p("learning_rate", 0.01, 0.3, 0.05, log=True), _p("num_leaves", 4, 128, 31, True, True),
                           _p("min_data_in_leaf", 2, 64, 20, True, True), _p("feature_fraction", 0.4, 1.0, 0.8),
                           _p("bagging_fraction", 0.5, 1.0, 0.8), _p("lambda_l2", 1e-3, 10.0, 1e-3, log=True))),
        _estimator("logreg", {}, (_p("C", 1e-3, 100.0, 1.0, log=True),)),
        _gbdt("xgboost", (_p("eta", 0.01, 0.3, 0.05, log=True), _p("max_depth", 2, 10, 6, integer=True),
                          _p("min_child_weight", 0.5, 20.0, 1.0, log=True), _p("subsample", 0.5, 1.0, 0.8),
                          _p("colsample_bytree", 0.4, 1.0, 0.8), _p("lambda", 1e-3, 10.0, 1.0, log=True))),
        _estimator("hist_gbm", {}, (_p("learning_rate", 0.02, 0.3, 0.1, log=True),
                                    _p("max_leaf_nodes", 4, 64, 31, True, True),
                                    _p("min_samples_leaf", 2, 64, 20, True, True),
                                    _p("l2_regularization", 1e-4, 10.0, 1e-4, log=True))),
        _estimator("random_forest", {"n_estimators": 300}, (
            _p("min_samples_leaf", 1, 16, 1, True, True),
            Knob("model.params.max_features", choices=("sqrt", 0.5, 1.0), default="sqrt"))),
        _mlp(cfg),
        _gbdt("catboost", (_p("learning_rate", 0.01, 0.3, 0.05, log=True), _p("depth", 3, 8, 6, integer=True),
                           _p("l2_leaf_reg", 1.0, 10.0, 3.0, log=True))),
        _estimator("extra_trees", {"n_estimators": 300}, (
            _p("min_samples_leaf", 1, 16, 1, True, True),
            Knob("model.params.max_features", choices=("sqrt", 0.5, 1.0), default="sqrt"))),
    ]
    return {r.name: r for r in recipes}


TABLE_MODELS = ("lightgbm", "logreg", "xgboost", "hist_gbm", "random_forest", "mlp", "catboost", "extra_trees")
GBDT_LIBRARIES = ("lightgbm", "xgboost", "catboost")  # the tables extra: left out where not installed


def _round8(side: float) -> int:
    return max(16, int(round(side / 8)) * 8)


def _sizes(size: int | list[int]) -> tuple:
    """image.size and a step down and up (×0.75, ×1.25, multiples of 8); [h, w] as "HxW"."""
    if isinstance(size, int):
        return tuple(dict.fromkeys([size, _round8(size * 0.75), _round8(size * 1.25)]))
    return tuple(dict.fromkeys(f"{_round8(size[0] * f)}x{_round8(size[1] * f)}" if f != 1 else f"{size[0]}x{size[1]}"
                               for f in (1, 0.75, 1.25)))


def _image_common(cfg: Config) -> tuple[Knob, ...]:
    t = cfg.train
    return (Knob("image.size", choices=_sizes(cfg.image.size), default=_sizes(cfg.image.size)[0]),
            Knob("train.label_smoothing", 0.0, 0.2, default=min(t.label_smoothing, 0.2)),
            Knob("train.mixup_alpha", choices=(0.0, 0.2, 0.4), default=0.0))


def _scratch(cfg: Config, backbone: str) -> Recipe:
    """From scratch: every layer from the start (nothing pretrained to protect), the config's schedule
    as the portfolio's, epochs from a third to three times it, the learning rate ÷10 to ×10."""
    t, e = cfg.train, max(1, cfg.train.epochs + cfg.train.freeze_epochs)
    sets = {"model.name": backbone, "model.pretrained": False, "model.pretrained_file": None, "train.freeze_epochs": 0,
            "train.backbone_lr_mult": 1.0, "train.head_fit": "sgd", "train.head_fit_views": [],
            "train.interpolate": "off", "train.freeze_bn": False}
    return Recipe(backbone, sets, (
        Knob("train.epochs", max(1, e // 3), max(3, 3 * e), integer=True, default=e),
        Knob("train.lr", t.lr / 10, t.lr * 10, log=True, default=t.lr),
        Knob("train.weight_decay", 1e-5, 0.1, log=True, default=min(max(t.weight_decay, 1e-5), 0.1)),
        Knob("train.average", choices=("off", "top_k"), default="off", when=lambda v: v["train.epochs"] >= 2),
        *_image_common(cfg),
    ), True)


def _native_side(backbone: str, fallback: int | list[int]) -> int | list[int]:
    """The side the backbone's pretrained weights were evaluated at (timm's pretrained config), or the config's."""
    import timm  # here, not at import: the config check reads this module

    named = timm.models.get_pretrained_cfg(backbone)
    return int(named.input_size[-1]) if named is not None and named.input_size else fallback


def _pretrained(cfg: Config, backbone: str, weights: str) -> Recipe:
    """Fine-tuning. The portfolio's run is the shipped `transfer` recipe (benchmarks/RESULTS.md, "Keeping
    what pretraining knows"): the weights' own centre crop at their native size, the head fit exactly on
    the frozen backbone's features towards the pretrained classes that match (label_map), no stage 2.
    The search also tries the plain probe, SGD heads, stage 2 with a greedy soup of its epochs and WiSE-FT
    interpolation, the whole photo squashed, and a size a step down or up."""
    file = None if weights == TIMM_WEIGHTS else weights
    native = _native_side(backbone, cfg.image.size)
    sets = {"model.name": backbone, "model.pretrained": file is None, "model.pretrained_file": file,
            "train.head_fit_views": [], "train.head_fit_prior": "none", "image.crop_pct": "pretrained"}

    def derive(v: dict) -> dict:
        whole = {"image.crop_pct": 1.0} if v["image.crop_mode"] == "squash" else {}  # squash: all of the photo
        return {"train.freeze_epochs": 1, **whole} if v["train.head_fit"] == "logreg" else whole

    def stages(v: dict) -> int:
        return v.get("train.freeze_epochs", 1) + v["train.epochs"]

    t = cfg.train
    return Recipe(backbone, sets, (
        Knob("train.head_fit", choices=("logreg", "sgd"), default="logreg"),
        Knob("train.head_fit_prior", choices=("label_map", "none"), default="label_map",
             when=lambda v: v["train.head_fit"] == "logreg"),
        Knob("train.freeze_epochs", 1, 8, integer=True, when=lambda v: v["train.head_fit"] == "sgd"),
        Knob("train.epochs", 0, 8, integer=True, default=0),
        Knob("train.average", choices=("greedy_soup", "off"), default="greedy_soup", when=lambda v: stages(v) >= 2),
        Knob("train.interpolate", choices=("auto", "off"), default="auto", when=lambda v: v["train.epochs"] > 0),
        Knob("train.lr", 1e-4, 1e-2, log=True, default=5e-3),
        Knob("train.backbone_lr_mult", 0.01, 0.3, log=True, default=0.02),
        Knob("train.freeze_bn", choices=(True, False), default=True),
        Knob("image.crop_mode", choices=("center", "squash"), default="center"),
        Knob("image.size", choices=_sizes(native), default=_sizes(native)[0]),
        Knob("train.label_smoothing", 0.0, 0.2, default=min(t.label_smoothing, 0.2)),
        Knob("train.mixup_alpha", choices=(0.0, 0.2, 0.4), default=0.0),
    ), True, derive)


def _image_recipes(cfg: Config) -> dict[str, Recipe]:
    backbones = cfg.auto.backbones or {cfg.model.name: cfg.model.pretrained_file
                                       or (TIMM_WEIGHTS if cfg.model.pretrained else None)}
    return {b: _pretrained(cfg, b, w) if w else _scratch(cfg, b) for b, w in backbones.items()}


def _named_table_recipes(cfg: Config) -> dict[str, Recipe]:
    every = _table_recipes(cfg)
    names = cfg.auto.models or [n for n in TABLE_MODELS if n not in GBDT_LIBRARIES or importlib.util.find_spec(n)]
    return {n: every[n] for n in names}


# Each task kind (core.choices.TASK_KINDS): the auto key that names what it tries, and its recipes.
SEARCHES: dict[str, tuple[str, Callable[[Config], dict[str, Recipe]]]] = {
    "image": ("auto.backbones", _image_recipes),
    "tabular": ("auto.models", _named_table_recipes),
}


def recipes(cfg: Config) -> dict[str, Recipe]:
    """The recipes of the config's task, in the portfolio's order, as auto.models / auto.backbones name them."""
    return SEARCHES[cfg.task][1](cfg)


def param_name(recipe: Recipe, knob: Knob) -> str:
    """The Optuna parameter of a knob: each recipe's own, so that each keeps one distribution."""
    return f"{recipe.name}:{knob.key}"


def _fill(recipe: Recipe, pick: Callable[[Knob], Any]) -> dict:
    values: dict = {}
    for knob in recipe.knobs:
        if knob.when is None or knob.when(values):
            values[knob.key] = pick(knob)
    return values


def portfolio_values(recipe: Recipe) -> dict:
    """The knobs' values of the recipe's portfolio trial: key → value."""
    return _fill(recipe, lambda k: k.default)


def portfolio_params(recipe: Recipe) -> dict:
    """The Optuna parameters of the recipe's portfolio trial (enqueued before the search)."""
    by_key = {k.key: k for k in recipe.knobs}
    return {"recipe": recipe.name, **{param_name(recipe, by_key[key]): v for key, v in portfolio_values(recipe).items()}}


def _significant(value: float) -> float:
    return float(f"{value:.4g}")  # 0.0031 rather than 0.0030962...: readable configs and run names


def choose(recipe: Recipe, trial) -> dict:
    """The knobs' values for an Optuna trial (the portfolio's fixed ones, or the sampler's): key → value."""
    def pick(k: Knob) -> Any:
        name = param_name(recipe, k)
        if k.choices:
            return trial.suggest_categorical(name, list(k.choices))
        if k.integer:
            return trial.suggest_int(name, int(k.low), int(k.high), log=k.log)
        return _significant(trial.suggest_float(name, k.low, k.high, log=k.log))

    return _fill(recipe, pick)


def config_sets(recipe: Recipe, values: dict) -> dict:
    """The config keys a trial of the recipe sets, from the knobs' values: key → plain value."""
    sets = {**recipe.sets, **recipe.derive(values)}
    params = dict(sets.get("model.params", {}))
    for key, value in values.items():
        if key.startswith("model.params."):
            params[key.removeprefix("model.params.")] = value
        elif key == "model.hidden_sizes":
            sets[key] = [int(n) for n in str(value).split(",")]
        elif key == "image.size" and isinstance(value, str):
            sets[key] = [int(n) for n in value.split("x")]
        else:
            sets[key] = value
    if "model.params" in sets:
        sets["model.params"] = params
    return sets


def describe(values: dict) -> str:
    """`learning_rate 0.05, num_leaves 31`: the knobs of a trial, for a person."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {v:g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]} {v}"
                     for k, v in values.items())


def check_auto_keys(cfg: Config) -> None:
    """auto.models names table recipes; auto.backbones maps timm names to their weights."""
    a = cfg.auto
    own = SEARCHES[cfg.task][0]
    for key, value in (("auto.models", a.models), ("auto.backbones", a.backbones)):
        if value and key != own:
            raise CompetitionError(f"config key {key}: names what auto tries for another task; task {cfg.task} "
                                   f"tries {own}")
    for name in a.models:
        if name not in TABLE_MODELS:
            raise CompetitionError(f"config key auto.models: unknown model {name!r}; valid models are "
                                   f"{', '.join(TABLE_MODELS)}")
    if len(set(a.models)) != len(a.models):
        raise CompetitionError("config key auto.models: each model once")
    for name, weights in a.backbones.items():
        if weights is not None and (not isinstance(weights, str) or not weights.strip()):
            raise CompetitionError(f"config key auto.backbones: {name}: {weights!r} is not a weights file; give null "
                                   f"(from scratch), {TIMM_WEIGHTS} (timm's own weights) or a local file's path")
