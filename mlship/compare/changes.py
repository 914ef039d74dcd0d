"""What changed between two bundles without running them: the input schema as a client sees it, the methods, the
pinned requirements and the size on disk. (Each bundle's digest is mlship/bundle/digest.py's, the one
`mlship promote --require-report` matches a report by.)"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime._contract import Bundle, Column, InputSchema


@dataclass(frozen=True)
class Change:
    """One difference; `breaking` when a client of OLD can fail against NEW."""

    what: str
    breaking: bool

    def to_json(self) -> dict[str, Any]:
        return {"change": self.what, "breaking": self.breaking}


def bundle_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def schema_changes(old: InputSchema, new: InputSchema) -> list[Change]:
    if old.kind != new.kind:
        return [Change(f"the input changes kind: {old.kind} -> {new.kind}", True)]
    if not old.has_columns:
        changes = _column_changes("the input's values", old.fields[0], new.fields[0])
        if old.shape != new.shape:
            changes.append(Change(f"the input's shape changes: {_shape(old.shape)} -> {_shape(new.shape)}", True))
        return changes
    before = {c.name: c for c in old.columns}
    after = {c.name: c for c in new.columns}
    changes = [Change(f"NEW requires the column {name!r}, which OLD did not", True)
               for name in after if name not in before]
    changes += [Change(f"NEW no longer reads the column {name!r} (clients may still send it)", False)
                for name in before if name not in after]
    for name in after:
        if name in before:
            changes += _column_changes(f"column {name!r}", before[name], after[name])
    return changes


def _column_changes(what: str, old: Column, new: Column) -> list[Change]:
    changes = []
    if old.type != new.type:
        # Widening to `any` refuses nothing OLD accepted; every other change of type can.
        changes.append(Change(f"{what} changes type: {old.type} -> {new.type}", new.type != "any"))
    if old.nullable and not new.nullable:
        changes.append(Change(f"{what} no longer accepts null", True))
    if old.dtype != new.dtype and old.type == new.type:
        changes.append(Change(f"{what} is converted to another dtype: {old.dtype} -> {new.dtype}", False))
    return changes


def _shape(shape: tuple[int | None, ...] | None) -> str:
    return "any" if shape is None else "[" + ", ".join("null" if s is None else str(s) for s in shape) + "]"


def method_changes(old: Bundle, new: Bundle) -> list[Change]:
    before, after = old.manifest.method_names, new.manifest.method_names
    changes = [Change(f"NEW has no method {name!r}", True) for name in before if name not in after]
    changes += [Change(f"NEW adds the method {name!r}", False) for name in after if name not in before]
    return changes


_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


def _pins(requirements: tuple[str, ...]) -> dict[str, str]:
    pins = {}
    for line in requirements:
        match = _PIN.match(line.split(";")[0])
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def requirement_changes(old: tuple[str, ...], new: tuple[str, ...]) -> list[dict[str, str | None]]:
    """Each distribution whose pin differs: {"name", "old", "new"} (None: not required by that bundle)."""
    before, after = _pins(old), _pins(new)
    return [{"name": name, "old": before.get(name), "new": after.get(name)}
            for name in sorted({*before, *after}) if before.get(name) != after.get(name)]
