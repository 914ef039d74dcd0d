"""Packaging, step two: a Capture -> the files of a bundle directory (docs/BUNDLE.md), each written once.

Two halves, because the pinned requirements and the local modules come from a fresh interpreter that probes the
staged values: `stage()` puts the values and the runtime in place (all the probe needs), `finish(dependencies)`
writes the rest and, last, golden.json and mlship.json through the contract (which digests every file).
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import replace
from pathlib import Path

from .. import __version__
from .._paths import BUNDLE_RUNTIME_NAME, RUNTIME_DIR
from ..errors import BundleError, MlshipError
from ..runtime import _contract as contract
from ..runtime._contract import Golden, Manifest, Method, Selection, sha256_file
from ..sbom.licenses import LicensePolicy
from . import manifest as mf
from ._fresh import import_modules
from .capture import Capture
from .fresh import Dependencies
from .render import PredictorContext, SourceBlock, render

RUNTIME_VERSION_FILE = RUNTIME_DIR / "__init__.py"


class BundleWriter:
    """Writes one Capture into `staging`, an empty folder that becomes the bundle."""

    def __init__(self, capture: Capture, staging: Path, licenses: LicensePolicy | None = None) -> None:
        self.capture = capture
        self.staging = staging
        self.licenses = licenses or LicensePolicy()
        self.license_warnings: list[str] = []

    def write(self, dependencies: Dependencies) -> Manifest:
        """Both halves at once, for dependencies already known."""
        self.stage()
        return self.finish(dependencies)

    # -- what the probe needs ----------------------------------------------------------------------------------

    def stage(self) -> None:
        """The captured values (if the kernel did not write them in place) and the bundle's copy of the runtime."""
        values = self.staging / contract.VALUES_NAME
        values.parent.mkdir(parents=True, exist_ok=True)
        if self.capture.values is not None and self.capture.values.resolve() != values.resolve():
            shutil.copyfile(self.capture.values, values)
        shutil.copytree(RUNTIME_DIR, self.staging / BUNDLE_RUNTIME_NAME,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    def probe_modules(self) -> list[str]:
        """What the probe resolves besides the pickle's modules: the served code's imports, and what the runtime
        imports to decode requests of this input schema into the notebook's types."""
        found: set[str] = set()
        for definition in self.capture.code.imports:
            found |= import_modules(definition.source)
        return sorted(found | set(self.capture.golden.schema.modules))

    # -- the rest ----------------------------------------------------------------------------------------------

    def finish(self, dependencies: Dependencies) -> Manifest:
        local = self._copy_local_modules(dependencies.local)
        (self.staging / contract.PREDICTOR_NAME).write_text(self._predictor(bool(local)), encoding="utf-8")
        requirements = mf.build_requirements(dependencies.distributions, self.capture.requirements)
        (self.staging / contract.REQUIREMENTS_NAME).write_text("\n".join(requirements) + "\n", encoding="utf-8")
        golden = Golden(self.capture.golden.cases, sources=self.capture.golden.sources)
        manifest = self._manifest(requirements, local)
        self._write_sbom(manifest)
        return contract.write(self.staging, manifest, golden)

    def _write_sbom(self, manifest: Manifest) -> None:
        """The bundle's SBOM (sbom/), after the license gate: its requirements with the license metadata of the
        packages installed where the notebook ran, and the model (docs/BUNDLE.md "SBOM")."""
        from ..sbom.artifacts import bundle_model, documents, gate, requirement_packages
        from ..sbom.document import Contents

        packages = requirement_packages(manifest.requirements, self.capture.python.executable)
        self.license_warnings = gate(packages, self.licenses, what=f"the bundle {manifest.name}")
        values = self.staging / contract.VALUES_NAME
        digested = replace(manifest, artifacts={contract.VALUES_NAME: sha256_file(values)} if values.is_file() else {})
        model = bundle_model(digested, len(self.capture.golden.cases), model_class=self.capture.plan.model_type)
        contents = Contents(kind="bundle", name=manifest.name, version=manifest.version,
                            created=manifest.created_at, model=model, packages=tuple(packages))
        for fmt, data in documents(contents).items():
            path = self.staging / contract.SBOM_FILES[fmt]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def _predictor(self, local_code: bool) -> str:
        plan, code = self.capture.plan, self.capture.code
        return render("predictor.py.jinja", PredictorContext(
            mlship_version=__version__,
            notebook=self.capture.source.notebook,
            notebook_sha256=self.capture.source.sha256,
            reason=plan.reason,
            imports=[d.source for d in code.imports],
            values=[(n, code.types[n]) for n in code.by_value],
            definitions=[SourceBlock(d.name, d.statement.cell.number, d.source) for d in code.definitions
                         if d.name not in code.early],
            main_names=list(code.main_names),
            early_definitions=[SourceBlock(d.name, d.statement.cell.number, d.source) for d in code.definitions
                               if d.name in code.early],
            methods=list(plan.methods.items()),
            input_name=plan.input_name,
            values_file=contract.VALUES_NAME,
            local_code=local_code,
        ))

    def _copy_local_modules(self, local: dict[str, str]) -> list[str]:
        """Modules imported from beside the notebook (not installed packages) travel in code/."""
        copied = []
        root = self.capture.notebook_dir.resolve()
        for name, origin in sorted(local.items()):
            path = Path(origin).resolve()
            if root not in path.parents:
                raise BundleError(
                    f"the served code imports {name!r} from {path}, which is neither an installed package nor "
                    "a file beside the notebook",
                    hint="install it as a package (pip install -e PATH) so mlship can pin it",
                )
            target = self.staging / "code" / path.name
            target.parent.mkdir(exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, target)
            copied.append(name)
        return copied

    def _manifest(self, requirements: list[str], local: list[str]) -> Manifest:
        capture, plan = self.capture, self.capture.plan
        return Manifest(
            name=capture.name,
            version=capture.version,
            mlship_version=__version__,
            runtime_version=runtime_version(),
            created_at=mf.created_at(),
            source=capture.source,
            python=capture.python.info,
            requirements=tuple(requirements),
            methods=tuple(Method(name, expr) for name, expr in plan.methods.items()),
            batch_safe=capture.golden.batch_safe,
            input=capture.golden.schema,
            local_modules=tuple(local),
            selection=Selection(plan.origin, plan.reason, plan.cell, plan.sample_expr),
        )


def runtime_version() -> str:
    """RUNTIME_VERSION of mlship/runtime/__init__.py, read without importing the runtime."""
    tree = ast.parse(RUNTIME_VERSION_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "RUNTIME_VERSION"
                                                for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise MlshipError("mlship/runtime/__init__.py defines no RUNTIME_VERSION")
