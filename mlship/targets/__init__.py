"""The build targets, found through one table (docs/BUILD.md).

`mlship build` takes its --target choices, its options and their help from TARGETS, and hands each target only
the options it declares. Adding a target is one module ending with `TARGET = Target(...)` (mlship/targets/
options.py), its templates, its page in docs/, its tests, and one entry here. A target module imports at module
level only what declaring it needs: its build steps import the rest, so `mlship --help` stays fast.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import BuildError
from . import docker, onprem
from .options import Option, Target

TARGETS: dict[str, Target] = {target.name: target for target in (docker.TARGET, onprem.TARGET)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise BuildError(f"unknown target {name!r}",
                         hint="use " + " or ".join(f"--target {known}" for known in TARGETS)) from None


def all_options() -> list[tuple[Option, tuple[str, ...]]]:
    """Every target's options once each, in table order, with the names of the targets that take it.

    An option two targets share keeps its flags, type and default; when their help texts differ, both are
    shown, each after its target's name. TypeError when two targets declare one flag differently.
    """
    merged: dict[str, tuple[Option, tuple[str, ...]]] = {}
    for target in TARGETS.values():
        target.check()
        for option in target.options:
            if option.param not in merged:
                merged[option.param] = (option, (target.name,))
                continue
            first, owners = merged[option.param]
            if not first.same_as(option):
                raise TypeError(f"targets {', '.join(owners)} and {target.name} declare {option.flag} differently")
            if option.help != first.help:
                head = first.help if len(owners) > 1 else f"{owners[0]}: {first.help}"
                first = replace(first, help=f"{head}; {target.name}: {option.help}")
            merged[option.param] = (first, (*owners, target.name))
    return list(merged.values())


__all__ = ["TARGETS", "Option", "Target", "all_options", "get_target"]
