"""Shared by the fuzz tests: bounded hypothesis settings, and counting what each one tried.

`fuzz_settings(n)`: at most n examples (times env HOSTILE_FUZZ_SCALE, default 1), no
deadline (the machine is shared), no example database written into the repository.

Each fuzz test keeps a `Tally` of the outcomes it saw (HTTP status classes, or outcome names
for in-process targets) and ends with `tally.report()`: one line
`<target>: <n> inputs, <k> 4xx, <m> 5xx, ...` printed (visible with `-s`) and appended as JSON
to `hostile-input-counts.jsonl` in pytest's base temp folder (`--basetemp` picks it).
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

from hypothesis import HealthCheck, settings

COUNTS_FILE = "hostile-input-counts.jsonl"
SCALE_ENV = "HOSTILE_FUZZ_SCALE"


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings for one fuzz target: bounded, no deadline, no database."""
    scale = float(os.environ.get(SCALE_ENV, "1"))
    return settings(
        max_examples=max(1, round(max_examples * scale)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


class Tally:
    """Outcome counts of one fuzz target."""

    def __init__(self, target: str, basetemp: Path):
        self.target = target
        self.path = Path(basetemp) / COUNTS_FILE
        self.inputs = 0
        self.outcomes: collections.Counter[str] = collections.Counter()

    def status(self, code: int) -> None:
        """Count one HTTP answer: by class (2xx, 4xx, 5xx) and by exact code."""
        self.inputs += 1
        self.outcomes[f"{code // 100}xx"] += 1
        self.outcomes[str(code)] += 1

    def outcome(self, name: str) -> None:
        """Count one input of an in-process target by outcome name."""
        self.inputs += 1
        self.outcomes[name] += 1

    def note(self, name: str, count: int) -> None:
        """Record a count that is not an input's outcome (e.g. runs started)."""
        self.outcomes[name] = count

    def line(self) -> str:
        http = [k for k in self.outcomes if k[0].isdigit()]
        other = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()) if k not in http)
        if not http:
            return f"{self.target}: {self.inputs} inputs, {other}"
        classes = [k for k in ("2xx", "3xx", "4xx", "5xx") if k in self.outcomes or k == "5xx"]
        parts = ", ".join(f"{self.outcomes[k]} {k}" for k in classes)
        detail = ", ".join(
            f"{k}: {self.outcomes[k]}" for k in sorted(k for k in http if k.isdigit())
        )
        return f"{self.target}: {self.inputs} inputs, {parts} ({detail})" + (
            f"; {other}" if other else ""
        )

    def report(self) -> str:
        text = self.line()
        print(text)
        with self.path.open("a") as f:
            f.write(
                json.dumps(
                    {"target": self.target, "inputs": self.inputs, "outcomes": self.outcomes}
                )
                + "\n"
            )
        return text


def json_values(max_leaves: int = 20):
    """Any JSON document orjson can write: nested lists/objects of scalars, odd numbers and
    strings included (64-bit edges, floats of every size, control and non-ASCII text)."""
    from hypothesis import strategies as st

    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
        ),
        max_leaves=max_leaves,
    )


def mutated(valid: bytes):
    """`valid` with a few bytes deleted, replaced or inserted (broken JSON, split UTF-8...)."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["delete", "replace", "insert"]))
            chunk = draw(st.binary(min_size=1, max_size=8))
            if op == "delete":
                del data[pos : pos + len(chunk)]
            elif op == "replace":
                data[pos : pos + len(chunk)] = chunk
            else:
                data[pos:pos] = chunk
        return bytes(data)

    return build()


def mostly(common, rare, in_ten: int = 8):
    """`common` in about `in_ten` draws of ten, else `rare` (shrinks towards `common`)."""
    from hypothesis import strategies as st

    return st.integers(0, 9).flatmap(lambda i: common if i < in_ten else rare)
