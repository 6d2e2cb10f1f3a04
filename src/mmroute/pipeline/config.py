"""The pipeline's configuration: one typed dataclass shared by the Python API, the CLI and MLproject.

Router options are ``"<router>.<field>=<value>"`` strings (``"knn.k=20"``, ``"mlp_mf.lr=3e-4"``),
converted to the type of the router config's field; ``"*.max_epochs=5"`` applies to every router
whose config has that field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from mmroute.constraints import Integral, Interval, Options, Real, Validated, check
from mmroute.vocabulary import DEFAULT_DATA, DEFAULT_METRIC, FUSIONS, IMAGE_POLICIES, MODES, RULES, SPLITS

__all__ = ["PipelineConfig", "SPLITS", "RULES", "DEFAULT_DATA", "parse_router_options", "router_overrides",
           "check_router_options", "expand_routers", "convert_value", "split_list"]


def _field(default: Any, group: str, help: str, **meta: Any) -> Any:
    """A field with its CLI group and help (see :mod:`mmroute.cli.options`)."""
    return dataclasses.field(default=default, metadata={"group": group, "help": help, **meta})


@dataclass
class PipelineConfig(Validated):
    """Everything a pipeline run depends on (logged as params and as ``config.yaml``).

    Attributes
    ----------
    data : str
        Table path or spec for :func:`mmroute.data.load_table` (default: the embedded synthetic table).
    images : {"error", "warn", "ignore"}
        Policy for image paths that name no file.
    dataset : str or None
        Keep only these datasets (``"ocrbench+mathvista"``).
    image_root : str or None
        The folder every image path must resolve into (None: the table's folder).
    allow_outside_images : bool
        Accept image paths outside the image root (trusted tables only).
    split : {"in", "out", "column"}
        Random seeded split, by dataset, or by an explicit column of the table.
    train_frac, split_seed : float, int
        The "in" split (MMR-Bench reference: 0.2 and 42).
    train_datasets, test_datasets : tuple of str
        The "out" split (no test datasets: every dataset not trained on).
    split_column : str
        The "column" split (rows whose value is "train" train, the rest test).
    mode : int or None
        MMR-Bench modality mode 11..33 (None: use what the table has).
    features, fusion : str
        Encoder spec and fusion for :func:`mmroute.features.build_feature_pipeline`.
    cache_dir, device : str or None
        Embedding cache root and encoder device (None: library defaults).
    routers : tuple of str
        Router names; ``("all",)`` means every registered router.
    router_options : tuple of str
        ``"<router>.<field>=<value>"`` overrides (see the module docstring).
    max_epochs : int or None
        Shorthand for ``"*.max_epochs=N"``.
    devices : int or None
        Shorthand for ``"*.devices=N"``: Lightning routers train with DDP over N processes/GPUs.
    rules : tuple of str
        Decision rules evaluated.
    select_metric : str
        Metric that names a sweep's best child (default ``budget/nAUC``; ``<first rule>/nAUC`` when
        the budget rule is not evaluated).
    experiment : str or None
        Experiment name (None: ``mmroute``, or the project run's experiment under ``mlflow run``).
    system_metrics : bool
        Also log CPU/GPU/memory system metrics.
    log_model : bool
        Log the fitted feature pipeline and router (pickles) so ``evaluate`` can re-score them.
    small, large : str or None
        Restrict the pool to these two models, in this order (rows where either outcome is
        missing are dropped), for every router: the probe routers' pool.
    probe_backbone, probe_layer : str and int, or None
        The small model (a local path) whose hidden states up to layer ``probe_layer`` the probe
        routers (``probe``, ``attention_probe``, ``relope``) read; needs ``small`` and ``large``.
    probe_cache : str or None
        Hidden-state cache root (default: ``<cache_dir>/probe-states/<backbone identity>``).
    probe_prefill : str
        The prefill share a deferred query pays for the small model (:mod:`mmroute.probes.costs`):
        ``auto``, ``tokens`` or a fraction in [0, 1].
    probe_token_cap, probe_batch_size, probe_dtype : extraction options (text tokens per query,
        batch size, backbone dtype such as ``bfloat16`` on a GPU).
    probe_serve_backbone : {"package", "reference"}
        The served probe model carries the backbone weights, or references their local path.
    """

    data: str = _field(DEFAULT_DATA, "data", "table path or spec (e.g. data/MMR_Bench.csv, root/ocrbench+mathvista, "
                       "synthetic:n=1000,seed=0)")
    images: str = _field("warn", "data",
                         "image paths that name no file: fail, warn and drop the image, or skip the check")
    dataset: str | None = _field(None, "data", "keep only these datasets ('a+b')")
    image_root: str | None = _field(None, "data", "folder every image path must resolve into (empty: the "
                                    "table's folder)", metavar="DIR")
    allow_outside_images: bool = _field(False, "data", "accept image paths outside the image root (../, absolute, "
                                        "symlinks out): only for tables you trust")
    split: str = _field("in", "split and modality", "seeded random rows (in), by dataset (out), or by a column")
    train_frac: float = _field(0.5, "split and modality", "'in' split: training share in (0, 1), or a row count >= 2")
    split_seed: int = _field(42, "split and modality", "'in' split seed")
    train_datasets: tuple[str, ...] = _field((), "split and modality", "'out' split: training datasets "
                                             "(comma-separated)")
    test_datasets: tuple[str, ...] = _field((), "split and modality", "'out' split: test datasets (comma-separated; "
                                            "empty: every other dataset)")
    split_column: str = _field("split", "split and modality", "'column' split: rows whose value is 'train' train")
    mode: int | None = _field(None, "split and modality", "MMR-Bench modality mode 11..33 (empty: as the table is)")
    features: str = _field("offline", "features", "encoder spec: offline, openclip:MODEL[:PRETRAINED], "
                           "st:NAME_OR_PATH, precomputed:FILE.npy, column:NAME")
    fusion: str = _field("mean", "features", "fusion of text and image features")
    cache_dir: str | None = _field(None, "features", "embedding cache root (empty: $MMROUTE_CACHE_DIR or "
                                   "./.mmroute/cache)")
    device: str | None = _field(None, "features", "encoder device (empty: the encoder's choice)")
    routers: tuple[str, ...] = _field(("all",), "routers", "router names, comma-separated, or 'all'")
    router_options: tuple[str, ...] = _field((), "routers", "router option ROUTER.FIELD=VALUE, repeatable, several "
                                             "space-separated per flag; '*.FIELD' = every router with that field",
                                             flag="--set", aliases=("--router-options",), append=True,
                                             metavar="ROUTER.FIELD=VALUE")
    max_epochs: int | None = _field(None, "routers", "cap the epochs of every Lightning router (0 or empty: the "
                                    "routers' defaults)")
    devices: int | None = _field(None, "routers", "train every Lightning router with DDP over N processes (CPU) "
                                 "or GPUs (empty: 1)")
    rules: tuple[str, ...] = _field(RULES, "routers", "decision rules evaluated (comma-separated)")
    select_metric: str = _field(DEFAULT_METRIC, "routers", "metric naming a sweep's best child")
    experiment: str | None = _field(None, "tracking", "MLflow experiment name (empty: mmroute, or the mlflow run's)")
    system_metrics: bool = _field(False, "tracking", "also log CPU/GPU/memory system metrics")
    log_model: bool = _field(True, "tracking", "log the fitted feature pipeline and router (evaluate and export "
                             "need them)")
    small: str | None = _field(None, "probe routers", "restrict the pool to [small, large] (this model first; "
                               "rows missing either outcome are dropped), for every router")
    large: str | None = _field(None, "probe routers", "the large model queries are deferred to")
    probe_backbone: str | None = _field(None, "probe routers", "local path of the small model whose hidden states "
                                        "the probe routers (probe, attention_probe, relope) read")
    probe_layer: int | None = _field(None, "probe routers", "layer l of the backbone the probe heads read (1-based)")
    probe_cache: str | None = _field(None, "probe routers", "hidden-state cache directory (empty: under the cache "
                                     "root, named by the backbone identity)")
    probe_prefill: str = _field("auto", "probe routers", "prefill share of the small model's cost a deferred query "
                                "pays: auto (tokens when the table has <small>_in_tokens/_out_tokens, else 0.5), "
                                "tokens, or a fraction")
    probe_token_cap: int | None = _field(None, "probe routers", "max text tokens per query for the backbone")
    probe_batch_size: int = _field(8, "probe routers", "extraction batch size")
    probe_dtype: str | None = _field(None, "probe routers", "backbone dtype, e.g. bfloat16 on a GPU (empty: the "
                                     "checkpoint's)")
    probe_serve_backbone: str = _field("package", "probe routers", "the served probe model carries the backbone "
                                       "weights (package) or references their local path (reference)")

    @property
    def probes(self) -> bool:
        """Whether the probe routers can run (a backbone and a layer are given)."""
        return self.probe_backbone is not None

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "images": [Options(IMAGE_POLICIES)],
        "split": [Options(SPLITS)],
        "split_seed": [Interval(Integral, 0, None, closed="left")],
        "mode": [Options(MODES), None],
        "fusion": [Options(FUSIONS)],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "probe_layer": [Interval(Integral, 1, None, closed="left"), None],
        "probe_batch_size": [Interval(Integral, 1, None, closed="left")],
        "probe_serve_backbone": [Options(("package", "reference"))],
        "devices": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __post_init__(self) -> None:
        for name in ("train_datasets", "test_datasets", "routers", "router_options", "rules"):
            value = getattr(self, name)
            setattr(self, name, tuple(split_list(value)) if isinstance(value, str) else tuple(value))
        if self.select_metric == DEFAULT_METRIC and self.rules and DEFAULT_METRIC.split("/")[0] not in self.rules:
            # The default metric's rule is not evaluated: rank by the first rule's nAUC instead.
            self.select_metric = f"{self.rules[0]}/nAUC"
        super().__post_init__()

    def problems(self) -> list[str]:
        """Every configuration problem (declared constraints, then cross-field checks), reported together."""
        out = check(self)
        if self.split == "in":
            share = Interval(Real, 0, 1, closed="neither").is_satisfied_by(self.train_frac)
            # 1.0 is not "one row": read as a share it would leave nothing to test on.
            count = Interval(Real, 2, None, closed="left").is_satisfied_by(self.train_frac) and \
                float(self.train_frac).is_integer()
            if not (share or count):
                out.append(f"train_frac={self.train_frac!r} (expected a share in (0, 1), exclusive, or a "
                           "training row count >= 2 that leaves test rows)")
        if self.split == "out" and not self.train_datasets:
            out.append("split='out' needs train_datasets (test_datasets default: every other dataset)")
        if self.split != "out" and (self.train_datasets or self.test_datasets):
            out.append(f"train_datasets/test_datasets are only used with split='out', not {self.split!r}")
        bad_rules = [r for r in self.rules if r not in RULES]
        if bad_rules or not self.rules:
            out.append(f"rules={list(self.rules)!r} (expected a non-empty subset of {list(RULES)})")
        if not self.routers:
            out.append("routers is empty (expected router names or 'all')")
        rule = self.select_metric.split("/")[0]
        if rule not in RULES + ("fit_seconds",) and "/" in self.select_metric:
            out.append(f"select_metric={self.select_metric!r} (expected '<rule>/<metric>' with rule in "
                       f"{list(RULES)}, e.g. {DEFAULT_METRIC!r})")
        if rule in RULES and rule not in self.rules:
            out.append(f"select_metric={self.select_metric!r} needs rule {rule!r} in rules={list(self.rules)}")
        for item in self.router_options:
            if "=" not in item or "." not in item.split("=", 1)[0]:
                out.append(f"router option {item!r} (expected '<router>.<field>=<value>')")
        out.extend(self._probe_problems())
        return out

    def _probe_problems(self) -> list[str]:
        from mmroute.probes.costs import parse_prefill

        out = []
        if (self.small is None) != (self.large is None):
            out.append(f"small={self.small!r}, large={self.large!r} (give both models of the pool, or neither)")
        elif self.small is not None and self.small == self.large:
            out.append(f"small and large are both {self.small!r} (expected two different models)")
        if (self.probe_backbone is None) != (self.probe_layer is None):
            out.append(f"probe_backbone={self.probe_backbone!r}, probe_layer={self.probe_layer!r} "
                       "(the probe routers need both)")
        if self.probe_backbone is not None and self.small is None:
            out.append("probe_backbone needs small and large (the probe routes over [small, large])")
        try:
            parse_prefill(self.probe_prefill)
        except ValueError as exc:
            out.append(str(exc))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> PipelineConfig:
        return dataclasses.replace(self, **changes)


def split_list(value: str) -> list[str]:
    # Comma- or whitespace-separated (MLproject passes one string per parameter).
    return [p for p in (x.strip() for x in value.replace(",", " ").split()) if p]


def expand_routers(names: Sequence[str], *, hidden_states: bool = False) -> list[str]:
    """``("all",)`` -> every router on query features (plus the probe routers when
    ``hidden_states``, i.e. a backbone and layer are given); otherwise the names, checked against
    the registry."""
    from mmroute.routers import list_routers

    known = list_routers() + (list_routers("hidden_states") if hidden_states else [])
    if list(names) == ["all"]:
        return sorted(known)
    probes = [n for n in names if n in list_routers("hidden_states") and n not in known]
    if probes:
        raise ValueError(f"router(s) {probes} read a small model's hidden states: give --probe-backbone PATH "
                         "--probe-layer L --small MODEL --large MODEL2")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown router(s) {unknown}; valid names: {', '.join(sorted(known))} (or 'all')")
    return list(dict.fromkeys(names))


def parse_router_options(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["knn.k=20", "*.max_epochs=5"]`` -> ``{"knn": {"k": "20"}, "*": {"max_epochs": "5"}}``
    (values still strings; :func:`router_overrides` converts them per router)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        router, dot, fld = key.strip().partition(".")
        if not sep or not dot or not router or not fld:
            raise ValueError(f"router option {item!r}: expected '<router>.<field>=<value>'")
        out.setdefault(router, {})[fld.strip()] = value.strip()
    return out


def router_overrides(name: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Typed config overrides for router ``name``: ``*`` options and ``max_epochs`` where the router's
    config has the field, then the router's own options (which must name real fields)."""
    from mmroute.routers import router_class

    config_cls = router_class(name).config_class
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    parsed = parse_router_options(cfg.router_options)
    raw: dict[str, str] = {}
    if cfg.max_epochs is not None and "max_epochs" in fields:
        raw["max_epochs"] = str(cfg.max_epochs)
    if cfg.devices is not None and "devices" in fields:
        raw["devices"] = str(cfg.devices)
    raw.update({k: v for k, v in parsed.get("*", {}).items() if k in fields})
    own = parsed.get(name, {})
    unknown = sorted(set(own) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for router {name!r}; valid: {sorted(fields)}")
    raw.update(own)
    return {k: convert_value(v, hints[k], f"{name}.{k}") for k, v in raw.items()}


def check_router_options(cfg: PipelineConfig, names: Sequence[str]) -> None:
    """Fail before any work when a router option names a router not in the run, or a bad field or
    value for one that is (instead of a silently ignored option or a FAILED child run later)."""
    parsed = parse_router_options(cfg.router_options)
    stray = [r for r in parsed if r != "*" and r not in names]
    if stray:
        items = [i for i in cfg.router_options if i.split(".", 1)[0].strip() in stray]
        raise ValueError(f"router option(s) {items} name router(s) {stray} that are not in this run; "
                         f"the run trains {list(names)} (use '*.<field>=<value>' for every router)")
    for name in names:
        router_overrides(name, cfg)  # unknown fields and unconvertible values raise here


def convert_value(text: str, hint: Any, what: str) -> Any:
    """Convert a CLI string to a dataclass field type (int, float, bool, str, tuples, Optional)."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if text.lower() in ("none", "null", ""):
            return None
        return convert_value(text, args[0], what) if len(args) == 1 else _first_ok(text, args, what)
    if origin in (tuple, list):
        inner = args[0] if args else str
        items = [convert_value(p, inner, what) for p in split_list(text)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{what}={text!r}: expected a boolean (true/false)")
    if hint is int:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{what}={text!r}: expected an integer") from None
        if not value.is_integer():
            raise ValueError(f"{what}={text!r}: expected an integer")
        return int(value)
    if hint is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{what}={text!r}: expected a number") from None
        if math.isnan(value):
            raise ValueError(f"{what}={text!r}: expected a number, not NaN")
        return value
    return text


def _first_ok(text: str, types: Sequence[Any], what: str) -> Any:
    for t in types:
        try:
            return convert_value(text, t, what)
        except ValueError:
            continue
    raise ValueError(f"{what}={text!r}: expected one of {types}")
