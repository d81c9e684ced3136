"""Run the whole suite as two pytest processes at once (what `make test` does).

Why two: most of the suite's time is waiting (Airflow schedulers, monitor windows, servers
starting), so on a 2-core machine a second group of tests fits beside the first. The side
group is the end-to-end tests plus other files that need no session MLflow server (one would
be started for each group); the main group is everything else (so no test can be left out). Each group prints its own summary and
table of seconds per file; a last table merges them. The exit status is the worse of the two.

    python tests/run_groups.py [pytest options...]   # options go to both groups

With test paths among the arguments, pytest runs once on them (no groups).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDE = [
    "tests/e2e",
    "tests/dags/test_faults.py",  # its own MLflow server (it stops it mid-rollout)
    "tests/backends",
    "tests/gateway/test_control_plane.py",
    "tests/gateway/test_control_plane_loaded.py",
    "tests/parity",  # its own servers (`mlflow models serve` and gateways)
    "tests/hostile/test_fuzz_policy.py",  # no server at all
]


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if any(not a.startswith("-") and (ROOT / a.split("::")[0]).exists() for a in args):
        return subprocess.call([*pytest, *args], cwd=ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="model-rollout-groups-"))
    side_log = tmp / "side.log"
    env = {**os.environ}
    ignores = [f"--ignore={p}" for p in SIDE]
    print(f"side group ({' '.join(SIDE)}) runs in parallel; its output: {side_log}", flush=True)
    t0 = time.monotonic()
    with open(side_log, "wb") as out:
        side = subprocess.Popen(
            [*pytest, *args, *SIDE],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "MODEL_ROLLOUT_DURATIONS": str(tmp / "side.json")},
        )
        main_group = subprocess.Popen(
            [*pytest, *args, *ignores],
            cwd=ROOT,
            env={**env, "MODEL_ROLLOUT_DURATIONS": str(tmp / "main.json")},
        )

        def forward(signum, _frame):
            for p in (main_group, side):
                if p.poll() is None:
                    p.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        rc_main = main_group.wait()
        main_done = time.monotonic() - t0
        rc_side = side.wait()
    print(f"\n{'=' * 30} side group ({' '.join(SIDE)}) {'=' * 30}", flush=True)
    sys.stdout.write(side_log.read_text(errors="replace"))
    wall = time.monotonic() - t0
    subprocess.call(
        [
            sys.executable,
            "-m",
            "support.file_durations",
            str(tmp / "main.json"),
            str(tmp / "side.json"),
        ],
        cwd=ROOT / "tests",
    )
    print(
        f"groups: main exit {rc_main} after {main_done:.0f} s, side exit {rc_side}; "
        f"wall time {wall:.0f} s ({wall / 60:.1f} min)",
        flush=True,
    )
    bad = [rc for rc in (rc_main, rc_side) if rc != 0]
    return max(bad) if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
