"""Which columns of a DataFrame input the served path really reads: found by elimination, inside the kernel.

The notebook's input frame at the end of the run often holds more than a client has: the label and id columns
of a test split, columns the notebook's own transformer wrote into the frame while predicting (`X["new"] = ...`
on its input), helper columns (a `pd.cut` band used to stratify) that the model drops. A column is not required
when the served outputs on the golden rows without it are the same as with it, and nothing raises.

Columns are dropped one after another, each trial starting from the columns still kept, so the final set is
one that was itself run: of two columns that are each redundant alone (a feature and its copy), only one goes.
The caller then proves the final set row by row on every golden case (see _kernel.golden).

Like _kernel.py this runs in the notebook's kernel (install_code executes its source into the same private
module, before _kernel.py's), so it imports nothing from mlship and nothing third-party: it is given the
column names and a function that runs the served methods on the sample restricted to some of them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

# The cost is one call of the served methods (on the few golden rows) per column tried. Up to SINGLE_LIMIT
# columns, each is tried alone. A wider frame is tried in blocks of columns first (a block that can go costs one
# call for all of its columns), and only the blocks that cannot go are tried column by column. MAX_CALLS and
# MAX_SECONDS bound the whole search: the columns not tried by then are kept (required), and the caller says so.
SINGLE_LIMIT = 256
MAX_CALLS = 512
MAX_SECONDS = 60.0


def find_required(
    columns: Sequence[str],
    run: Callable[[list[str]], Any],
    same: Callable[[Any, Any], bool],
    *,
    max_calls: int = MAX_CALLS,
    max_seconds: float = MAX_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The columns the served path needs, by elimination.

    `run(kept)` returns the served outputs on the sample restricted to the columns `kept` (in their order), and
    may raise; `same(a, b)` compares two such outputs. The first call, with every column, is the reference (it
    must not raise). Returns {"required": [...], "ignored": [...], "untried": [...], "calls": n} with
    `required` in the frame's order; `untried` are the required columns kept only because the budget ran out.
    """
    names = list(columns)
    reference = run(list(names))
    kept = list(names)
    calls = 1
    start = clock()
    untried: list[str] = []

    def budget_left() -> bool:
        return calls < max_calls and clock() - start < max_seconds

    def try_drop(block: Sequence[str]) -> bool:
        nonlocal calls, kept
        trial = [name for name in kept if name not in block]
        if not trial:
            return False  # the served path always gets at least one column
        calls += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a model warning about a missing column is an answer, not noise
                outputs = run(trial)
        except Exception:  # noqa: BLE001 - whatever the served path raises without the block: it is required
            return False
        if not same(outputs, reference):
            return False
        kept = trial
        return True

    size = 1 if len(names) <= SINGLE_LIMIT else -(-len(names) // (SINGLE_LIMIT // 2))
    for first in range(0, len(names), size):
        block = names[first : first + size]
        if not budget_left():
            untried += block
            continue
        if try_drop(block) or len(block) == 1:
            continue
        for name in block:
            if budget_left():
                try_drop([name])
            else:
                untried.append(name)
    return {
        "required": kept,
        "ignored": [name for name in names if name not in kept],
        "untried": [name for name in untried if name in kept],
        "calls": calls,
    }
