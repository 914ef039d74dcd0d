"""One served model: what its bundle says, its runner once loaded, and whether it is ready.

The service (_state.AppState: settings, metrics, the access log, draining) holds its models; an endpoint asks
the model for its name, methods, schema and runner, and never reads the manifest itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._bundle import LoadedBundle
from ._codec import encode_json, replace_non_finite
from ._contract import CaseResult, Golden, InputSchema, Manifest
from ._example import synthetic_example
from ._http import HttpError
from ._inference import Runner
from ._metrics import Metrics
from ._schema import Checked, InputError, check_request
from ._settings import Settings
from ._values import quote_names
from ._verify import replay_case, replay_golden

logger = logging.getLogger(__name__)

# Distinct sets of ignored columns remembered (and so logged once each); beyond, each new set is logged every time.
_MAX_IGNORED_SETS = 256
# Characters of a failed golden case's expected or actual output shown in /metadata (and so on the page).
_MAX_SHOWN_CHARS = 2000


@dataclass(eq=False)
class ModelHandle:
    """A model of the service. `runner` (predictor callables, batching, deadlines) is None until it loads;
    `limits` are the request limits it is served with."""

    manifest: Manifest
    golden: Golden
    limits: Settings
    runner: Runner | None = None
    ready: bool = False
    not_ready: str = "the model is still loading"
    _ignored_seen: set[tuple[str, ...]] = field(default_factory=set, repr=False)
    # {golden case id: its result} once the cases are replayed at start-up (check_ready); the page shows them.
    replayed: dict[str, CaseResult] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def method_names(self) -> list[str]:
        return self.manifest.method_names

    @property
    def default_method(self) -> str:
        """What a protocol without method names calls (MLflow's /invocations): predict, else the first."""
        return self.manifest.default_method

    @property
    def schema(self) -> InputSchema:
        return self.manifest.input

    @property
    def mlship_version(self) -> str:
        return self.manifest.mlship_version or self.manifest.runtime_version

    @property
    def example(self) -> Any:
        """The example row the server publishes: synthetic unless MLSHIP_PUBLISH_EXAMPLE=1 (see _example)."""
        return self.schema.example if self.limits.publish_example else synthetic_example(self.schema)

    def metadata(self) -> dict[str, Any]:
        """The /metadata answer: the example as `example` says, exact versions unless MLSHIP_PUBLISH_VERSIONS=0."""
        manifest = self.manifest
        python, requirements = manifest.python.to_json(), list(manifest.requirements)
        if not self.limits.publish_versions:
            # Names and Python's major.minor only: which packages, not which releases (a shortcut to known CVEs).
            python = {**python, "version": ".".join(str(python.get("version", "")).split(".")[:2])}
            requirements = [_project_name(requirement) for requirement in requirements]
        return {
            "name": manifest.name,
            "version": manifest.version,
            "runtime_version": manifest.runtime_version,
            "created_at": manifest.created_at or None,
            "python": python,
            "requirements": requirements,
            # Only what a client sends: the columns the served path ignores are no part of the published schema.
            "input": {**_client_schema(manifest.input), "example": self.example},
            "batch_safe": manifest.batch_safe,
            "methods": self.method_names,
            "source": None if manifest.source is None else manifest.source.to_json(),
        }

    def start(self, bundle: LoadedBundle, metrics: Metrics, after: Callable[[Callable[[], None]], None]) -> None:
        """Serve the loaded `bundle` (its predictor imported) with a runner of its own."""
        self.runner = Runner(bundle, self.limits, metrics, after)

    def check_ready(self) -> None:
        """Ready means "serves what the notebook computed", not just "imported": every golden case replays.

        The first case alone and timed (a model slow from its first call then runs off the event loop from the
        first request on), the rest merged into calls of up to MLSHIP_MAX_BATCH_ROWS rows where the bundle is
        batch-safe, one by one otherwise (see replay_golden). Any case that does not match keeps the server
        not ready, as `mlship verify` fails on any case; the page shows each case's result."""
        runner = self.loaded_runner()
        bundle = runner.bundle
        first, *rest = bundle.golden.cases
        started = time.perf_counter()
        results = [replay_case(bundle, first)]
        runner.expect(first.method, time.perf_counter() - started)
        results += replay_golden(bundle, rest, batch_rows=runner.max_batch_rows)
        self.replayed = {result.id: result for result in results}
        failed = [result for result in results if not result.ok]
        seconds = time.perf_counter() - started
        if not failed:
            self.ready = True
            logger.info("ready: %s %s loaded, its %d golden cases match (replayed in %.3f s)", self.name,
                        self.version, len(results), seconds)
            return
        more = f" ({len(failed)} of {len(results)} golden cases do not match)" if len(failed) > 1 else ""
        self.not_ready = f"golden case {failed[0].id} does not match: {failed[0].detail}{more}"
        logger.error("not ready: %s", self.not_ready)

    def golden_status(self) -> list[dict[str, Any]]:
        """Each golden case (id, method, rows) and what replaying it at start-up gave: "passed", "failed" (with
        why, and the expected and actual outputs), or "not replayed" (the model is still loading). Inputs are
        left out: they are the notebook's real rows (see _example)."""
        status = []
        for case in self.golden.cases:
            entry: dict[str, Any] = {"id": case.id, "method": case.method, "rows": len(case.instances)}
            result = self.replayed.get(case.id)
            entry["startup"] = "not replayed" if result is None else "passed" if result.ok else "failed"
            if result is not None and not result.ok:
                entry.update(detail=result.detail, expected=_bounded(result.expected),
                             actual=_bounded(result.actual))
            status.append(entry)
        return status

    def readiness(self) -> str | None:
        """None when ready to serve, else why not."""
        return None if self.ready else self.not_ready

    def loaded_runner(self) -> Runner:
        if self.runner is None:
            raise HttpError(503, "the model is not loaded yet")
        return self.runner

    def check_body(self, body: Any) -> Checked:
        """A parsed request body checked against the model's schema; HttpError 400 naming the problem if not.

        Columns the schema does not take are dropped (named in Checked.ignored and, see note_ignored, the log),
        or a 400 in strict mode (MLSHIP_STRICT_COLUMNS=1)."""
        return self.check_with(lambda: check_request(body, self.schema, max_rows=self.limits.max_rows,
                                                     strict=self.limits.strict_columns))

    def check_with(self, check: Callable[[], Checked]) -> Checked:
        """Run a protocol's input check: an InputError becomes a 400 naming the problem, an HttpError the check
        raises itself (say a 413) passes unchanged, and any other failure is a 400 "cannot decode the input".
        Then note the columns the model ignores."""
        try:
            checked = check()
        except HttpError:
            raise
        except InputError as exc:
            raise HttpError(400, exc.message) from None
        except Exception as exc:
            # Checking depends only on the request and the schema, so whatever fails here is the client's input.
            logger.warning("could not decode a request", exc_info=True)
            raise HttpError(400, f"cannot decode the input: {type(exc).__name__}: {exc}") from None
        self.note_ignored(checked)
        return checked

    def note_ignored(self, checked: Checked) -> None:
        """Log the columns a request sent that the model does not take: once per set of names (a client sends
        the same extras with every request, and a line per request would drown the log); the response header
        names them every time."""
        if not checked.ignored or checked.ignored in self._ignored_seen:
            return
        if len(self._ignored_seen) < _MAX_IGNORED_SETS:
            self._ignored_seen.add(checked.ignored)
        # quote_names: a client's names, escaped and bounded, so that none can break or forge a log line
        logger.info("ignoring columns the model does not take: %s (logged once per set of columns; "
                    "MLSHIP_STRICT_COLUMNS=1 refuses them)", quote_names(checked.ignored))


def _bounded(value: Any, limit: int = _MAX_SHOWN_CHARS) -> Any:
    """An output as /metadata shows it: NaN and infinities as null (JSON has neither), and as a truncated JSON
    text when its JSON is longer than `limit` characters (a case's output may be a whole image)."""
    value = replace_non_finite(value)
    text = encode_json(value).decode()
    return value if len(text) <= limit else text[: limit - 1] + "…"


def _client_schema(schema: InputSchema) -> dict[str, Any]:
    data = schema.to_json()
    data.pop("ignored", None)
    return data


def _project_name(requirement: str) -> str:
    """`scikit-learn==1.5.2` -> `scikit-learn` (a pin's name: up to its first version, marker or extra)."""
    for index, char in enumerate(requirement):
        if char in "=<>!~;[ @":
            return requirement[:index]
    return requirement
