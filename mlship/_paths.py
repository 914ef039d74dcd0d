"""Where mlship's own files live, defined once."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
RUNTIME_DIR = PACKAGE_DIR / "runtime"

# In a wheel the templates are force-included as mlship/templates; in a source checkout (editable install)
# they sit at the repository root beside the package.
_INSTALLED_TEMPLATES = PACKAGE_DIR / "templates"
TEMPLATES_DIR = _INSTALLED_TEMPLATES if _INSTALLED_TEMPLATES.is_dir() else PACKAGE_DIR.parent / "templates"
# The docs the same way: --help names the copy the reader has (in the wheel, mlship/docs).
_INSTALLED_DOCS = PACKAGE_DIR / "docs"
DOCS_DIR = _INSTALLED_DOCS if _INSTALLED_DOCS.is_dir() else PACKAGE_DIR.parent / "docs"

# The name the runtime package gets inside a bundle (it is copied, not installed).
BUNDLE_RUNTIME_NAME = "mlship_runtime"
