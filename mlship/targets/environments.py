"""Which bundles of a service share one Python environment (docs/SERVICE.md "Environments").

Bundles whose pinned requirements agree share one environment; a bundle that pins another version of a package
(fraud 1.0.0 on scikit-learn==1.8.0, fraud 2.0.0 on scikit-learn==1.9.1), or that was packaged under another
Python, gets an environment of its own. Grouping is first fit in the service's order: each bundle joins the first
environment none of whose pins it contradicts, and that environment's pins become the union. The first bundles
keep the first environment, so adding a model to the end of a service file never moves the others.

`group_environments` is pure (pins in, environments out); the docker and onprem targets resolve each
environment's pins into one wheelhouse and one venv, and report the splits (`Split.describe`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

PYTHON = "python"  # the pseudo-package a Python major.minor conflict is reported under
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def canonical(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(requirements: Iterable[str]) -> dict[str, str]:
    """`name[extras]==1.2 ; marker` lines -> {canonical name: the rest, without spaces ("[extras]==1.2;marker")}.

    Two specs of a package agree only when they are the same text: `pandas>=2` and `pandas==2.2.3` disagree, so a
    loose pin never shares an environment with a different one by accident. Comments and blank lines are skipped.
    """
    pins: dict[str, str] = {}
    for line in requirements:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _NAME.match(text)
        if match is None:
            raise ValueError(f"{line!r} is not a requirement")
        rest = (match[2] or "") + text[match.end():]
        pins[canonical(match[1])] = re.sub(r"\s+", "", rest)
    return pins


@dataclass(frozen=True)
class Member:
    """One bundle to place: a label for messages ("fraud 1.0.0"), its Python major.minor and its pins."""

    label: str
    python: str
    pins: Mapping[str, str]  # canonical name -> spec, as parse_pins returns


@dataclass(frozen=True)
class Conflict:
    """One package on which a bundle disagrees with an environment it could not join."""

    package: str
    wanted: str  # this bundle's spec, e.g. "==1.8.0"
    found: str  # the environment's
    holders: tuple[str, ...]  # the environment's bundles that pin `found`

    def describe(self) -> str:
        if self.package == PYTHON:
            return f"Python {self.wanted} vs {self.found} ({', '.join(self.holders)})"
        return f"{self.package}{self.wanted} vs {self.package}{self.found} ({', '.join(self.holders)})"


@dataclass(frozen=True)
class Environment:
    name: str  # "env1", "env2", ... in the order they were opened
    python: str
    members: tuple[str, ...]  # labels, in the service's order
    pins: Mapping[str, str]  # the union of its members' pins

    def requirements(self) -> list[str]:
        """The union as requirement lines, sorted by name (what the wheelhouse resolves)."""
        return [f"{name}{spec}" for name, spec in sorted(self.pins.items())]


@dataclass(frozen=True)
class Split:
    """A bundle that could not join any earlier environment, and why: its conflicts with each of them."""

    member: str
    environment: str  # the one it went to
    conflicts: tuple[tuple[str, tuple[Conflict, ...]], ...]  # (environment name, its conflicts), in order

    def describe(self) -> str:
        reasons = "; ".join(f"{env}: " + ", ".join(c.describe() for c in conflicts)
                            for env, conflicts in self.conflicts)
        return f"{self.member} in {self.environment} ({reasons})"


@dataclass(frozen=True)
class Grouping:
    environments: tuple[Environment, ...]
    splits: tuple[Split, ...]
    placement: Mapping[str, str] = field(default_factory=dict)  # member label -> environment name

    def environment_of(self, label: str) -> Environment:
        name = self.placement[label]
        return next(env for env in self.environments if env.name == name)


def conflicts_with(member: Member, python: str, pins: Mapping[str, str],
                   holders: Mapping[str, tuple[str, ...]]) -> tuple[Conflict, ...]:
    """What `member` contradicts in an environment of `python` with `pins` (holders: package -> who pins it)."""
    found = []
    if member.python != python:
        found.append(Conflict(PYTHON, member.python, python, holders.get(PYTHON, ())))
    for package, spec in sorted(member.pins.items()):
        theirs = pins.get(package)
        if theirs is not None and theirs != spec:
            found.append(Conflict(package, spec, theirs, holders.get(package, ())))
    return tuple(found)


def group_environments(members: Sequence[Member]) -> Grouping:
    """Place every member in the first environment it agrees with, opening a new one when it agrees with none.

    Labels must be unique (a service has one model per name and version).
    """
    labels = [m.label for m in members]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels are not unique: {labels}")
    opened: list[tuple[str, str, dict[str, str], dict[str, tuple[str, ...]], list[str]]] = []
    splits: list[Split] = []
    placement: dict[str, str] = {}
    for member in members:
        seen: list[tuple[str, tuple[Conflict, ...]]] = []
        for name, python, pins, holders, names in opened:
            conflicts = conflicts_with(member, python, pins, holders)
            if not conflicts:
                _join(member, pins, holders, names)
                placement[member.label] = name
                break
            seen.append((name, conflicts))
        else:
            name = f"env{len(opened) + 1}"
            pins, holders, names = {}, {PYTHON: ()}, []
            _join(member, pins, holders, names)
            opened.append((name, member.python, pins, holders, names))
            placement[member.label] = name
            if seen:
                splits.append(Split(member.label, name, tuple(seen)))
    environments = tuple(Environment(name, python, tuple(names), dict(pins))
                         for name, python, pins, _, names in opened)
    return Grouping(environments, tuple(splits), placement)


def _join(member: Member, pins: dict[str, str], holders: dict[str, tuple[str, ...]], names: list[str]) -> None:
    names.append(member.label)
    holders[PYTHON] = (*holders.get(PYTHON, ()), member.label)
    for package, spec in member.pins.items():
        pins.setdefault(package, spec)
        holders[package] = (*holders.get(package, ()), member.label)


__all__ = ["Conflict", "Environment", "Grouping", "Member", "Split", "canonical", "conflicts_with",
           "group_environments", "parse_pins"]
