"""The package summary's client line: what a client sends and what is ignored if sent (mlship/report.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from mlship.bundle.builder import PackageResult
from mlship.notebook.inspector import ColumnChoice
from mlship.report import describe_client, package_json, print_package_result
from mlship.runtime._contract import Column, InputSchema
from tests.unit.bundle.test_writer import fake_capture

FRAME = InputSchema("dataframe", columns=(Column("x1", "number"), Column("group", "string")),
                    example={"x1": 1.0, "group": "a"}, ignored=("y", "Intercept", "x1:x2"))


def _result(tmp_path: Path, schema: InputSchema, choice: ColumnChoice | None) -> PackageResult:
    capture = fake_capture(tmp_path)
    capture = replace(capture, golden=replace(capture.golden, schema=schema, columns=choice))
    return PackageResult(None, capture, [], [], {"total": 1.0})


def test_the_client_line_names_both_lists() -> None:
    assert describe_client(FRAME) == "a client sends: x1, group; ignored if sent: y, Intercept, x1:x2"
    assert describe_client(replace(FRAME, ignored=())) == "a client sends: x1, group"
    assert describe_client(InputSchema("list", element=Column(None, "number"))) is None
    wide = InputSchema("dataframe", columns=tuple(Column(f"c{i}", "number") for i in range(20)))
    assert describe_client(wide, limit=3) == "a client sends: c0, c1, c2, … 17 more"


def test_summary_and_json_show_the_client_columns(tmp_path: Path, capsys: Any) -> None:
    choice = ColumnChoice(("x1", "group"), ("y", "Intercept", "x1:x2"), calls=6, seconds=0.2)
    result = _result(tmp_path, FRAME, choice)
    print_package_result(result)
    out = " ".join(capsys.readouterr().out.split())
    assert "client a client sends: x1, group; ignored if sent: y, Intercept, x1:x2" in out
    data = package_json(result)
    assert data["input"]["ignored"] == ["y", "Intercept", "x1:x2"]
    assert data["client_columns"] == {"required": ["x1", "group"], "ignored": ["y", "Intercept", "x1:x2"],
                                      "untried": [], "calls": 6, "seconds": 0.2, "proof": "ok"}


def test_a_failed_proof_and_a_stopped_search_are_warned(tmp_path: Path, capsys: Any) -> None:
    choice = ColumnChoice(("x1", "group"), (), untried=("group",), calls=512, seconds=60.0,
                          proof="golden case predict-0 with only ['x1'] gave a different output")
    print_package_result(_result(tmp_path, replace(FRAME, ignored=()), choice))
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "every column of the input is required: golden case predict-0" in text
    assert "1 columns were not tried (the search stopped after 512 calls, 60s) and stay required: group" in text
