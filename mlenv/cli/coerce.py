"""Plain command-line values without pydantic: typer (0.2x) coerces every option that is not a flag
through a pydantic TypeAdapter, and importing pydantic and building the adapters cost each command
60-100 ms of start-up (`mlenv lock --check` is timed against `python -c pass`, bench/startup.py).

mlenv's options are strings, paths and flags (and lists of them); a flag not given is None to typer's
completion options, which builds an adapter too. For a value the command line already gave as
that type, the result is the one typer's adapter returns (the path goes through typer's own path checks);
any other value, or a parameter of another type, takes typer's own coercion, unchanged. This leans on
typer's internals (`_TyperParameter._runtime_param`): when they move, `use_plain_values` does nothing and
typer coerces as it always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

try:  # typer's internals: present since typer coerces through pydantic
    from typer._click import Context
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_path
    from typer.core import _TyperParameter
except ImportError:  # pragma: no cover - another typer: it keeps its own coercion
    RuntimeParam = None  # type: ignore[assignment,misc]

PLAIN = (str, Path, bool)


def _leaf(annotation: Any) -> tuple[type | None, bool]:
    """(str, Path or bool, whether it is a list of them), or (None, False) for anything else."""
    if get_origin(annotation) is list:
        args = get_args(annotation)
        leaf = args[0] if len(args) == 1 else None
        return (leaf, True) if leaf in PLAIN else (None, False)
    return (annotation, False) if annotation in PLAIN else (None, False)


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class PlainValue(RuntimeParam):
        """str, Path and bool values as typer's adapters make them, without building one."""

        leaf: type
        many: bool

        def _one(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
            if self.leaf in (str, bool) and isinstance(value, self.leaf):
                return value
            if self.leaf is Path and isinstance(value, str | Path):
                # typer's checks (exists, readable, ...) as its path adapter runs them, given a Path already
                return coerce_cli_path(Path(value), self.parameter_info, path_type=Path, param=param, ctx=ctx)
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)

        def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
            if self.many and isinstance(value, list | tuple):
                return [self._one(item, param, ctx) for item in value]
            if self.many:
                return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)
            return self._one(value, param, ctx)


def use_plain_values(command: Any, parent: Any = None) -> None:
    """Give every str/Path/bool parameter of `command` (a typer group or command, and its subcommands) the
    plain coercion; a parameter with a custom parser, or of another type, keeps typer's.

    `--help` is made per command on first use from its context's option names: made here the same way
    (in a context as click makes it, which caches the option), so it is covered too."""
    if RuntimeParam is None:  # pragma: no cover
        return
    context = Context(command, parent=parent, **command.context_settings)
    for param in [*command.params, command.get_help_option(context)]:
        if not isinstance(param, _TyperParameter) or param._runtime_param is not None:
            continue
        descriptor = param.type_descriptor
        leaf, many = _leaf(descriptor.annotation)
        if leaf is None or descriptor.parameter_info.parser is not None or descriptor.is_file:
            continue
        param._runtime_param = PlainValue(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, leaf=leaf, many=many
        )
    for sub in getattr(command, "commands", {}).values():
        use_plain_values(sub, context)
