"""A pytest plugin: seconds spent per test file (setup + call + teardown), printed at the end.

Shared fixtures are charged to the file whose test first needed them (the session's MLflow
server to the first file that used it), as pytest's own `--durations` does. With
MODEL_ROLLOUT_DURATIONS=<path>, the table is also written there as JSON ({file: [seconds,
tests]}), so `python -m support.file_durations a.json b.json` can print one table for test
groups that ran in parallel processes.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)
_tests: dict[str, int] = defaultdict(int)


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::", 1)[0]
    _seconds[path] += report.duration
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _tests[path] += 1


def table(rows: dict[str, tuple[float, int]]) -> list[str]:
    lines = [
        f"{s:8.1f} s {n:5d} tests  {p}"
        for p, (s, n) in sorted(rows.items(), key=lambda kv: -kv[1][0])
    ]
    total = sum(s for s, _ in rows.values())
    lines.append(f"{total:8.1f} s {sum(n for _, n in rows.values()):5d} tests  (sum over files)")
    return lines


def pytest_terminal_summary(terminalreporter) -> None:
    rows = {p: (s, _tests[p]) for p, s in _seconds.items()}
    if not rows:
        return
    terminalreporter.write_sep("=", "seconds per test file (setup + call + teardown)")
    for line in table(rows):
        terminalreporter.write_line(line)
    out = os.environ.get("MODEL_ROLLOUT_DURATIONS")
    if out:
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)


def main(paths: list[str]) -> None:
    """One table from the JSON files of several runs (test groups run in parallel)."""
    rows: dict[str, tuple[float, int]] = {}
    for path in paths:
        if os.path.exists(path):
            with open(path) as f:
                rows.update({p: (s, n) for p, (s, n) in json.load(f).items()})
    print("=" * 20, "seconds per test file, all groups (setup + call + teardown)", "=" * 20)
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main(sys.argv[1:])
