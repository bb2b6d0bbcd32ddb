"""Render an Engine's command, args and env templates into a container's argv and environment.

Templates come from Engine objects (written by cluster administrators or the catalog); values come
from Models and InferenceServices (written by anyone with namespace access). So, deliberately:

- Templates run in Jinja2's `ImmutableSandboxedEnvironment` with `StrictUndefined`, no globals, a
  short list of harmless filters, no method calls and no string formatting: a template cannot reach
  Python internals, read files, or build huge strings.
- Each template renders to exactly one argv element and is never split, so a value containing spaces
  or `--flag` stays one argument (the container runtime execs argv directly, with no shell).
- Values are inserted as data and never rendered again, so `{{ ... }}` inside a value stays literal.
- A missing variable is an `EngineTemplateError` naming the engine, the template and the variable.

Everything here is pure.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aima.api.engine import Engine, EngineArgsStyle, EngineVariant
from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.domain.sources import parse_source

__all__ = [
    "MAX_RENDERED_LENGTH",
    "EngineTemplateError",
    "render_args",
    "render_env",
    "render_flags",
    "template_context",
]

MAX_RENDERED_LENGTH: Final = 4096
"""Longest single argument or environment value a template may produce."""

_SAFE_FILTERS: Final = frozenset(
    {
        "default",
        "d",
        "lower",
        "upper",
        "trim",
        "replace",
        "int",
        "float",
        "string",
        "first",
        "last",
        "length",
        "join",
        "capitalize",
        "title",
        "abs",
        "round",
        "min",
        "max",
        "bool",
    }
)
_MAX_EXPONENT: Final = 64


class EngineTemplateError(ValueError):
    """A template of an engine could not be rendered; the message says which one and why."""

    def __init__(self, *, engine: str, template: str, problem: str, variable: str | None = None) -> None:
        self.engine = engine
        self.template = template
        self.problem = problem
        self.variable = variable
        super().__init__(f"Engine {engine!r}: template {template!r}: {problem}")


class _MissingVariable(jinja2.UndefinedError):
    """Raised with the dotted name of the missing variable as its message."""


class _Scope:
    """A read-only namespace that knows its own dotted path, for clear missing-variable errors.

    Deliberately not a dict: Jinja looks attributes up before items, and `model.items` or
    `model.values` would otherwise find dict methods instead of our variables.
    """

    __slots__ = ("_path", "_values")

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        self._path = path
        self._values = {k: _wrap(f"{path}.{k}" if path else k, v) for k, v in values.items() if v is not None}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    __iter__ = None  # a namespace is not a sequence; `{% for x in model %}` is a template error


def _wrap(path: str, value: Any) -> Any:
    return _Scope(path, value) if isinstance(value, Mapping) else value


class _StrictNamedUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose error message is just the full dotted variable name."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = jinja2.utils.missing,
        name: str | None = None,
        exc: type[jinja2.TemplateRuntimeError] = jinja2.UndefinedError,
    ) -> None:
        # Plain lookups fail with _MissingVariable; the sandbox's SecurityError hints stay as they are.
        super().__init__(hint, obj, name, _MissingVariable if exc is jinja2.UndefinedError else exc)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        parent = self._undefined_obj
        if isinstance(parent, _Scope):
            return f"{parent._path}.{self._undefined_name}"
        return str(self._undefined_name)


def _refuse(message: str) -> NoReturn:
    raise SecurityError(message)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, narrowed further: no method calls, no str.format, bounded arithmetic."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Templates only read data; refusing every callable closes str.format, list.pop and friends.
        return not callable(value) and super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        return None  # format specs such as {:>999999999} would allocate without limit

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**" and isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            _refuse(f"exponent {right} is too large")
        if operator_ in ("*", "%") and not (_is_number(left) and _is_number(right)):
            _refuse(f"'{operator_}' works on numbers only in engine templates")
        return _BINOPS[operator_](left, right)


_BINOPS: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "*": operator.mul,
    "**": operator.pow,
    "%": operator.mod,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _no_files(name: str) -> NoReturn:
    _refuse(f"templates cannot include, import or extend other templates or files ({name!r})")


def _environment() -> _Sandbox:
    env = _Sandbox(
        undefined=_StrictNamedUndefined,
        loader=jinja2.FunctionLoader(_no_files),
        autoescape=False,
        keep_trailing_newline=False,
    )
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    for name in set(env.filters) - _SAFE_FILTERS:
        del env.filters[name]
    env.tests.pop("sameas", None)
    return env


_ENV: Final = _environment()
# Compiling a template costs ~0.5 ms and every reconcile renders each engine's templates again:
# compile each distinct template once (errors are not cached, so a broken one raises every time).
_compiled: Final = functools.lru_cache(maxsize=512)(_ENV.from_string)


def _render_one(template: str, *, engine: str, context: _Scope) -> str:
    try:
        rendered = _compiled(template).render(context._values)
    except _MissingVariable as error:
        variable = str(error)
        raise EngineTemplateError(
            engine=engine, template=template, problem=f"undefined variable {variable!r}", variable=variable
        ) from None
    except SecurityError as error:
        raise EngineTemplateError(engine=engine, template=template, problem=f"refused: {error}") from None
    except jinja2.TemplateError as error:
        raise EngineTemplateError(engine=engine, template=template, problem=str(error)) from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as error:
        # A template that is wrong for its data (iterating a scalar, dividing by zero) is an engine bug
        # to report on the service, not a crash of the operator.
        problem = f"{type(error).__name__}: {error}"
        raise EngineTemplateError(engine=engine, template=template, problem=problem) from None
    return _checked(rendered, engine=engine, template=template)


def _checked(rendered: str, *, engine: str, template: str) -> str:
    if len(rendered) > MAX_RENDERED_LENGTH:
        problem = f"renders to {len(rendered)} characters, more than {MAX_RENDERED_LENGTH}"
        raise EngineTemplateError(engine=engine, template=template, problem=problem)
    if "\x00" in rendered:
        raise EngineTemplateError(engine=engine, template=template, problem="renders a NUL character")
    return rendered


def render_args(templates: Sequence[str], *, engine: str, context: Mapping[str, Any]) -> list[str]:
    """Render each template into one argv element, dropping the ones that render empty (pure).

    `context` holds the variables (`model`, `service`, `engine`) as nested mappings; None values are
    treated as absent, so a template must guard optional ones with `is defined` or `default`.
    """
    scope = _Scope("", context)
    rendered = (_render_one(template, engine=engine, context=scope) for template in templates)
    return [argument for argument in rendered if argument != ""]


def render_env(templates: Mapping[str, str], *, engine: str, context: Mapping[str, Any]) -> dict[str, str]:
    """Render environment variable values; names are taken as written, values may render empty (pure)."""
    scope = _Scope("", context)
    return {name: _render_one(value, engine=engine, context=scope) for name, value in templates.items()}


def render_flags(engine_args: Mapping[str, int | str], *, style: EngineArgsStyle, engine: str) -> list[str]:
    """An InferenceService's engineArgs as arguments in the engine's style (pure).

    Values are data, never templates, and each lands in its own argv element; an empty string gives a
    bare `--key` switch. Keys are checked by the CRD (no leading dashes, no spaces).
    """
    if engine_args and style is EngineArgsStyle.UNSUPPORTED:
        raise EngineTemplateError(
            engine=engine,
            template="engineArgs",
            problem="this engine takes no extra flags; remove engineArgs",
        )
    flags: list[str] = []
    for key, value in engine_args.items():
        if value == "":
            flags.append(f"--{key}")
        elif style is EngineArgsStyle.FLAG_AND_VALUE:
            flags.extend((f"--{key}", str(value)))
        else:
            flags.append(f"--{key}={value}")
    return flags


def template_context(
    *,
    model: Model,
    service: InferenceService,
    engine: Engine,
    variant: EngineVariant,
    model_path: str,
    gpus: int,
) -> dict[str, Any]:
    """The variables engine templates see (pure); the list is documented on Engine.spec.args.

    `model_path` is where the weights are inside the container and `gpus` the GPUs per replica, both
    decided by the InferenceService planner.
    """
    source = parse_source(model.spec.source)
    name = service.metadata.name or ""
    weights_file = model.status.weights_file if model.status else None
    model_format = model.spec.format or (model.status.format if model.status else None)
    return {
        "model": {
            "name": model.metadata.name,
            "source": model.spec.source,
            "type": str(model.spec.type),
            "format": str(model_format) if model_format else None,
            "path": model_path,
            "file": f"{model_path.rstrip('/')}/{weights_file}" if weights_file else None,
            "repo": source.repo if source.scheme in ("hf", "modelscope") else None,
            "revision": source.revision,
            "ollamaName": source.repo if source.scheme == "ollama" else None,
        },
        "service": {
            "name": name,
            "namespace": service.metadata.namespace,
            "servedName": service.spec.served_name or name,
            "gpus": gpus,
        },
        "engine": {
            "name": engine.metadata.name,
            "port": engine.spec.port,
            "variant": variant.name,
            "accelerator": str(variant.accelerator),
        },
    }
