"""A distribution's license as an SPDX expression, and the license gate (--deny-licenses, `deny_licenses`).

What a distribution's metadata says, in the order of trust: PEP 639's `License-Expression` (an SPDX expression by
definition), then a `License` field that happens to be one ("MIT", "BSD-3-Clause", "Apache-2.0"), then its
`License ::` trove classifiers, the unambiguous ones mapped to SPDX ids (several are read as alternatives). The
parsing, normalizing ("GPL-3.0" -> "GPL-3.0-only", any case) and matching are `license-expression`'s, the
library ScanCode and CycloneDX's own tools use, with SPDX's license list: no string comparisons.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import MlshipError

if TYPE_CHECKING:
    from license_expression import Licensing

# The trove classifiers that name one license; "BSD License", "GNU General Public License (GPL)" and the like
# do not say which version or variant, so they stay unresolved (listed as the package's declared license).
CLASSIFIERS = {
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: MIT No Attribution License (MIT-0)": "MIT-0",
    "License :: OSI Approved :: Apache Software License": "Apache-2.0",
    "License :: OSI Approved :: ISC License (ISCL)": "ISC",
    "License :: OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "License :: OSI Approved :: GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "License :: OSI Approved :: GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "License :: OSI Approved :: GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "License :: OSI Approved :: GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "License :: OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "License :: OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "License :: OSI Approved :: GNU Affero General Public License v3": "AGPL-3.0-only",
    "License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "License :: OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "License :: OSI Approved :: zlib/libpng License": "Zlib",
    "License :: OSI Approved :: Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "License :: OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "License :: OSI Approved :: Universal Permissive License (UPL)": "UPL-1.0",
    "License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
}
# A License field longer than this, or of several lines, is the license's text, not its name.
_MAX_NAME = 120


@functools.cache
def licensing() -> Licensing:
    """SPDX's license list as license-expression knows it (read once: about 0.5 s)."""
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def spdx_expression(text: str) -> str | None:
    """`text` normalized as an SPDX expression ("gpl-3.0" -> "GPL-3.0-only"), or None when it is not one."""
    text = text.strip()
    if not text or "\n" in text or len(text) > _MAX_NAME:
        return None
    info = licensing().validate(text)
    if info.errors or info.invalid_symbols or not info.normalized_expression:
        return None
    return str(info.normalized_expression)


@dataclass(frozen=True)
class License:
    """A distribution's license: `expression` is a normalized SPDX expression (None when its metadata gives none
    mlship can read), `declared` what the metadata said when that is not one (a short name, the classifiers),
    `source` where it came from: License-Expression, License, classifiers, or none."""

    expression: str | None
    declared: str | None = None
    source: str = "none"

    @property
    def known(self) -> bool:
        return self.expression is not None

    def describe(self) -> str:
        return self.expression or (f"unrecognized: {self.declared}" if self.declared else "no license metadata")


def read_license(expression: str | None, license_field: str | None, classifiers: Sequence[str]) -> License:
    """The License of a distribution from its metadata fields (see the module's docstring for the order)."""
    if expression and (found := spdx_expression(expression)):
        return License(found, source="License-Expression")
    if license_field and (found := spdx_expression(license_field)):
        return License(found, source="License")
    mapped = sorted({CLASSIFIERS[c] for c in classifiers if c in CLASSIFIERS})
    if mapped:
        return License(spdx_expression(" OR ".join(mapped)), source="classifiers")
    declared = expression or _short(license_field) or "; ".join(
        c.rsplit(" :: ", 1)[-1] for c in classifiers if c.startswith("License ::")) or None
    return License(None, declared=declared, source="none")


def _short(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    first = text.strip().splitlines()[0].strip()
    return first[:_MAX_NAME] + ("..." if len(first) > _MAX_NAME or "\n" in text.strip() else "")


# -- the gate ----------------------------------------------------------------------------------------------------


class LicenseError(MlshipError):
    """A denied license (or, when asked, a package without one) in what is being built."""


@dataclass(frozen=True)
class LicensePolicy:
    """What --deny-licenses asks: the SPDX ids no package may need, and whether a package without readable license
    metadata fails too (--deny-unknown-licenses) or is only listed."""

    deny: tuple[str, ...] = ()
    fail_unknown: bool = False

    @classmethod
    def parse(cls, values: Iterable[str], *, fail_unknown: bool = False, where: str = "--deny-licenses") -> LicensePolicy:
        """From `GPL-3.0-only,AGPL-3.0-only` (repeatable, comma-separated); each must be an SPDX license id."""
        ids: list[str] = []
        for value in values:
            for item in (part.strip() for part in value.split(",")):
                if not item:
                    continue
                found = spdx_expression(item)
                if found is None or " " in found:
                    raise LicenseError(f"{where}: {item!r} is not an SPDX license id",
                                       hint="use ids from https://spdx.org/licenses/, e.g. GPL-3.0-only,AGPL-3.0-only")
                ids.append(found)
        return cls(tuple(dict.fromkeys(ids)), fail_unknown)

    @property
    def active(self) -> bool:
        return bool(self.deny) or self.fail_unknown


def denied_by(expression: str, deny: Sequence[str]) -> list[str]:
    """The denied licenses that make `expression` unusable, [] when it is allowed.

    The expression is put in disjunctive normal form: `MIT OR GPL-3.0-only` can be taken as MIT and is allowed,
    `MIT AND GPL-3.0-only` needs GPL-3.0-only. A `WITH` exception does not change which license it is.
    """
    lic = licensing()
    blocked = {key.lower() for key in deny}
    choices: Any = lic.dnf(lic.parse(expression))
    terms = choices.args if type(choices).__name__ == "OR" else (choices,)
    hits: list[list[str]] = []
    for term in terms:
        keys = [symbol.key for symbol in lic.license_symbols(term, decompose=True)]
        hit = [key for key in keys if key.lower() in blocked]
        if not hit:
            return []
        hits.append(hit)
    order = [key.lower() for key in deny]
    union = sorted(dict.fromkeys(key for hit in hits for key in hit), key=lambda key: order.index(key.lower()))
    # Those every choice needs, when some are (else each choice needs one of them)
    return [key for key in union if all(key in hit for hit in hits)] or union


def check_licenses(packages: Iterable[tuple[str, License]], policy: LicensePolicy, *, what: str) -> list[str]:
    """Apply `policy` to (`name==version`, License) pairs. Raises LicenseError naming every denied package and its
    license; returns the warnings to show: each package without readable license metadata (an error instead
    with fail_unknown)."""
    denied: list[str] = []
    unknown: list[str] = []
    for name, lic in packages:
        if lic.expression is None:
            unknown.append(f"{name} ({lic.describe()})")
        elif policy.deny and (needs := denied_by(lic.expression, policy.deny)):
            denied.append(f"{name}: {lic.expression}" + ("" if needs == [lic.expression] else
                                                        f" (needs {', '.join(needs)})"))
    if denied:
        raise LicenseError(
            f"{what} needs {len(denied)} package(s) under a denied license ({', '.join(policy.deny)}): "
            + "; ".join(denied),
            hint="remove or replace those packages (pin another version with -r NAME==VERSION), or drop the "
            "license from --deny-licenses / [tool.mlship] deny_licenses",
        )
    if unknown and policy.fail_unknown:
        raise LicenseError(
            f"{what} has {len(unknown)} package(s) without a recognizable license: " + "; ".join(unknown),
            hint="check those packages' licenses by hand; without --deny-unknown-licenses they are listed, not refused",
        )
    return [f"no recognizable license: {item}" for item in unknown]
