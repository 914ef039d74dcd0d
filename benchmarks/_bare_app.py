"""The bare baseline for benchmarks/serving.py: the least a Python model server can do.

Starlette + orjson, `model.predict` called inline on the event loop, no validation, no logging, no metrics.
Run under `uvicorn --workers 2` (uvloop and httptools installed, so uvicorn picks them), e.g.

    BENCH_MODEL=/tmp/lr.pkl python -m uvicorn _bare_app:app --app-dir benchmarks --workers 2 --no-access-log

BENCH_MODEL names a pickled estimator. Request: {"instances": [[f1, f2, ...], ...]};
response: {"predictions": [...]}, the same shapes the mlship runtime accepts and answers.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

with open(os.environ["BENCH_MODEL"], "rb") as _file:
    model = pickle.load(_file)


async def predict(request: Request) -> Response:
    body = orjson.loads(await request.body())
    rows = np.asarray(body["instances"], dtype=np.float64)
    payload = orjson.dumps({"predictions": model.predict(rows).tolist()})
    return Response(payload, media_type="application/json")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
