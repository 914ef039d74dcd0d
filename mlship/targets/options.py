"""What every build target declares (its options, its build function), and how `mlship build` finds its bundle.

A target is one module that ends with `TARGET = Target(...)`; mlship/targets/__init__.py lists them in one table
and everything else (the CLI's --target choices, its options and their help, the checks that an option was given
to a target that takes it) is derived from that table (docs/BUILD.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BuildError

if TYPE_CHECKING:
    from ..sbom.licenses import LicensePolicy

StepCallback = Callable[[str], None]


def cache_dir(env_var: str, name: str) -> Path:
    """$ENV_VAR, else ~/.cache/mlship/NAME (XDG_CACHE_HOME respected)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlship" / name


def default_wheel_cache() -> Path:
    return cache_dir("MLSHIP_WHEEL_CACHE", "wheels")


@dataclass
class BuildOptions:
    """What every target's options object has: where progress goes."""

    on_step: StepCallback | None = None


@dataclass
class WheelOptions(BuildOptions):
    """Options of the targets that install the bundle's wheels (resolved on the host, wheelhouse.py)."""

    platform: str = "linux/amd64"
    wheel_cache: Path = field(default_factory=default_wheel_cache)
    deny_licenses: list[str] = field(default_factory=list)  # SPDX ids; [tool.mlship] deny_licenses when empty
    deny_unknown_licenses: bool = False

    def license_policy(self) -> LicensePolicy:
        """The license gate for the wheels: these options, else [tool.mlship] of ./pyproject.toml (sbom/licenses.py)."""
        from ..notebook.config import license_policy, read_config

        return license_policy(read_config(Path.cwd()), self.deny_licenses, self.deny_unknown_licenses)


class BuildResult(Protocol):
    def rows(self) -> list[tuple[str, str]]: ...

    def to_json(self) -> dict[str, Any]: ...

    @property
    def ok(self) -> bool: ...


@dataclass(frozen=True)
class Option:
    """One command-line option of a target. `mlship build` declares the union of every target's options; two
    targets may share an option only with the same flags, type and env var (tests/unit/targets).

    `type` is what typer parses (str, Path, bool, list[str], optionally `| None`); `default` is the command line's
    default and is shown in --help; `convert` turns the parsed value into the options field's value.
    """

    field: str  # the attribute of the target's options object this sets
    flags: tuple[str, ...]  # e.g. ("-o", "--output"); the last one is the long flag
    type: Any
    help: str
    default: Any = None
    envvar: str | None = None
    convert: Callable[[Any], Any] | None = None

    @property
    def flag(self) -> str:
        return self.flags[-1]

    @property
    def param(self) -> str:
        """The CLI parameter's name, from the long flag: --no-test -> no_test."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def help_text(self) -> str:
        return f"{self.help} [env var: {self.envvar}]" if self.envvar else self.help

    def value(self, parsed: Any) -> Any:
        return self.convert(parsed) if self.convert else parsed

    def same_as(self, other: Option) -> bool:
        """Whether two targets can share this option on one command line (help texts may differ)."""
        return (self.flags, self.type, self.envvar) == (other.flags, other.type, other.envvar)


@dataclass(frozen=True)
class Target:
    """A build target: its name, what it makes, where it is documented, its options and its build function."""

    name: str
    summary: str  # what it makes, for `mlship build --help`: "a container image"
    docs: str  # the page that documents it, relative to the repository root
    options: tuple[Option, ...]
    options_type: type[BuildOptions]
    build: Callable[[Path, Any], BuildResult]  # build(bundle_dir, options_type instance)
    # build_service(service_file, options_type instance): one artifact serving every model of a service file
    # (docs/SERVICE.md); None for a target that builds one bundle only.
    build_service: Callable[[Path, Any], BuildResult] | None = None

    def option(self, param: str) -> Option | None:
        return next((o for o in self.options if o.param == param), None)

    def make_options(self, values: Mapping[str, Any], *, typed: Collection[str] = (),
                     others: Mapping[str, Target] | None = None) -> BuildOptions:
        """This target's options object from command-line values keyed by parameter name.

        `values` holds what the user set (on the command line or through an env var); the rest keep the options
        class's defaults. A parameter in `typed` (given on the command line) that this target does not take is a
        BuildError naming the targets (`others`) that do; one set only through an env var is ignored, since env
        vars are ambient settings shared by every target.
        """
        for param in typed:
            if self.option(param) is None:
                raise self._not_mine(param, others or {})
        kwargs = {o.field: o.value(values[o.param]) for o in self.options if o.param in values}
        return self.options_type(**kwargs)

    def _not_mine(self, param: str, others: Mapping[str, Target]) -> BuildError:
        owners = [(t.name, o) for t in others.values() if (o := t.option(param)) is not None]
        if not owners:
            return BuildError(f"--target {self.name} has no option {param!r}", exit_code=2)
        flag = "/".join(owners[0][1].flags)
        names = " or ".join(f"--target {name}" for name, _ in owners)
        return BuildError(f"{flag} is only for {names}, not --target {self.name}",
                          hint=f"drop {flag}, or build with {names}", exit_code=2)

    def check(self) -> None:
        """The declaration is consistent: every option sets a field of options_type, no flag twice."""
        names = {f.name for f in fields(self.options_type)}
        for option in self.options:
            if option.field not in names:
                raise TypeError(f"target {self.name}: option {option.flag} sets {option.field!r}, which "
                                f"{self.options_type.__name__} does not have")
        flags = [flag for option in self.options for flag in option.flags]
        if len(flags) != len(set(flags)):
            raise TypeError(f"target {self.name} declares a flag twice: {flags}")


# Options several targets share: declared once, listed by each target that takes them.
PLATFORM = Option("platform", ("--platform",), str, "Target platform: linux/amd64 or linux/arm64.",
                  default="linux/amd64", envvar="MLSHIP_PLATFORM")
WHEEL_CACHE = Option("wheel_cache", ("--wheel-cache",), Path | None,
                     "Where downloaded wheels are cached (default ~/.cache/mlship/wheels).",
                     envvar="MLSHIP_WHEEL_CACHE", convert=lambda v: v or default_wheel_cache())
DENY_LICENSES = Option("deny_licenses", ("--deny-licenses",), list[str] | None,
                       "Fail when a wheel's license needs one of these SPDX ids, e.g. GPL-3.0-only,AGPL-3.0-only "
                       "(default: [tool.mlship] deny_licenses of ./pyproject.toml).", envvar="MLSHIP_DENY_LICENSES",
                       convert=lambda v: list(v or []))
DENY_UNKNOWN_LICENSES = Option("deny_unknown_licenses", ("--deny-unknown-licenses",), bool,
                               "Fail, rather than warn, when a wheel has no recognizable license.", default=False)


def find_bundle(dist: Path = Path("dist")) -> Path:
    """The most recently written bundle under dist/ (newest mlship.json)."""
    from ..runtime._contract import MANIFEST_NAME  # not at module level: declaring targets stays cheap

    manifests = sorted(dist.glob(f"*/{MANIFEST_NAME}"), key=lambda p: p.stat().st_mtime) if dist.is_dir() else []
    if not manifests:
        raise BuildError(
            f"no bundle found under {dist}/",
            hint="package a notebook first (mlship package NOTEBOOK.ipynb), pass --bundle PATH, or give the "
            "notebook to build: mlship build NOTEBOOK.ipynb --target docker",
        )
    return manifests[-1].parent
