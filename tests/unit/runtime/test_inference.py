"""Micro-batching and deadlines (mlship/runtime/_inference.py), driven on an event loop without HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime._bundle import load_bundle
from mlship.runtime._contract import InputSchema
from mlship.runtime._inference import ModelError, ModelTimeout, Runner
from mlship.runtime._schema import InputError, check_request
from mlship.runtime._settings import Settings

from .sample_bundles import edit_manifest

Calls = list[list[float]]


def runner_for(path: Path, method: Callable[[Any], Any], **settings: Any) -> Runner:
    bundle = load_bundle(path)
    return Runner(dataclasses.replace(bundle, methods={"predict": method}), Settings(**settings))


def recording(calls: Calls, output: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """A model that records the rows of each call and doubles x (or answers `output(frame)`)."""

    def predict(frame: Any) -> Any:
        calls.append(frame["x"].tolist())
        return output(frame) if output else (frame["x"] * 2).to_numpy()

    return predict


def rows(*values: float) -> Any:
    return {"instances": [{"x": value} for value in values]}


async def submit_together(runner: Runner, *bodies: Any) -> list[Any]:
    """Requests that arrive in the same event-loop iteration, as a burst read from several connections does."""
    schema = runner.bundle.schema
    tasks = [asyncio.ensure_future(runner.predict("predict", check_request(body, schema))) for body in bodies]
    return await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def raises_bundle(sample_bundle: Callable[[str], Path]) -> Path:
    return sample_bundle("raises")  # dataframe input with one number column, x


def test_concurrent_requests_are_merged_into_one_call(raises_bundle: Path) -> None:
    calls: Calls = []
    runner = runner_for(raises_bundle, recording(calls))
    results = asyncio.run(submit_together(runner, rows(1), rows(2, 3), rows(4)))
    assert calls == [[1, 2, 3, 4]]
    assert results == [[2.0], [4.0, 6.0], [8.0]]


def test_a_request_alone_runs_at_once(raises_bundle: Path) -> None:
    calls: Calls = []
    runner = runner_for(raises_bundle, recording(calls))

    async def main() -> Any:
        checked = check_request(rows(1), runner.bundle.schema)
        # Not even one loop iteration: the result is there when predict() first yields control.
        return await runner.predict("predict", checked, alone=True)

    assert asyncio.run(main()) == [2.0]
    assert calls == [[1]]


def test_batches_are_bounded_and_requests_never_split(raises_bundle: Path) -> None:
    calls: Calls = []
    runner = runner_for(raises_bundle, recording(calls), max_batch_rows=3)
    results = asyncio.run(submit_together(runner, rows(1, 2), rows(3, 4), rows(5, 6, 7, 8, 9), rows(10)))
    # 1+2 rows would exceed 3: the second request waits for the next call, where the last (1 row) joins it;
    # the 5-row request runs alone and whole.
    assert calls == [[1, 2, 10], [3, 4], [5, 6, 7, 8, 9]]
    assert results == [[2.0, 4.0], [6.0, 8.0], [10.0, 12.0, 14.0, 16.0, 18.0], [20.0]]


def test_max_batch_rows_1_turns_batching_off(raises_bundle: Path) -> None:
    calls: Calls = []
    runner = runner_for(raises_bundle, recording(calls), max_batch_rows=1)
    asyncio.run(submit_together(runner, rows(1), rows(2), rows(3)))
    assert calls == [[1], [2], [3]]


def test_a_failing_request_fails_alone(raises_bundle: Path) -> None:
    calls: Calls = []

    def predict(frame: Any) -> Any:
        calls.append(frame["x"].tolist())
        if (frame["x"] < 0).any():
            raise ValueError("negative")
        return (frame["x"] * 2).to_numpy()

    runner = runner_for(raises_bundle, predict)
    results = asyncio.run(submit_together(runner, rows(1), rows(-1), rows(3)))
    assert calls == [[1, -1, 3], [1], [-1], [3]]  # merged, raised, then each alone
    assert results[0] == [2.0] and results[2] == [6.0]
    assert isinstance(results[1], ModelError) and "model failed on this input" in str(results[1])


def test_an_output_without_one_entry_per_row_is_never_split(raises_bundle: Path) -> None:
    calls: Calls = []
    runner = runner_for(raises_bundle, recording(calls, output=lambda frame: float(frame["x"].sum())))
    results = asyncio.run(submit_together(runner, rows(1, 2), rows(3)))
    assert calls == [[1, 2, 3], [1, 2], [3]]
    assert results == [3.0, 3.0]


def test_unsafe_bundles_are_never_merged_and_run_row_by_row(make_bundle: Callable[[str], Path]) -> None:
    bundle = make_bundle("raises")
    edit_manifest(bundle, batch_safe=False)
    calls: Calls = []
    runner = runner_for(bundle, recording(calls))
    results = asyncio.run(submit_together(runner, rows(1, 2), rows(3)))
    assert calls == [[1], [2], [3]]
    assert results == [[2.0, 4.0], [6.0]]


def test_values_that_do_not_convert_fail_only_their_request(raises_bundle: Path) -> None:
    # int64 cannot hold 2**70: the merged conversion fails, then each request converts alone.
    schema = InputSchema.from_json({"kind": "dataframe", "columns": [{"name": "n", "type": "integer", "dtype": "int64"}]})
    loaded = load_bundle(raises_bundle)
    bundle = dataclasses.replace(loaded, manifest=dataclasses.replace(loaded.manifest, input=schema),
                                 methods={"predict": lambda f: f["n"]})
    runner = Runner(bundle, Settings())

    async def main() -> list[Any]:
        checked = [check_request({"instances": [{"n": n}]}, schema) for n in (1, 2**70)]
        tasks = [asyncio.ensure_future(runner.predict("predict", item)) for item in checked]
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, second = asyncio.run(main())
    assert first == [1]
    assert isinstance(second, InputError) and second.message.startswith('column "n": cannot convert the values')


def test_a_request_that_waited_past_its_deadline_does_not_run(raises_bundle: Path) -> None:
    calls: Calls = []
    runner = runner_for(raises_bundle, recording(calls), timeout=0.05)

    async def main() -> list[Any]:
        schema = runner.bundle.schema
        tasks = [asyncio.ensure_future(runner.predict("predict", check_request(rows(x), schema))) for x in (1, 2)]
        await asyncio.sleep(0)  # both are queued now, and the batch is due next
        time.sleep(0.1)  # the loop is blocked, like a worker busy with a long call
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert calls == []
    assert all(isinstance(result, ModelTimeout) for result in results)
    assert "waited 0.05 s for the model" in str(results[0])


def test_a_model_call_past_the_timeout_is_interrupted(sample_bundle: Callable[[str], Path]) -> None:
    # The slow sample sleeps in a Python loop that swallows Exception: the interrupt must get through.
    runner = Runner(load_bundle(sample_bundle("slow")), Settings(timeout=0.2))

    async def main() -> list[Any]:
        schema = runner.bundle.schema
        slow = runner.predict("predict", check_request(rows(5), schema), alone=True)
        first = await asyncio.gather(slow, return_exceptions=True)
        quick = await runner.predict("predict", check_request(rows(0.01), schema), alone=True)
        return [*first, quick]

    started = time.monotonic()
    timed_out, quick = asyncio.run(main())  # pytest runs tests in the main thread: SIGALRM applies
    assert time.monotonic() - started < 2
    assert isinstance(timed_out, ModelTimeout) and "ran past the 0.2 s timeout" in str(timed_out)
    assert quick == [0.02]


def test_batch_metrics_are_recorded_after_the_answers(raises_bundle: Path) -> None:
    observed: list[tuple[Any, ...]] = []
    pending: list[Callable[[], None]] = []

    class Metrics:
        def observe_call(self, *args: Any) -> None:
            observed.append(args[:3])

        def model_failed(self, method: str, reason: str) -> None:
            observed.append((method, reason))

    bundle = dataclasses.replace(load_bundle(raises_bundle), methods={"predict": lambda frame: frame["x"].to_numpy()})
    runner = Runner(bundle, Settings(), Metrics(), pending.append)  # type: ignore[arg-type]
    asyncio.run(submit_together(runner, rows(1), rows(2, 3)))
    assert observed == []  # nothing delays the responses
    for work in pending:
        work()
    assert observed == [("predict", 2, 3)]


def test_a_model_that_calls_sys_exit_fails_its_request_only(raises_bundle: Path) -> None:
    def predict(frame: Any) -> Any:
        if (frame["x"] < 0).any():
            raise SystemExit(1)
        return (frame["x"] * 2).to_numpy()

    runner = runner_for(raises_bundle, predict)
    results = asyncio.run(submit_together(runner, rows(1), rows(-1)))
    assert results[0] == [2.0] and isinstance(results[1], ModelError)
