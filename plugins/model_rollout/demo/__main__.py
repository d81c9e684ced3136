"""`python -m model_rollout.demo [--exit] [--stop] [--workdir DIR]` (what `make demo` runs).

Why the driver keeps running after the summary: the services stay up for the Airflow and
MLflow UIs until Ctrl-C, and the driver is what stops them then. `--stop` (`make demo-stop`)
stops them from another shell, through the pidfiles.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from model_rollout.demo.services import ServiceError, Services, start_ticks

DEFAULT_WORKDIR = Path(__file__).resolve().parents[3] / ".demo"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _driver_file(workdir: Path) -> Path:
    return workdir / "run" / "driver.pid"


def _stop_previous_driver(workdir: Path) -> None:
    """A demo still waiting for Ctrl-C elsewhere: let it go before we take its ports."""
    path = _driver_file(workdir)
    with contextlib.suppress(OSError, ValueError, KeyError):
        rec = json.loads(path.read_text())
        pid = int(rec["pid"])
        if pid != os.getpid() and start_ticks(pid) == rec["start_ticks"]:
            os.kill(pid, signal.SIGTERM)
            for _ in range(20):
                if start_ticks(pid) != rec["start_ticks"]:
                    break
                time.sleep(0.5)


def _write_driver(workdir: Path) -> None:
    path = _driver_file(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "start_ticks": start_ticks(os.getpid())}))


def stop(workdir: Path) -> int:
    """Stop what a previous demo started; fine when nothing runs."""
    _stop_previous_driver(workdir)
    n = Services(workdir).stop_all()
    _driver_file(workdir).unlink(missing_ok=True)
    print(f"demo: stopped {n} service(s)" if n else "demo: nothing was running")
    return 0


def wait_for_ctrl_c(services: Services) -> None:
    """Keep the services up; return on Ctrl-C, or once someone ran `make demo-stop`."""
    print("\nServices stay up. Ctrl-C stops them (or `make demo-stop` from another shell).")
    while services.records():
        time.sleep(2.0)
    print("demo: the services were stopped from elsewhere")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_rollout.demo",
        description="MLflow + gateway + airflow standalone on this machine, two rollouts "
        "(one promoted, one rolled back), then a summary. Services stay up until Ctrl-C.",
    )
    parser.add_argument(
        "--exit", action="store_true", help="stop everything after the summary (no waiting)"
    )
    parser.add_argument("--stop", action="store_true", help="stop what a previous demo started")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="state, logs, pidfiles and secrets (default: %(default)s); wiped at each run",
    )
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    if args.stop:
        return stop(workdir)

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)  # terminal closed: still stop the services
    from model_rollout.demo.scenario import Demo, DemoError

    _stop_previous_driver(workdir)
    _write_driver(workdir)
    demo = Demo(workdir)
    code = 0
    finished = False
    try:
        try:
            code = demo.run()
            finished = True
        finally:
            if demo.traffic is not None:
                demo.traffic.stop()
        if not args.exit:
            wait_for_ctrl_c(demo.services)
    except KeyboardInterrupt:
        if not finished:  # after the summary, Ctrl-C is the normal way out
            print("\ndemo: interrupted", flush=True)
            code = 130
    except (DemoError, ServiceError, TimeoutError) as e:
        print(f"\ndemo: FAILED: {e}", file=sys.stderr, flush=True)
        print(f"demo: logs in {demo.services.log_dir}", file=sys.stderr, flush=True)
        code = 1
    except Exception as e:  # anything else: still stop what we started
        print(f"\ndemo: FAILED ({type(e).__name__}): {e}", file=sys.stderr, flush=True)
        print(f"demo: logs in {demo.services.log_dir}", file=sys.stderr, flush=True)
        code = 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not orphan them
            n = demo.services.stop_all(lambda m: print(f"demo: {m}", flush=True))
            if n:
                print(f"demo: stopped {n} service(s)", flush=True)
            _driver_file(workdir).unlink(missing_ok=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
