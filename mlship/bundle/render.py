"""The one jinja2 environment: templates/ rendered with typed contexts, strict about undefined names."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from .._paths import TEMPLATES_DIR


def make_environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    # Values written into generated Python or Dockerfiles go through json.dumps: a valid, escaped string literal.
    env.filters["pyrepr"] = repr
    env.filters["quote"] = json.dumps
    # Values written into shell scripts: one single-quoted word, whatever they hold.
    env.filters["shquote"] = shlex.quote
    return env


@dataclass(frozen=True)
class SourceBlock:
    name: str
    cell: int
    source: str


@dataclass(frozen=True)
class PredictorContext:
    """Everything templates/predictor.py.jinja needs."""

    mlship_version: str
    notebook: str
    notebook_sha256: str
    reason: str
    imports: list[str]
    values: list[tuple[str, str]]  # (name, type) captured by value
    definitions: list[SourceBlock]
    methods: list[tuple[str, str]]  # (endpoint name, expression)
    input_name: str
    values_file: str = "artifacts/values.pkl"
    local_code: bool = False
    main_names: list[str] = field(default_factory=list)  # registered in __main__ before the values load
    early_definitions: list[SourceBlock] = field(default_factory=list)  # defined before the values load
    extra: dict[str, Any] = field(default_factory=dict)


def render(template: str, context: DataclassInstance) -> str:
    """Render templates/`template` with the fields of one typed context object (PredictorContext, ...)."""
    return str(make_environment().get_template(template).render(asdict(context)))
