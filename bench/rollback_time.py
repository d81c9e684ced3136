"""Time from an injected degradation to 100% on the incumbent, per serving stack (issue #13).

Runs tests/e2e/rollback_time.py (whole rollout DAGs under dag.test() on real processes: the
gateway judged from its own statistics, the gateway judged from Prometheus, nginx + MLServer
judged from Prometheus; a candidate failing 12% of its requests, caught at the 25% canary)
`--runs` times per stack, interleaved, and writes the table into docs/backends.md between the
`rollback-time` markers.

    .venv/bin/python bench/rollback_time.py            # 3 runs per stack (~10 min)
    .venv/bin/python bench/rollback_time.py --runs 1 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "backends.md"
BEGIN, END = "<!-- rollback-time:begin -->", "<!-- rollback-time:end -->"
LABELS = {
    "gateway": "gateway (its own statistics)",
    "gateway+prometheus": "gateway, judged from Prometheus (1 s scrapes)",
    "nginx": "nginx + MLServer, judged from Prometheus (1 s scrapes)",
}


def run(runs: int, out: Path) -> None:
    env = {
        **os.environ,
        "ROLLBACK_RUNS": str(runs),
        "ROLLBACK_TIMES_OUT": str(out),
        "PYTHONUNBUFFERED": "1",  # progress as it happens
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/e2e/rollback_time.py",
        "-v",
        "-s",
        "-p",
        "no:cacheprovider",
    ]
    print("running:", " ".join(cmd[2:]), flush=True)
    with subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as p:
        for line in p.stdout:
            if (
                line.startswith("ROLLBACK")
                or " PASSED" in line
                or " FAILED" in line
                or line.startswith(("FAILED", "ERROR", "="))
            ):
                print(line.rstrip(), flush=True)
    if p.returncode:
        raise SystemExit(f"the rollback runs failed (pytest exited {p.returncode})")


def table(rows: list[dict]) -> list[str]:
    base = statistics.median(r["exposed_s"] for r in rows if r["stack"] == "gateway")
    lines = [
        "| stack | runs | degraded verdict, median s (min-max) | 100% incumbent, median s "
        "(min-max) | vs gateway |",
        "|---|---:|---:|---:|---:|",
    ]
    for stack, label in LABELS.items():
        mine = [r for r in rows if r["stack"] == stack]
        if not mine:
            continue
        j = [r["judged_s"] for r in mine]
        e = [r["exposed_s"] for r in mine]
        lines.append(
            f"| {label} | {len(mine)} | {statistics.median(j):.1f} ({min(j):.1f}-{max(j):.1f}) "
            f"| {statistics.median(e):.1f} ({min(e):.1f}-{max(e):.1f}) "
            f"| {statistics.median(e) / base:.2f}x |"
        )
    return lines


def write(rows: list[dict], runs: int) -> None:
    text = DOC.read_text()
    block = [
        BEGIN,
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `bench/rollback_time.py "
        f"--runs {runs}` on {os.cpu_count()} cores ({platform.machine()}), the stacks' runs "
        "interleaved in one pytest session (tests/e2e/rollback_time.py).",
        "",
        *table(rows),
        END,
    ]
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(block) + rest.split(END, 1)[1]
    else:
        text += "\n" + "\n".join(block) + "\n"
    DOC.write_text(text)
    print(f"wrote {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="rollouts per stack")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.jsonl"
        run(args.runs, out)
        rows = [json.loads(x) for x in out.read_text().splitlines()]
    print("\n".join(table(rows)))
    if not args.no_write:
        write(rows, args.runs)


if __name__ == "__main__":
    main()
