"""The smoke test of a built image: start it, wait for readiness, replay the golden cases over HTTP, stop it."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import MlshipError
from ..runtime._contract import CaseResult
from ._docker_context import PORT

logger = logging.getLogger(__name__)

READY_TIMEOUT = 180.0
STOP_TIMEOUT = 10
NOT_READY_GRACE = 15.0


@dataclass(frozen=True)
class SmokeModel:
    """One model of the image to replay: its label in the results, bundle, route prefix and one method."""

    label: str
    bundle: Path
    prefix: str  # "" for a one-bundle image, "/models/NAME/versions/VERSION" for a service's
    method: str


@dataclass
class SmokeResult:
    ready_seconds: float | None = None
    cases: list[CaseResult] = field(default_factory=list)
    malformed_status: int | None = None
    stop_seconds: float | None = None
    exit_code: int | None = None
    failure: str | None = None  # why the test could not finish, with the container's last log lines

    @property
    def ok(self) -> bool:
        return (self.failure is None and bool(self.cases) and all(c.ok for c in self.cases)
                and self.malformed_status is not None and 400 <= self.malformed_status < 500)


def smoke_test(client: Any, image_id: str, bundle: Path, on_step: Callable[[str], None],
               ready_timeout: float = READY_TIMEOUT, models: Sequence[SmokeModel] | None = None) -> SmokeResult:
    """Run the image on a free loopback port and check it; the container is always removed.

    A service's image (several models behind one front) passes `models`: each model's golden cases are replayed
    under its own route prefix (/models/NAME/versions/VERSION), and the malformed request goes to the first one.
    """
    import docker

    routes = list(models) if models is not None else [SmokeModel("", bundle, "", "predict")]

    result = SmokeResult()
    container = client.containers.run(image_id, detach=True, ports={f"{PORT}/tcp": ("127.0.0.1", None)})
    try:
        start = time.monotonic()
        url = _published_url(container)
        on_step(f"smoke test: container {container.short_id} on {url}, waiting for /readyz")
        failure, answering = _wait_ready(container, url, ready_timeout)
        if failure:
            result.failure = f"{failure}\n{_log_tail(container)}"
            if not answering:
                return result
            # Not ready but serving (a golden case did not replay at start-up): the replay over HTTP below
            # names every case that differs, which the report shows beside the failure.
        else:
            result.ready_seconds = time.monotonic() - start
        on_step("smoke test: " + ("not ready" if failure else f"ready after {result.ready_seconds:.1f}s")
                + "; replaying the golden cases")
        # Imported here: it reads notebooks (nbformat, jsonschema), which a native build (no smoke test) never needs.
        from ..bundle.verify import verify_bundle

        for model in routes:
            try:
                cases = verify_bundle(model.bundle, url=url + model.prefix)
            except MlshipError as exc:
                where = f" of {model.label}" if model.label else ""
                result.failure = f"replaying the golden cases{where} failed: {exc.message}\n{_log_tail(container)}"
                return result
            result.cases += [replace(c, id=f"{model.label}: {c.id}") if model.label else c for c in cases]
        if failure:
            return result
        result.malformed_status = _post_malformed(f"{url}{routes[0].prefix}/{routes[0].method}")
        stopped = time.monotonic()
        container.stop(timeout=STOP_TIMEOUT)
        result.stop_seconds = time.monotonic() - stopped
        result.exit_code = int(container.wait(timeout=STOP_TIMEOUT + 5).get("StatusCode", -1))
        return result
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            logger.debug("could not remove smoke-test container %s", container.id)


def _published_url(container: Any) -> str:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{PORT}/tcp") or []
    if not bindings:
        raise MlshipError(f"docker published no host port for {PORT}/tcp of container {container.short_id}")
    return f"http://127.0.0.1:{bindings[0]['HostPort']}"


def _wait_ready(container: Any, url: str, timeout: float) -> tuple[str | None, bool]:
    """(None, True) once /readyz says 200; otherwise why not (the container exited, the time ran out, or the
    server answers that it is not ready) and whether the server answers at all."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    answering_since: float | None = None
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            return f"the container exited with status {code} before it was ready", False
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return None, True
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            last = f"/readyz answered {exc.code}: {body[:300]}"
            if _models_starting(body):
                answering_since = None  # a service's front while its models load: not an answer yet
                time.sleep(0.25)
                continue
            answering_since = answering_since or time.monotonic()
            # The runtime decides readiness while it starts (it replays the golden cases); a server that has
            # answered "not ready" for a while will not change its mind.
            if time.monotonic() - answering_since > NOT_READY_GRACE:
                return f"the server runs but is not ready: {last}", True
        except (urllib.error.URLError, OSError) as exc:
            last = f"no answer ({exc})"
        time.sleep(0.25)
    return f"the container was not ready within {timeout:.0f}s ({last})", answering_since is not None


def _models_starting(body: str) -> bool:
    """A multi-model front's 503 while every model it lists is still starting (each loads and replays its golden
    cases first): {"unavailable": [{"name": ..., "reason": "starting"}, ...]}."""
    try:
        unavailable = json.loads(body).get("unavailable")
    except (ValueError, AttributeError):
        return False
    return bool(unavailable) and isinstance(unavailable, list) and all(
        isinstance(model, dict) and model.get("reason") == "starting" for model in unavailable)


def _post_malformed(url: str) -> int:
    request = urllib.request.Request(url, data=b'{"instances": [', method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _log_tail(container: Any, lines: int = 15) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").rstrip()
    except Exception:  # the container may be gone already; the log is a courtesy
        return "(no container log)"
    return "container log (last lines):\n" + "\n".join(f"  {line}" for line in text.splitlines())


def smoke_rows(smoke: SmokeResult | None, *, built: bool) -> list[tuple[str, str]]:
    """The result table's rows about the smoke test."""
    if smoke is None:
        return [("smoke test", "skipped")] if built else []
    rows = []
    if smoke.ready_seconds is not None:
        rows.append(("ready", f"/readyz answered 200 after {smoke.ready_seconds:.1f}s"))
    if smoke.cases:
        passed = sum(c.ok for c in smoke.cases)
        rows.append(("golden cases", f"{passed}/{len(smoke.cases)} match over HTTP"))
        rows.extend((f"  FAIL {c.id}", c.detail) for c in smoke.cases if not c.ok)
    if smoke.malformed_status is not None:
        verdict = "ok" if 400 <= smoke.malformed_status < 500 else "FAIL: expected a 4xx"
        rows.append(("malformed request", f"HTTP {smoke.malformed_status} ({verdict})"))
    if smoke.stop_seconds is not None:
        rows.append(("SIGTERM", f"stopped in {smoke.stop_seconds:.1f}s, exit status {smoke.exit_code}"))
    if smoke.failure:
        rows.append(("smoke test", f"FAILED: {smoke.failure}"))
    return rows


def parity_json(smoke: SmokeResult | None) -> dict[str, Any] | None:
    """The `parity` object of `--json`."""
    if smoke is None:
        return None
    return {
        "ok": smoke.ok,
        "passed": sum(c.ok for c in smoke.cases),
        "total": len(smoke.cases),
        "cases": [c.to_json() for c in smoke.cases],
        "malformed_status": smoke.malformed_status,
        "ready_seconds": _round(smoke.ready_seconds),
        "stop_seconds": _round(smoke.stop_seconds),
        "exit_code": smoke.exit_code,
        "failure": smoke.failure,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
