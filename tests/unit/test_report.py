"""The package summary's line on where the golden rows came from."""

from __future__ import annotations

from mlship.notebook.inspector import GoldenRecord
from mlship.report import describe_golden_sources
from mlship.runtime._contract import GoldenCase, GoldenSource, InputSchema

SCHEMA = InputSchema.from_json({"kind": "list", "type": "string"})
CASES = (GoldenCase("predict-0", "predict", ["a b"], [1], "['a b']"),
         GoldenCase("predict-1", "predict", ["c d"], [0], "test_texts"))


def test_each_source_with_its_count_and_reason_and_the_values_not_used() -> None:
    record = GoldenRecord(SCHEMA, CASES, True, {}, (
        GoldenSource("['a b']", 1, "the inference call's data"),
        GoldenSource("test_texts", 1, "texts, like the sample; named like a test split")),
        {"X_test": "the served path failed on it: ValueError: boom"})
    assert describe_golden_sources(record) == (
        "1 from ['a b'] (the inference call's data), 1 from test_texts (texts, like the sample; named like a test "
        "split); not used: X_test (the served path failed on it: ValueError: boom)")


def test_a_record_without_sources_counts_its_cases() -> None:
    assert describe_golden_sources(GoldenRecord(SCHEMA, CASES, True, {})) == "2 cases from the sample"
