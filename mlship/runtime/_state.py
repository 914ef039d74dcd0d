"""The service one worker runs: its settings, metrics, access log, draining state, and the model it serves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ._http import HttpError, check_content_type, parse_json, read_body, request_id
from ._inference import ModelError, ModelRejected, ModelTimeout
from ._logs import AccessLog
from ._metrics import Metrics
from ._model import ModelHandle
from ._schema import Checked, InputError
from ._settings import Settings


@dataclass(eq=False)
class AppState:
    """What every endpoint of one worker shares. One model today; the service's own parts (settings, metrics,
    access log, draining, request counts) do not depend on how many it serves."""

    model: ModelHandle
    settings: Settings
    metrics: Metrics
    access_log: AccessLog
    draining: bool = False
    in_flight: int = 0
    # Requests this worker holds, counting those read but not started yet; the server sets it from uvicorn's
    # task set (see _server.WorkerServer), in-process tests fall back to the started ones.
    requests: Callable[[], int] | None = None
    # Bookkeeping that should not delay a response (batch metrics): run by the Observe layer once the response
    # of the request being served has been sent.
    after_response: list[Callable[[], None]] = field(default_factory=list)

    def readiness(self) -> str | None:
        """None when the service is ready to serve, else why not."""
        if self.draining:
            return "the server is shutting down"
        return self.model.readiness()

    async def read_json(self, request: Request) -> Any:
        """The request's body as JSON: content type checked (415), size limited (413), parsed (400)."""
        check_content_type(request)
        return parse_json(await read_body(request, self.settings.max_body_bytes), self.settings.max_elements)

    async def predict(self, request: Request, model: ModelHandle, method: str, checked: Checked) -> Any:
        return await self.predict_checked(model, method, checked, request_id(request))

    async def predict_checked(self, model: ModelHandle, method: str, checked: Checked, rid: str) -> Any:
        """The predictions for a checked request, or HttpError: 400 (values that do not convert), 422 (the
        model's input validation refused them, see _rejection), 500 (the model failed; details in the log),
        503 (timeout, or not loaded yet)."""
        runner = model.loaded_runner()
        try:
            alone = (self.requests() if self.requests is not None else self.in_flight) <= 1
            return await runner.predict(method, checked, rid, alone=alone)
        except InputError as exc:
            raise HttpError(400, exc.message) from None
        except ModelRejected as exc:
            raise HttpError(422, str(exc)) from None
        except ModelError as exc:
            raise HttpError(500, str(exc)) from None
        except ModelTimeout as exc:
            raise HttpError(503, f"timed out: {exc} [env var: MLSHIP_TIMEOUT]") from None
