"""mlship/promote.py and `mlship promote | rollback | history` without a server: the rewrite keeps the file's
comments and layout, the audit log, rollback through it, `--require-report` matching, the golden cases of the
promoted version replayed first, and every refusal leaving the file as it was. The replay (a fresh interpreter, a
few seconds) is recorded instead of run, but in the tests of it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle import verify
from mlship.bundle.digest import bundle_digest
from mlship.bundle.verify import verify_bundle as real_verify_bundle
from mlship.errors import MlshipError
from mlship.promote import actor, history_file_for, promote, read_history, rollback
from mlship.runtime._contract import CaseResult
from mlship.runtime._service import read_service
from tests.support.services import bundle_copy
from tests.unit.runtime.sample_bundles import edit_golden

TEMPLATE = """\
# The scoring service: edited by hand, promoted by CI.
[service]
name = "scoring"   # shown at startup

[[models]]
bundle = "dist/fraud-1"

[[models]]
bundle = "dist/fraud-2"   # the candidate

[[models]]
bundle = "dist/churn"

[routes.fraud]
# what an unversioned request gets
default = "1.0.0"   # stable
"""


@pytest.fixture
def source(sample_bundle: Callable[[str], Path], tmp_path: Path) -> Path:
    sample = sample_bundle("iris_frame")
    for folder, name, version in (("fraud-1", "fraud", "1.0.0"), ("fraud-2", "fraud", "2.0.0"),
                                  ("churn", "churn", "0.1.0")):
        bundle_copy(sample, tmp_path / "dist" / folder, name, version)
    path = tmp_path / "mlship.toml"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture(autouse=True)
def replayed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, str | None]]:
    """The bundles whose golden cases promote replayed (bundle, python), each case taken as passed."""
    calls: list[tuple[Path, str | None]] = []

    def recorded(bundle: Path, *, python: str | None = None) -> list[CaseResult]:
        calls.append((bundle, python))
        return [CaseResult("predict-0", "predict", True, "", [0], [0])]

    monkeypatch.setattr(verify, "verify_bundle", recorded)
    return calls


def report(tmp_path: Path, old: Path, new: Path, *, passed: bool = True, **changes: Any) -> Path:
    """A compare report as `mlship compare --json` writes it (the fields promote reads, and a few others)."""
    data: dict[str, Any] = {
        "format": 1, "passed": passed,
        "old": {"path": str(old), "name": "fraud", "version": "1.0.0", "digest": bundle_digest(old)},
        "new": {"path": str(new), "name": "fraud", "version": "2.0.0", "digest": bundle_digest(new)},
        "gates": [{"gate": "max_disagreement", "passed": passed, "detail": "predict: 7.00% of rows disagree"}],
        **changes,
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


def test_promote_changes_only_the_default_keeping_comments_and_layout(source: Path) -> None:
    change = promote(source, "fraud", "2.0.0")
    assert (change.before, change.after, change.changed) == ("1.0.0", "2.0.0", True)
    assert source.read_text() == TEMPLATE.replace('default = "1.0.0"', 'default = "2.0.0"')
    assert read_service(source).defaults["fraud"] == "2.0.0"
    assert not [p for p in source.parent.iterdir() if p.name.endswith(".tmp")]


def test_promote_adds_the_routes_table_of_a_name_that_has_none(source: Path) -> None:
    change = promote(source, "churn", "0.1.0")
    assert change.changed and change.before == change.after == "0.1.0"
    assert source.read_text() == TEMPLATE + '\n[routes.churn]\ndefault = "0.1.0"\n'
    assert read_service(source).defaults == {"fraud": "1.0.0", "churn": "0.1.0"}
    again = promote(source, "churn", "0.1.0")
    assert not again.changed and len(read_history(source)) == 1


def test_promote_in_a_file_without_routes_adds_them(source: Path) -> None:
    source.write_text(TEMPLATE.split("[routes.fraud]")[0].replace('bundle = "dist/fraud-2"   # the candidate\n', "")
                      .replace("[[models]]\n\n", ""))
    promote(source, "fraud", "1.0.0")
    text = source.read_text()
    assert text.startswith("# The scoring service") and text.endswith('[routes.fraud]\ndefault = "1.0.0"\n')


def test_each_change_is_one_audit_record_and_rollback_walks_them_back(
        source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_ACTOR", "ci-release")
    promote(source, "fraud", "2.0.0")
    lines = history_file_for(source).read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["actor"] == "ci-release" and record["action"] == "promote" and record["file"] == str(source)
    assert (record["name"], record["from"], record["to"], record["report_sha256"]) == ("fraud", "1.0.0", "2.0.0", None)
    assert record["time"].endswith("Z")

    back = rollback(source, "fraud")
    assert (back.before, back.after) == ("2.0.0", "1.0.0")
    assert source.read_text() == TEMPLATE
    assert [(r["action"], r["from"], r["to"]) for r in read_history(source)] == [
        ("promote", "1.0.0", "2.0.0"), ("rollback", "2.0.0", "1.0.0")]
    with pytest.raises(MlshipError, match="no promote of 'fraud' to roll back") as refused:
        rollback(source, "fraud")
    assert "mlship promote" in (refused.value.hint or "")
    assert source.read_text() == TEMPLATE


def test_two_rollbacks_undo_two_promotes(source: Path) -> None:
    promote(source, "fraud", "2.0.0")
    promote(source, "fraud", "1.0.0")
    promote(source, "fraud", "2.0.0")
    assert rollback(source, "fraud").after == "1.0.0"
    assert rollback(source, "fraud").after == "2.0.0"
    assert rollback(source, "fraud").after == "1.0.0"
    with pytest.raises(MlshipError):
        rollback(source, "fraud")


def test_rollback_refuses_when_the_file_was_changed_by_hand_since(source: Path) -> None:
    promote(source, "fraud", "2.0.0")
    source.write_text(TEMPLATE)  # back to 1.0.0, not through mlship
    with pytest.raises(MlshipError, match=r"is '1.0.0', but its last promote .* set '2.0.0'"):
        rollback(source, "fraud")


def test_promoting_the_candidate_of_a_canary_ends_the_canary_and_rollback_does_not_restart_it(source: Path) -> None:
    with_canary = TEMPLATE.replace('default = "1.0.0"   # stable\n',
                                   'default = "1.0.0"   # stable\ncanary = { version = "2.0.0", percent = 10 }\n')
    source.write_text(with_canary)
    assert read_service(source).rollouts["fraud"].version == "2.0.0"
    change = promote(source, "fraud", "2.0.0")
    assert change.record is not None and change.record["ended"] == {"canary": {"version": "2.0.0", "percent": 10}}
    assert source.read_text() == TEMPLATE.replace('default = "1.0.0"', 'default = "2.0.0"')
    rollback(source, "fraud")
    assert source.read_text() == TEMPLATE and "fraud" not in read_service(source).rollouts


def test_the_actor_is_the_pipelines_or_user_at_host() -> None:
    assert actor({"MLSHIP_ACTOR": "release-bot", "GITHUB_ACTOR": "alice"}) == "release-bot"
    assert actor({"GITHUB_ACTOR": "alice"}) == "github:alice"
    assert actor({"GITLAB_USER_LOGIN": "bob"}) == "gitlab:bob"
    assert "@" in actor({})


def test_unknown_names_and_versions_are_refused_listing_what_exists(source: Path) -> None:
    with pytest.raises(MlshipError, match="no model named 'frod'") as name:
        promote(source, "frod", "2.0.0")
    assert "'fraud', 'churn'" in (name.value.hint or "")
    with pytest.raises(MlshipError, match=r"no version '3.0.0' \(it has '1.0.0', '2.0.0'\)"):
        promote(source, "fraud", "3.0.0")
    with pytest.raises(MlshipError, match="no model named 'frod'"):
        rollback(source, "frod")
    assert source.read_text() == TEMPLATE and read_history(source) == []


def test_a_passing_report_of_exactly_these_bundles_is_recorded_by_its_sha256(source: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    path = report(tmp_path, dist / "fraud-1", dist / "fraud-2")
    change = promote(source, "fraud", "2.0.0", report=path)
    assert change.record is not None
    assert change.record["report_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert change.record["report"] == str(path)


@pytest.mark.parametrize(("old", "new", "passed", "message"), [
    ("fraud-2", "fraud-2", True, "its OLD is fraud 1.0.0 .* but the current default fraud 1.0.0 is"),
    ("fraud-1", "churn", True, "its NEW is .* but the promoted version fraud 2.0.0 is"),
    ("fraud-1", "fraud-2", False, "fraud 2.0.0 failed its comparison with 1.0.0: predict: 7.00% of rows disagree"),
])
def test_require_report_refuses_other_bundles_and_failed_reports(
        source: Path, tmp_path: Path, old: str, new: str, passed: bool, message: str) -> None:
    path = report(tmp_path, tmp_path / "dist" / old, tmp_path / "dist" / new, passed=passed)
    with pytest.raises(MlshipError, match=message):
        promote(source, "fraud", "2.0.0", report=path)
    assert source.read_text() == TEMPLATE and read_history(source) == []


def test_require_report_refuses_what_is_not_a_report(source: Path, tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text('{"ok": true}')
    with pytest.raises(MlshipError, match="is not an `mlship compare --json` report"):
        promote(source, "fraud", "2.0.0", report=bad)
    with pytest.raises(MlshipError, match="cannot read the compare report"):
        promote(source, "fraud", "2.0.0", report=tmp_path / "missing.json")
    assert source.read_text() == TEMPLATE


def test_a_history_that_cannot_be_written_is_refused_and_the_file_unchanged(source: Path) -> None:
    history_file_for(source).mkdir()  # (the tests run as root, who may write any file: a folder cannot be opened)
    with pytest.raises(MlshipError, match="cannot write the history") as refused:
        promote(source, "fraud", "2.0.0")
    assert "run as a user who may write" in (refused.value.hint or "")
    assert source.read_text() == TEMPLATE


def test_cli_promote_without_a_server_writes_the_file_and_says_so(cli: Any, source: Path) -> None:
    result = cli("promote", source, "fraud", "2.0.0")
    assert result.exit_code == 0, result.output
    assert "fraud: 1.0.0 -> 2.0.0" in result.output and "no server is running" in result.output
    listed = cli("history", source)
    assert listed.exit_code == 0 and "promote   fraud 1.0.0 -> 2.0.0" in listed.output
    as_json = cli("history", source, "--json")
    assert [r["to"] for r in json.loads(as_json.output)] == ["2.0.0"]
    refused = cli("rollback", source, "churn", "--no-reload")
    assert refused.exit_code == 1 and "no promote of 'churn'" in refused.output
    back = cli("rollback", source, "fraud", "--no-reload")
    assert back.exit_code == 0 and "not reloaded (--no-reload)" in back.output
    assert source.read_text() == TEMPLATE


def test_cli_promote_whose_server_cannot_be_found_says_the_file_was_written(cli: Any, source: Path,
                                                                            tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text("not-a-pid\n")
    result = cli("promote", source, "fraud", "2.0.0", "--pid-file", pid_file)
    assert result.exit_code == 1
    assert f"wrote {source} (fraud: 1.0.0 -> 2.0.0), but could not reload its server: the pid file" in result.output
    assert 'default = "2.0.0"' in source.read_text()


def test_the_promoted_versions_golden_cases_are_replayed_before_the_file_is_written(
        source: Path, tmp_path: Path, replayed: list[tuple[Path, str | None]]) -> None:
    change = promote(source, "fraud", "2.0.0")
    assert replayed == [(tmp_path / "dist" / "fraud-2", None)]
    assert change.record is not None and change.record["verified"] is True
    assert not promote(source, "fraud", "2.0.0").changed and len(replayed) == 1  # nothing to change: no replay
    rollback(source, "fraud")  # back to what was served before: no replay either
    assert len(replayed) == 1 and "verified" not in read_history(source)[-1]


def test_a_version_whose_golden_cases_differ_is_refused_and_nothing_is_written(
        source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "verify_bundle", real_verify_bundle)  # the real replay, in a fresh interpreter
    bundle = tmp_path / "dist" / "fraud-2"
    edit_golden(bundle, lambda golden: golden["cases"][-1].update(expected=[99]))
    with pytest.raises(MlshipError) as refused:
        promote(source, "fraud", "2.0.0")
    assert refused.value.message.startswith(f"cannot promote fraud 2.0.0: 1 of 6 golden cases of {bundle} differ "
                                            "from the notebook (first: predict_proba-5: at [0]: expected 99")
    assert f"mlship verify {bundle}" in (refused.value.hint or "") and "--no-verify" in (refused.value.hint or "")
    assert source.read_text() == TEMPLATE and read_history(source) == []


def test_a_bundle_that_cannot_be_verified_is_refused(source: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def unloadable(bundle: Path, *, python: str | None = None) -> list[CaseResult]:
        raise MlshipError(f"{bundle}/artifacts/values.pkl does not match its digest", hint="package it again")

    monkeypatch.setattr(verify, "verify_bundle", unloadable)
    with pytest.raises(MlshipError, match=r"cannot promote fraud 2.0.0: its bundle .* cannot be verified: .*"
                       "values.pkl does not match") as refused:
        promote(source, "fraud", "2.0.0")
    assert refused.value.hint == "package it again; or pass --no-verify to promote it anyway"
    assert source.read_text() == TEMPLATE and read_history(source) == []


def test_no_verify_promotes_without_replaying_and_the_history_says_so(
        source: Path, replayed: list[tuple[Path, str | None]], cli: Any) -> None:
    change = promote(source, "fraud", "2.0.0", verify=False)
    assert change.changed and replayed == [] and read_history(source)[-1]["verified"] is False
    shown = cli("history", source)
    assert shown.exit_code == 0 and "fraud 1.0.0 -> 2.0.0  not verified (--no-verify)" in shown.output
