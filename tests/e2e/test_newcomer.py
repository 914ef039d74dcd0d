"""A newcomer's first steps, as the README gives them (issue 16): a folder with one notebook packaged by its
name, `inspect --json`, and the README's "Serve it" snippet run word for word against a real server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.support.servers import clean_env, free_port


def _readme_block(heading: str) -> str:
    """The first ```sh block after `## heading` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block under ## {heading}"
    return match.group(1)


def test_a_folder_with_one_notebook_is_that_notebook(cli: Any, examples: Path, tmp_path: Path) -> None:
    result = cli("inspect", examples / "iris", "--json", "--sample-rows", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "iris"
    assert data["bundle"] is None  # inspect writes nothing
    # --sample-rows 2: two rows per served method; a dry run verifies none of them.
    counts = {key: data["golden"][key] for key in ("recorded", "cases", "passed")}
    assert counts == {"recorded": 2 * len(data["methods"]), "cases": 0, "passed": 0}
    assert data["golden"]["sources"] == [{"expr": "X_test", "rows": 2, "reason": "the inference call's data"}]
    assert not (examples / "iris" / "dist").exists()


def test_the_readme_serve_snippet_waits_until_ready(cli: Any, examples: Path, tmp_path: Path) -> None:
    result = cli("package", examples / "iris", "-o", tmp_path / "dist" / "iris")
    assert result.exit_code == 0, result.output
    snippet = _readme_block("Serve it")
    expected = [line[2:] for line in snippet.splitlines() if line.startswith("# ")]
    port = free_port()
    assert snippet.count("8080") == 3  # the --port and both URLs: all moved to a free port together
    # The snippet as written, then stop the server it started in the background (mlship serve becomes the runtime,
    # so $! is the server itself).
    script = "set -e\n" + snippet.replace("8080", str(port)) + 'kill "$!"\nwait "$!" || true\n'
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-len(expected):] == expected, done.stdout + done.stderr


def test_every_predict_error_has_a_hint(sample_bundle: Any, tmp_path: Path) -> None:
    import sys

    bundle = sample_bundle("iris_frame")
    (tmp_path / "in.csv").write_text("a\n1\n")
    cases = [
        (["-i", "nope.csv", "-o", "out.csv"],
         f"error: {tmp_path}/nope.csv does not exist\nhint: check --input: it takes a .csv, .jsonl or .parquet file\n"),
        (["-i", "in.csv", "-o", "nowhere/out.csv"],
         f"error: cannot write {tmp_path}/nowhere/out.csv: the folder {tmp_path}/nowhere does not exist\n"
         f"hint: create it first (mkdir -p {tmp_path}/nowhere) or pass another --output\n"),
        (["-i", "in.csv", "-o", "out.csv", "--method", "explain"],
         "error: the bundle has no method 'explain'; it has predict, predict_proba\n"
         "hint: pass one of them, e.g. --method predict, or leave --method out\n"),
    ]
    for args, expected in cases:
        done = subprocess.run([sys.executable, "-m", "mlship", "predict", str(bundle), *args], cwd=tmp_path,
                              env=clean_env(MLSHIP_PLAIN="1"), capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", expected), args
