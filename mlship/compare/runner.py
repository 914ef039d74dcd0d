"""Each bundle predicts in its own fresh process, with its own runtime: `python -B -P _child.py BUNDLE JOBS.json`
started in the bundle directory with no PYTHONPATH (as `mlship predict` and `mlship verify` run a bundle), OLD and
NEW at the same time. The child's stderr goes to a file, so a chatty model can never fill a pipe and stall it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MlshipError
from . import _child

SCRIPT = Path(_child.__file__)
TIMEOUT = 3600.0


@dataclass(frozen=True)
class Job:
    method: str
    input: Path
    output: Path
    input_format: str
    chunk_rows: int
    id_columns: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "input": str(self.input), "output": str(self.output),
                "input_format": self.input_format, "chunk_rows": self.chunk_rows, "id_columns": list(self.id_columns)}


class Child:
    def __init__(self, role: str, bundle: Path, python: str | None, jobs: list[Job], work: Path) -> None:
        self.role, self.bundle, self.python = role, bundle, python or sys.executable
        spec = work / f"{role.lower()}-jobs.json"
        spec.write_text(json.dumps({"jobs": [job.to_json() for job in jobs]}), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen([self.python, "-B", "-P", str(SCRIPT), str(bundle), str(spec)],
                                          stdout=subprocess.PIPE, stderr=self._stderr, cwd=bundle, env=env)
        except OSError as exc:
            raise MlshipError(f"cannot start {self.python} for {role} ({bundle}): {exc.strerror}", exit_code=2,
                              hint=f"pass --{role.lower()}-python an interpreter that exists") from None

    def answer(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        try:
            out, _ = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise MlshipError(f"{self.role} ({self.bundle}) did not finish within {timeout:.0f} s", exit_code=2,
                              hint="compare over a smaller --data file") from None
        finally:
            self._stderr.seek(0)
            tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-5:]
            self._stderr.close()
        marked = [line for line in out.decode("utf-8", "replace").split("\n") if line.startswith(_child.MARK)]
        if not marked:
            raise MlshipError(f"{self.role} ({self.bundle}) ended without an answer (exit {self._proc.returncode})"
                              + ("".join(f"\n  {line}" for line in tail)), exit_code=2,
                              hint="its Python must have the bundle's requirements (mlship verify BUNDLE --python "
                              "PYTHON checks); MLSHIP_DEBUG=1 shows more")
        answer: dict[str, Any] = json.loads(marked[-1][len(_child.MARK):])
        if "error" in answer:
            raise MlshipError(f"cannot load {self.role} ({self.bundle}) with its own runtime: {answer['error']}",
                              exit_code=2, hint=f"mlship verify {self.bundle} says more")
        return answer

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def run_both(old: tuple[Path, str | None, list[Job]], new: tuple[Path, str | None, list[Job]],
             work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both bundles' answers; MlshipError (exit 2) when either cannot load or run."""
    children = [Child("OLD", *old, work)]
    try:
        children.append(Child("NEW", *new, work))
        return children[0].answer(), children[1].answer()
    finally:
        for child in children:
            child.kill()
