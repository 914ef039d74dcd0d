"""Fuzz a bundle's API from its own OpenAPI document with schemathesis' engine: every phase it has.

The engine is what `schemathesis run` drives (schemathesis' pytest plugin reads pytest's private Node._nodeid, which
pytest 9.2 removed): examples from the document, coverage (boundary and invalid values of each schema), fuzzing
(Hypothesis, valid and invalid requests, `max_examples` per operation) and stateful sequences along the links it
infers. Every response is checked: never a 5xx, always a documented status and content type, and a body that
matches the documented schema.

    run = fuzz_app(app, operations="model")
    assert not run.failures, run.report()

The operations that do not depend on the bundle (health, metrics, versions, the V2 server routes, and the V2
routes with a version in the path, which the unversioned ones share their handlers with) and the stateful phase
are the same for every bundle: `operations="all"` fuzzes them on one bundle, `operations="model"` fuzzes only
what the bundle's schema and methods change (its method routes, /invocations, /v2/models/{name}/infer and
/metadata), on every other bundle.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import schemathesis
from schemathesis.engine import events, from_schema

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance"]
# What the engine runs, in order; the first three prepare (a probe request, the schema's analysis, auth), the
# others send the generated requests.
PHASES = ("probing", "schema_analysis", "auth_bootstrap", "examples", "coverage", "fuzzing", "stateful")
MAX_EXAMPLES = 50  # per operation, in the fuzzing phase
STATEFUL_SCENARIOS = 15


@dataclass
class FuzzRun:
    """What one engine run did: operations and requests per phase, failures (one line each) and its time."""

    operations: set[str] = field(default_factory=set)
    cases: Counter[str] = field(default_factory=Counter)
    per_operation: Counter[tuple[str, str]] = field(default_factory=Counter)
    phases: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fuzzed(self, label: str) -> int:
        """How many requests the fuzzing phase sent to one operation."""
        return self.per_operation["fuzzing", label]

    def report(self) -> str:
        lines = [f"{len(self.operations)} operations, {sum(self.cases.values())} requests "
                 f"({dict(self.cases)}), phases {self.phases}, {self.seconds:.1f} s"]
        return "\n".join(lines + self.errors + self.failures[:20])


def fuzz_app(app: Any, *, operations: Literal["all", "model"], max_examples: int = MAX_EXAMPLES) -> FuzzRun:
    """Run every schemathesis phase against the ASGI `app` (in-process, no sockets) and collect what it found."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    if operations == "model":
        schema = schema.include(_is_model_operation)
    else:
        # Scenarios, each a sequence of up to 6 linked requests: 50 of them cost more than all the other phases
        # together (about 50 s on 2 busy cores), for routes that are the same on every bundle.
        schema.config.phases.stateful.generation.update(max_examples=STATEFUL_SCENARIOS)
    schema.config.generation.update(max_examples=max_examples, deterministic=True)
    schema.config.checks.update(included_check_names=CHECKS)
    if operations == "model":
        schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    run = FuzzRun()
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished):
            run.phases[event.phase.name.value] = event.status.value
        elif isinstance(event, events.ScenarioFinished):
            _record(run, event)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            run.errors.append(f"schemathesis error: {getattr(event, 'info', event)}")
    run.seconds = time.monotonic() - started
    return run


def _is_model_operation(ctx: Any) -> bool:
    """POST /<method>, /invocations, /v2/models/{name}/infer (not its versioned twin), GET /metadata."""
    operation = ctx.operation
    return (operation.method.upper() == "POST" and "/versions/" not in operation.path) or operation.path == "/metadata"


def _record(run: FuzzRun, event: events.ScenarioFinished) -> None:
    recorder = event.recorder
    phase = event.phase.value
    for case_id, node in recorder.cases.items():
        case = node.value
        label = case.operation.label  # the documented operation (coverage also tries other methods on its path)
        run.operations.add(label)
        run.cases[phase] += 1
        run.per_operation[phase, label] += 1
        for check in recorder.checks.get(case_id, []):
            if check.failure_info is not None:
                failure = check.failure_info.failure
                request = f"{case.method.upper()} {case.formatted_path} {_body(case)}"
                run.failures.append(f"[{phase}] {check.name}: {getattr(failure, 'title', failure)}: "
                                    f"{getattr(failure, 'message', '')[:300]} <- {request[:300]}")


def _body(case: Any) -> str:
    body = getattr(case, "body", None)
    return "" if body is None or type(body).__name__ == "NotSet" else repr(body)
