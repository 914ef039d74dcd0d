"""The build targets, found through one table (docs/BUILD.md).

`mlship build` takes its --target choices, its options and their help from TARGETS, and hands each target only
the options it declares. Adding a target is one module ending with `TARGET = Target(...)` (mlship/targets/
options.py), its templates, its page in docs/, its tests, and one entry here. A target module imports at module
level only what declaring it needs: its build steps import the rest, so `mlship --help` stays fast.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import BuildError
from . import docker, k8s, onprem
from .options import Option, Target

TARGETS: dict[str, Target] = {target.name: target for target in (docker.TARGET, onprem.TARGET, k8s.TARGET)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise BuildError(f"unknown target {name!r}",
                         hint="use " + " or ".join(f"--target {known}" for known in TARGETS)) from None


def all_options() -> list[tuple[Option, tuple[str, ...]]]:
    """Every target's options once each, in table order, with the names of the targets that take it.

    An option two targets share keeps its flags, type and env var (TypeError otherwise). When their help texts
    or defaults differ, each target's help (and default) is shown after its name, and the command line's default
    is None: an option the user does not set never reaches a target, which then keeps its own default.
    """
    declared: dict[str, list[tuple[str, Option]]] = {}
    for target in TARGETS.values():
        target.check()
        for option in target.options:
            same = declared.setdefault(option.param, [])
            if same and not same[0][1].same_as(option):
                names = ", ".join(name for name, _ in same)
                raise TypeError(f"targets {names} and {target.name} declare {option.flag} differently")
            same.append((target.name, option))
    return [(_merge(same), tuple(name for name, _ in same)) for same in declared.values()]


def _merge(same: list[tuple[str, Option]]) -> Option:
    first = same[0][1]
    defaults = {repr(option.default) for _, option in same}
    if len({option.help for _, option in same}) == 1 and len(defaults) == 1:
        return first
    if len(defaults) == 1:
        return replace(first, help="; ".join(f"{name}: {option.help}" for name, option in same))
    parts = [f"{name}: {option.help}" + ("" if option.default is None else f" (default {option.default})")
             for name, option in same]
    return replace(first, help="; ".join(parts), default=None)


__all__ = ["TARGETS", "Option", "Target", "all_options", "get_target"]
