"""`mlship promote` and `mlship rollback` against a running `mlship serve mlship.toml` under continuous load: real
processes, real HTTP, the real SIGHUP reload (the commands run in this process, through typer's runner).

Two versions of one model (the sample bundle and a copy of it packaged as 2.0.0); threads post to the unversioned
Open Inference Protocol route without pause, and each answer says which version answered (`model_version`). Every
answer must be a 2xx; requests sent after promote returned are answered by the new version, after rollback
returned by the old one.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mlship.runtime import _contract as contract
from mlship.runtime._contract import read_manifest
from tests.conftest import Cli
from tests.e2e.test_service_front import _v2_request
from tests.e2e.test_service_reload import post, service

SERVICE = """\
# Two versions of the series model; CI promotes.
[service]
name = "promotions"

[[models]]
bundle = "{old}"

[[models]]
bundle = "{new}"   # the candidate

[routes.series]
default = "0.1.0"   # stable
"""


def test_promote_then_rollback_under_load_switches_the_default_with_no_failed_request(
    sample_bundle: Callable[[str], Path], tmp_path: Path, cli: Cli
) -> None:
    old = sample_bundle("series")
    new = Path(shutil.copytree(old, tmp_path / "series-2"))
    read = contract.read(new)
    contract.write(new, replace(read.manifest, version="2.0.0"), read.golden)
    body = _v2_request(read_manifest(old), json.loads((old / "golden.json").read_text())["cases"][0]["instances"])
    text = SERVICE.format(old=old, new=new)
    answers: list[tuple[float, int, str]] = []  # (when the request was sent, status, the version that answered)
    stop = threading.Event()

    with service(tmp_path, text) as (base, source, _, _):
        def load() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                status, answer = post(f"{base}/v2/models/series/infer", body)
                version = answer.get("model_version", "?") if isinstance(answer, dict) else repr(answer)
                answers.append((sent, status, version))

        threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            promote_began = time.monotonic()
            promoted = cli("promote", source, "series", "2.0.0")
            assert promoted.exit_code == 0, promoted.output
            assert "series: 0.1.0 -> 2.0.0" in promoted.output and "reloaded" in promoted.output
            promoted_at = time.monotonic()
            time.sleep(0.5)
            rollback_began = time.monotonic()
            rolled = cli("rollback", source, "series")
            assert rolled.exit_code == 0, rolled.output
            assert "series: 2.0.0 -> 0.1.0" in rolled.output
            rolled_at = time.monotonic()
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=40)

    assert len(answers) > 30, answers
    failed = [a for a in answers if not 200 <= a[1] < 300]
    assert failed == [], failed[:5]

    def versions(after: float, before: float) -> set[str]:
        return {version for sent, _, version in answers if after <= sent < before}

    assert versions(0, promote_began) == {"0.1.0"}
    assert versions(promoted_at, rollback_began) == {"2.0.0"}
    assert versions(rolled_at, float("inf")) == {"0.1.0"}
    assert source.read_text() == text  # comments and layout kept, default back
    history = cli("history", source, "--json")
    records = json.loads(history.output)
    assert [(r["action"], r["from"], r["to"]) for r in records] == [("promote", "0.1.0", "2.0.0"),
                                                                     ("rollback", "2.0.0", "0.1.0")]
