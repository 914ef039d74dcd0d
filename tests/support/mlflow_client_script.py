"""Run by the MLflow client venv's python (tests/support/mlflow_client.py), never imported by the tests.

Reads a plan from stdin: [{"sample", "url", "kind", "names", "rows"}, ...], where rows are a bundle's golden input
rows (dicts for column kinds, lists for arrays, scalars for lists and series). For each server it sends those rows
in every form MLflow's client and MLflow's documentation use, builds them the way a client does (pandas
DataFrames, numpy arrays) and sends them with MLflow's ScoringServerClient (CSV, which that client does not send,
with requests, as MLflow's docs do with curl). Writes {sample: {form: {"status", "predictions" | "error"}}} as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from mlflow.deployments import PredictionsResponse
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

COLUMN_KINDS = ("dataframe", "records", "columns")


def forms(server: dict[str, Any]) -> dict[str, Any]:
    """form name -> what ScoringServerClient.invoke gets (a DataFrame, an array, a list, or a JSON string)."""
    kind, names, rows = server["kind"], server["names"], server["rows"]
    if kind in COLUMN_KINDS:
        frame = pd.DataFrame(rows, columns=names)
    elif kind == "ndarray":
        frame = pd.DataFrame(np.array(rows))  # a NumPy-backed frame: its columns are the integers 0..n-1
    else:
        frame = pd.DataFrame({names or "value": rows})
    out: dict[str, Any] = {
        # invoke(DataFrame): {"dataframe_split": to_dict(orient="split")}, index and columns included
        "DataFrame": frame,
        "dataframe_records": json.dumps({"dataframe_records": frame.to_dict(orient="records")}, default=str),
        "CSV": frame.to_csv(index=False),
    }
    split = frame.to_dict(orient="split")
    if kind in COLUMN_KINDS:
        out["instances records"] = json.dumps({"instances": frame.to_dict(orient="records")}, default=str)
        out["instances columns"] = json.dumps({"instances": frame.to_dict(orient="list")}, default=str)
        out["inputs columns"] = json.dumps({"inputs": frame.to_dict(orient="list")}, default=str)
        out["list of records (inputs)"] = frame.to_dict(orient="records")
    else:
        out["ndarray (inputs)"] = np.array(rows)
        out["list (inputs)"] = list(rows)
        out["instances"] = json.dumps({"instances": list(rows)})
    if kind != "records" and kind != "columns":
        # No column names (a DataFrame built from a NumPy array, sent without them): MLflow takes it for an array
        # or list model; mlship also for a dataframe, in schema order.
        out["dataframe_split without columns"] = json.dumps({"dataframe_split": {"data": split["data"]}},
                                                            default=str)
    out["bad body"] = json.dumps({"dataframe_split": {"data": 1}})
    return out


def send(client: ScoringServerClient, url: str, data: Any, csv: bool) -> dict[str, Any]:
    if csv:
        response = requests.post(f"{url}/invocations", data=data, headers={"Content-Type": "text/csv"}, timeout=60)
        if response.status_code != 200:
            return {"status": response.status_code, "error": response.json()}
        parsed = PredictionsResponse.from_json(response.text)
    else:
        try:
            parsed = client.invoke(data)
        except Exception as exc:  # ScoringServerClient raises a bare Exception naming the status and the body
            text = str(exc)
            status = int(text.split("error code ")[1].split(",")[0]) if "error code " in text else 0
            body = text.split("response: ", 1)[1][:-1] if "response: " in text else text
            return {"status": status, "error": json.loads(body) if body.startswith("{") else body}
    # What a client reads back: the predictions, and MLflow's own conversion of them to a DataFrame.
    return {"status": 200, "predictions": parsed["predictions"], "rows": len(parsed.get_predictions())}


def main() -> None:
    plan = json.load(sys.stdin)
    results: dict[str, dict[str, Any]] = {}
    for server in plan:
        address = urlsplit(server["url"])
        client = ScoringServerClient(address.hostname, address.port)
        client.wait_server_ready(timeout=60)
        results[server["sample"]] = {
            form: send(client, server["url"], data, form == "CSV") for form, data in forms(server).items()
        }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
