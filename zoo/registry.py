"""The model registry: names → builders, default configs and metadata.

Modelled on timm's registry. A builder is a plain function whose keyword arguments *are* the model's
config: the defaults in its signature are the default config, and ``zoo.load(name, **overrides)``
may only override keys that the signature declares.

```
@register_model("cnn_mnist", family="cnn", dataset="mnist", paper="002_7240b1e8d13f6586.txt")
def cnn_mnist(filters=(20, 70, 256, 10), ..., learning_rate=1e-3) -> keras.Model: ...
```
"""

from __future__ import annotations

import contextvars
import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "ModelSpec",
    "UnknownModelError",
    "InvalidConfigError",
    "register_model",
    "register_variant",
    "shared_config",
    "get_spec",
    "list_models",
    "resolve_config",
    "ObjectiveSpec",
    "register_objective",
    "list_objectives",
]


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered. The message lists close matches."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class InvalidConfigError(ValueError):
    """Raised for an override that the model's config does not have, or a bad value."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the zoo knows about a registered model.

    Attributes:
        name: the canonical (registered) name, e.g. ``"cnn_mnist"``.
        family: the model family (one file in ``zoo/models/`` per family).
        builder: the function that builds the model from its config.
        default_config: the builder's keyword defaults, read-only.
        dataset: the dataset the model is trained on by default (a ``zoo.data`` name).
        paper: the paper file in ``shared/papers/`` the model implements, if any.
        description: one line for listings.
        training: default training settings for ``zoo-train`` (epochs, batch_size, eval_split,
            train_split, class_balanced: train on batches with every class equally often,
            interleaved, as models that train one network per class need).
        weights: weights-manifest tags available for this model (see ``zoo.weights``).
    """

    name: str
    family: str
    builder: Callable[..., Any]
    default_config: Mapping[str, Any]
    dataset: str | None = None
    paper: str | None = None
    description: str = ""
    training: Mapping[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> dict:
        from zoo import weights as _weights

        return _weights.available(self.name)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The default config with ``overrides`` applied; unknown keys are refused."""
        return resolve_config(self, overrides)


_REGISTRY: dict[str, ModelSpec] = {}
# The registered name of the model zoo.build is building, for builders shared by variants.
_BUILDING: contextvars.ContextVar[str | None] = contextvars.ContextVar("zoo_building", default=None)


def building_name(default: str) -> str:
    """Inside a builder: the registered name being built (a variant's, not its base's)."""
    return _BUILDING.get() or default


def build_model(spec: ModelSpec, config: Mapping[str, Any]) -> Any:
    """Call ``spec.builder(**config)`` with :func:`building_name` set to ``spec.name``; then wrap
    the model in every objective the config selects (see :func:`register_objective`)."""
    objectives = _selected_objectives(spec, config)
    own = {k: v for k, v in config.items() if k in spec.default_config}
    token = _BUILDING.set(spec.name)
    try:
        model = spec.builder(**own)
    finally:
        _BUILDING.reset(token)
    for objective in objectives:
        model = objective.wrap(model, **{k: config[k] for k in objective.defaults})
    return model


# -- objectives: training objectives that apply to any model -------------------------------------
@dataclass(frozen=True)
class ObjectiveSpec:
    """A training objective written once for any model it fits (noise training; later iCE or a
    reverse-pass term), selected by a config key.

    ``--set KEY=VALUE`` (``zoo.load(name, KEY=VALUE)``) on a model whose own config has no ``KEY``
    adds the objective's keys (``defaults``) to the model's config and builds
    ``wrap(model, **objective_config)``: a model that trains the wrapped one with the objective
    and serves its signatures. ``KEY=None`` (``--set KEY=none``) selects nothing.

    Attributes:
        key: the selecting config key, e.g. ``"noise"``; also the objective's name.
        wrap: ``wrap(model, **config) -> model``; raises InvalidConfigError for a model it does
            not fit.
        defaults: the objective's config keys, ``key`` included, with their defaults.
        choices: the values ``key`` takes (for messages).
        description: one line for listings.
    """

    key: str
    wrap: Callable[..., Any]
    defaults: Mapping[str, Any]
    choices: tuple[str, ...] = ()
    description: str = ""


_OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(
    key: str,
    *,
    defaults: Mapping[str, Any],
    choices: tuple[str, ...] = (),
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``wrap(model, **config)`` as the objective selected by ``key``."""

    def decorator(wrap: Callable[..., Any]) -> Callable[..., Any]:
        if key not in defaults:
            raise TypeError(f"objective {key!r}: defaults must include the key {key!r} itself")
        _OBJECTIVES[key] = ObjectiveSpec(
            key, wrap, MappingProxyType(dict(defaults)), tuple(choices), description
        )
        return wrap

    return decorator


def list_objectives() -> dict[str, ObjectiveSpec]:
    """The registered objectives by key."""
    _ensure_models_imported()
    return dict(_OBJECTIVES)


def _selected_objectives(spec: ModelSpec, config: Mapping[str, Any]) -> list[ObjectiveSpec]:
    # A model whose own config has the key (a registered noise-training model) owns the objective.
    return [
        o
        for o in _OBJECTIVES.values()
        if o.key not in spec.default_config and config.get(o.key) is not None
    ]


# Training defaults every model gets unless its registration says otherwise.
DEFAULT_TRAINING = MappingProxyType(
    {
        "epochs": 10,
        "batch_size": 128,
        "eval_split": "test",
        "train_split": "train",
        "class_balanced": False,
    }
)


def _builder_defaults(builder: Callable[..., Any]) -> dict[str, Any]:
    params = inspect.signature(builder).parameters.values()
    missing = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is inspect.Parameter.empty
    ]
    if missing:
        raise TypeError(
            f"builder {builder.__qualname__} must give every argument a default "
            f"(they form the model's config); no default for {missing}"
        )
    return {
        p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def register_model(
    name: str,
    *,
    family: str,
    dataset: str | None = None,
    paper: str | None = None,
    description: str | None = None,
    training: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers a builder under ``name`` (case-insensitive).

    Registering the same name twice with a different builder is an error, so two families can
    never silently shadow each other.
    """

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        key = name.lower()
        existing = _REGISTRY.get(key)
        if existing is not None and (
            existing.builder.__module__ != builder.__module__
            or existing.builder.__qualname__ != builder.__qualname__
        ):
            raise ValueError(f"model name {name!r} is already registered by {existing.builder}")
        doc = inspect.getdoc(builder) or ""
        spec = ModelSpec(
            name=name,
            family=family,
            builder=builder,
            default_config=MappingProxyType(_builder_defaults(builder)),
            dataset=dataset,
            paper=paper,
            description=description if description is not None else doc.split("\n", 1)[0],
            training=MappingProxyType({**DEFAULT_TRAINING, **(training or {})}),
        )
        _REGISTRY[key] = spec
        return builder

    return decorator


def shared_config(
    defaults: Mapping[str, Any],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator declaring config keys a family's builders share, once for all of them.

    The builder's signature gains a keyword parameter for every key of ``defaults`` that it does
    not declare itself (its own defaults win), so the keys are part of the model's config; the
    builder takes them through ``**kwargs``. Apply it below ``register_model``.
    """

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(builder).parameters
        params = [p for p in own.values() if p.kind is not p.VAR_KEYWORD] + [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
            for k, v in defaults.items()
            if k not in own
        ]

        @functools.wraps(builder)
        def wrapper(**config: Any) -> Any:
            return builder(**config)

        wrapper.__signature__ = inspect.Signature(params)
        return wrapper

    return decorator


def register_variant(
    name: str,
    of: Callable[..., Any],
    *,
    description: str,
    family: str | None = None,
    dataset: str | None = None,
    paper: str | None = None,
    training: Mapping[str, Any] | None = None,
    **defaults: Any,
) -> Callable[..., Any]:
    """Register ``name`` as the registered builder ``of`` with some defaults changed.

    ``register_variant("binary_cnn_mnist", cnn_mnist, binarize=True, description=...)`` gives a
    model whose config has the same keys as ``cnn_mnist``'s, so the two never drift apart.
    Metadata not given is taken from ``of``'s registration.
    """
    base = next((spec for spec in _REGISTRY.values() if spec.builder is of), None)
    if base is None:
        raise ValueError(f"{of.__qualname__} is not a registered builder")
    signature = inspect.signature(of)
    unknown = sorted(set(defaults) - set(signature.parameters))
    if unknown:
        raise TypeError(f"{of.__name__} has no argument(s) {unknown} to change for {name}")
    params = [
        p.replace(default=defaults.get(p.name, p.default)) for p in signature.parameters.values()
    ]

    def builder(**config: Any) -> Any:
        return of(**config)

    builder.__signature__ = signature.replace(parameters=params)
    builder.__name__ = builder.__qualname__ = name
    builder.__module__ = of.__module__
    builder.__doc__ = description
    register_model(
        name,
        family=family or base.family,
        dataset=dataset if dataset is not None else base.dataset,
        paper=paper if paper is not None else base.paper,
        description=description,
        training=training if training is not None else base.training,
    )(builder)
    return builder


def _ensure_models_imported() -> None:
    # Importing the families registers their models; done lazily so `import zoo.registry` is cheap.
    import zoo.models  # noqa: F401


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` registered under ``name`` (case-insensitive).

    Raises:
        UnknownModelError: no such model; the message lists the closest registered names.
    """
    _ensure_models_imported()
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    spec = _REGISTRY.get(name.lower())
    if spec is not None:
        return spec
    names = sorted(s.name for s in _REGISTRY.values())
    lowered = {n.lower(): n for n in names}
    close = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, n=5, cutoff=0.5)]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {name!r}.{hint} zoo.list_models() lists all {len(names)} registered models."
    )


def list_models(pattern: str | None = None, *, family: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a case-insensitive glob and a family.

    >>> list_models("*cnn*")
    ['binary_cnn_mnist', 'cnn_mnist']
    """
    _ensure_models_imported()
    names = []
    for spec in _REGISTRY.values():
        if family is not None and spec.family != family:
            continue
        if pattern is not None and not fnmatch.fnmatchcase(spec.name.lower(), pattern.lower()):
            continue
        names.append(spec.name)
    return sorted(names)


def resolve_config(spec: ModelSpec, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` into ``spec.default_config``, refusing keys the config does not have."""
    selected = _selected_objectives(spec, overrides)
    added = {k: v for o in selected for k, v in o.defaults.items()}
    # KEY=None selects no objective: accepted, and left out of the config.
    off = {o.key for o in _OBJECTIVES.values() if o.key not in spec.default_config}
    overrides = {k: v for k, v in overrides.items() if not (k in off and v is None)}
    unknown = sorted(set(overrides) - set(spec.default_config) - set(added))
    if unknown:
        valid = ", ".join(sorted(spec.default_config))
        hint = "".join(
            f" {', '.join(repr(k) for k in unknown if k in o.defaults)} belong(s) to the "
            f"{o.key!r} objective: select it with {o.key}="
            f"{'|'.join(o.choices) or 'VALUE'} as well."
            for o in _OBJECTIVES.values()
            if o.key not in spec.default_config and any(k in o.defaults for k in unknown)
        )
        raise InvalidConfigError(
            f"{spec.name} has no config key(s) {', '.join(map(repr, unknown))}. Valid keys: "
            f"{valid}{hint}"
        )
    config = dict(spec.default_config)
    config.update(added)
    config.update(overrides)
    return config
