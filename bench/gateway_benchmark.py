"""Gateway vs `mlflow models serve`, same model, same load generator, one run.

(a) `mlflow models serve` (its own uvicorn, 1 worker); the gateway serving one version with
batching (b) auto (the default), (b-off) off and (b-on) on; (c) the gateway splitting 95/5 over
two versions (auto), request log and statistics on; (d) (c) plus a shadow mirrored on 100% of
requests. Concurrency 1, 4 and 16; requests/s, p50, p99 and their ratio to (a). Also the
gateway's own overhead per request over calling predict directly.

Writes the results table into docs/benchmarks.md. Everything runs on 127.0.0.1; the load
generator is bounded in requests and in time, and shares the machine's cores with the servers.

    .venv/bin/python bench/gateway_benchmark.py [--requests 3000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import orjson  # noqa: E402
from support.load import percentile, run_load  # noqa: E402
from support.models import IRIS_COLUMNS, iris_rows, register_iris_version, scoring_payload  # noqa: E402
from support.servers import (  # noqa: E402
    GatewayProcess,
    MlflowServer,
    env_with_venv,
    free_port,
    stop_process,
    wait_http,
)

CONCURRENCY = (1, 4, 16)
TARGETS = ("a", "b", "b-off", "b-on", "c", "d")
LABELS = {
    "a": "(a) mlflow models serve",
    "b": "(b) gateway, batching auto",
    "b-off": "(b-off) gateway, batching off",
    "b-on": "(b-on) gateway, batching on",
    "c": "(c) gateway 95/5, auto",
    "d": "(d) (c) + 100% shadow",
}
TOKEN = "bench-token"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def measure_interleaved(
    urls: dict[str, str],
    bodies: list[bytes],
    total: int,
    concurrency: int,
    rounds: int,
    max_seconds: float,
) -> dict[str, dict]:
    """Run the targets in alternating short rounds and pool each target's latencies.

    Why: the machine is shared (the load generator, other processes); slow drifts in background
    load then hit every target alike instead of whichever happened to run during them.
    """

    def make(i: int):
        return bodies[i % len(bodies)], {}

    for url in urls.values():  # warm-up: connections, batcher threads, caches
        asyncio.run(
            run_load(
                url, make, total=300, concurrency=concurrency, max_seconds=20, keep_responses=False
            )
        )
    lat: dict[str, list[float]] = {t: [] for t in urls}
    busy: dict[str, float] = dict.fromkeys(urls, 0.0)
    bad: dict[str, int] = dict.fromkeys(urls, 0)
    per_round = max(1, total // rounds)
    for _ in range(rounds):
        for t, url in urls.items():
            res = asyncio.run(
                run_load(
                    url,
                    make,
                    total=per_round,
                    concurrency=concurrency,
                    max_seconds=max_seconds / rounds,
                    keep_responses=False,
                )
            )
            lat[t].extend(res.latencies(200))
            busy[t] += res.elapsed_s
            bad[t] += len(res.responses) - res.ok + len(res.failures)
    out = {}
    for t in urls:
        xs = lat[t]
        out[t] = {
            "rps": len(xs) / busy[t] if busy[t] else 0.0,
            "p50": percentile(xs, 0.5),
            "p99": percentile(xs, 0.99),
            "mean": statistics.fmean(xs) if xs else float("nan"),
            "n": len(xs),
            "bad": bad[t],
        }
    return out


def direct_costs(tracking_uri: str, name: str, version: str, n: int = 400) -> dict:
    """Per-call cost of predict in-process: the floor the gateway's overhead is measured from."""
    import mlflow.pyfunc
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    schema = model.metadata.get_input_schema()
    payloads = [scoring_payload(iris_rows(1, seed=i)) for i in range(50)]
    frames = [infer_and_parse_data(p, schema) for p in payloads]
    for f in frames[:20]:
        model.predict(f)
    t0 = time.perf_counter()
    for i in range(n):
        model.predict(frames[i % 50])
    predict_us = (time.perf_counter() - t0) / n * 1e6
    bodies = [orjson.dumps(p) for p in payloads]
    t0 = time.perf_counter()
    for i in range(n):
        model.predict(infer_and_parse_data(orjson.loads(bodies[i % 50]), schema))
    parse_predict_us = (time.perf_counter() - t0) / n * 1e6
    batch = infer_and_parse_data(scoring_payload(iris_rows(16, seed=1)), schema)
    assert list(batch.columns) == IRIS_COLUMNS
    t0 = time.perf_counter()
    for _ in range(n // 4):
        model.predict(batch)
    batch16_us = (time.perf_counter() - t0) / (n // 4) * 1e6
    return {
        "predict_us": predict_us,
        "parse_predict_us": parse_predict_us,
        "batch16_us": batch16_us,
    }


def admin(gw: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers=gw.auth, timeout=120)


def setup_gateway(gw: GatewayProcess, name: str) -> None:
    from support.gateway_api import load

    versions = {"b": ["1"], "b-off": ["1"], "b-on": ["1"], "c": ["1", "2"], "d": ["1", "2", "3"]}
    with admin(gw) as c:
        for model, vs in versions.items():
            for v in vs:
                spec = {"batching": model[2:]} if model in ("b-off", "b-on") else {}
                assert load(c, model, v, f"models:/{name}/{v}", **spec)["status"] == "loaded"
        for model, route in {
            "b": {"weights": {"1": 100}},
            "b-off": {"weights": {"1": 100}},
            "b-on": {"weights": {"1": 100}},
            "c": {"weights": {"1": 95, "2": 5}},
            "d": {"weights": {"1": 95, "2": 5}, "shadows": ["3"]},
        }.items():
            r = c.put(f"/admin/models/{model}/route", json={"generation": 0, **route})
            r.raise_for_status()


def write_doc(
    path: Path, rows: list[dict], direct: dict, overhead: dict, args, notes: list[str]
) -> None:
    base = {r["c"]: r for r in rows if r["target"] == "a"}
    lines = [
        "# Gateway benchmark",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `bench/gateway_benchmark.py` on "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}. "
        "Model: iris LogisticRegression logged with `mlflow.sklearn` (signature, explicit pip requirements), "
        "registered in a real `mlflow server`. Every request is one row in `dataframe_split` form.",
        "",
        "- (a) `mlflow models serve -m models:/bench-iris/1 --env-manager local` (uvicorn, 1 worker)",
        "- (b) the gateway, one version, 100%, batching `auto` (the default): concurrent requests "
        "share a predict call, and every shared call's labels are certified equal to what each "
        "request alone would get (see docs/gateway.md, Batching)",
        "- (b-off) the same with batching `off`: every request predicted alone by MLflow's own "
        "scoring function, as (a) does",
        "- (b-on) the same with batching `on`: requests with the same columns share calls, "
        "uncertified (the gateway's behaviour before batching modes)",
        "- (c) the gateway, 95/5 over two versions (auto; request log and statistics always on)",
        "- (d) (c) plus a third version shadowing 100% of requests",
        "",
        "The load generator (`tests/support/load.py`: asyncio streams, HTTP/1.1 keep-alive, one "
        "connection per concurrent client, bounded by request count and time) runs on the same 2 "
        f"cores as the servers, so every figure includes the client's CPU. {args.requests} "
        f"measured requests per cell after a warm-up of 300, run as {args.rounds} rounds that "
        "alternate between the targets (so drifting background load hits all targets alike). "
        "Latency is client-observed; req/s is answers over the time spent on that target.",
        "",
        "| target | conc. | req/s | p50 ms | p99 ms | req/s vs (a) | p50 vs (a) | p99 vs (a) | non-200 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = base.get(r["c"])

        def ratio(k: str, r=r, a=a) -> str:
            return f"{r[k] / a[k]:.2f}x" if a else ""

        lines.append(
            f"| ({r['target']}) | {r['c']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{ratio('rps')} | {ratio('p50')} | {ratio('p99')} | {r['bad']} |"
        )
    lines += ["", "## Targets", ""]
    c16 = {r["target"]: r for r in rows if r["c"] == 16}

    def met(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    if {"a", "b"} <= set(c16):
        a, b = c16["a"], c16["b"]
        lines.append(
            f"- (b) batching auto at concurrency 16 serves {b['rps'] / a['rps']:.2f}x the "
            f"requests/s of (a) (target >= 3x): {met(b['rps'] >= 3 * a['rps'])}; p99 "
            f"{b['p99']:.2f} ms vs {a['p99']:.2f} ms (target: no worse): {met(b['p99'] <= a['p99'])}."
        )
    if {"a", "c"} <= set(c16):
        a, c = c16["a"], c16["c"]
        lines.append(
            f"- (c) at concurrency 16 serves {c['rps'] / a['rps']:.2f}x the requests/s of (a) "
            f"(target >= 1.5x): {met(c['rps'] >= 1.5 * a['rps'])}; p99 {c['p99']:.2f} ms vs "
            f"{a['p99']:.2f} ms (target: no worse): {met(c['p99'] <= a['p99'])}."
        )
    for conc in CONCURRENCY:
        cc = {r["target"]: r for r in rows if r["c"] == conc}
        if {"a", "b-off"} <= set(cc):
            a, off = cc["a"], cc["b-off"]
            keeps = ""
            if {"b", "b-on"} <= set(cc):
                keeps = (
                    f"; auto keeps {cc['b']['rps'] / cc['b-on']['rps'] * 100:.0f}% of the "
                    f"requests/s of batching on"
                )
            lines.append(
                f"- concurrency {conc}: batching off serves {off['rps'] / a['rps']:.2f}x the "
                f"requests/s of (a) (p99 {off['p99']:.2f} ms vs {a['p99']:.2f} ms){keeps}."
            )
    for conc in CONCURRENCY:
        cc = {r["target"]: r for r in rows if r["c"] == conc}
        if {"c", "d"} <= set(cc):
            c, d = cc["c"], cc["d"]
            lines.append(
                f"- concurrency {conc}: (d) primary p50 {d['p50']:.2f} ms vs (c) {c['p50']:.2f} ms "
                f"({(d['p50'] / c['p50'] - 1) * 100:+.1f}%; target within 10%): "
                f"{met(d['p50'] <= 1.1 * c['p50'])}."
            )
    lines += [
        "",
        "## Where the time goes (one row, in-process, no HTTP)",
        "",
        f"- `pyfunc.predict(DataFrame of 1 row)`: {direct['predict_us']:.0f} us per call",
        f"- parse the JSON body with MLflow's parser + predict: {direct['parse_predict_us']:.0f} us per call",
        f"- `pyfunc.predict(DataFrame of 16 rows)`: {direct['batch16_us']:.0f} us per call "
        f"({direct['batch16_us'] / 16:.0f} us per row)",
        f"- the gateway (b) at concurrency 1, client-observed mean: {overhead['client_mean_us']:.0f} us; "
        f"its own model-call time (statistics `latency_sum_ms`/requests): {overhead['server_model_us']:.0f} us",
        f"- **gateway overhead per request over calling parse + predict directly: "
        f"{overhead['client_mean_us'] - direct['parse_predict_us']:.0f} us** (HTTP, routing, thread hop, "
        f"logging, statistics, and the load generator's own share of the CPU)",
        "",
        "## What limits it",
        "",
        "- (a) and (b-off) answer one request per predict call, each with its own DataFrame, "
        "schema enforcement and thread hop; both run MLflow's own `invocations` function per "
        "request, so (b-off) gains only what the gateway's lean HTTP path saves over FastAPI, "
        "less what its request log and statistics cost. Both saturate one core early.",
        "- At concurrency 1 there is never a second request to share a call with: (b), (b-off), "
        "(b-on) and (c) all answer each request alone, the same way; their differences there "
        "are the machine's noise, a measure of how far to trust the other rows.",
        "- (b) and (b-on) answer concurrent requests with one predict call (at concurrency 16, "
        "~16 rows per call for about the cost of one); that is where the throughput comes from. "
        "(b) additionally re-enforces the batch's schema and computes the scores' rounding-error "
        "margins once per call (the certificate that keeps each label what the request alone "
        "would get): a fixed cost per call, shared by its rows.",
        "- At concurrency 16 the two cores are saturated: the load generator takes most of one, "
        "the gateway's event loop and its predict thread the other. The gateway is then bound by "
        "per-request Python work (HTTP parsing, routing, the request-log row, the statistics cell).",
        "- (d) vs (c): the shadow predicts in its own worker process (niced, never holding the "
        "gateway's GIL) in batches of ~100 ms of copies, with its version's batching mode, but "
        "each copy still costs the gateway a queue slot, a request-log row, a statistics update "
        "and a pairing, and the worker's predictions take CPU that a saturated 2-core machine does "
        "not have spare. Below saturation the primary p50 hardly moves; at concurrency 16 it moves "
        "by the shadow's CPU share.",
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path.write_text("\n".join(lines))


def same_answers(urls: dict[str, str], bodies: list[bytes]) -> tuple[int, int]:
    """(identical, compared): each body sent alone to (a) and (b); status and bytes compared."""
    same = 0
    with httpx.Client(timeout=60) as c:
        for body in bodies:
            got = [
                c.post(urls[t], content=body, headers={"Content-Type": "application/json"})
                for t in ("a", "b")
            ]
            same += got[0].status_code == got[1].status_code and got[0].content == got[1].content
    return same, len(bodies)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    procs = []
    mlflow_srv = MlflowServer(tmp / "mlflow")
    gw = None
    rows: list[dict] = []
    notes: list[str] = []
    try:
        say("starting mlflow server (~30 s)")
        uri = mlflow_srv.start()
        os.environ["MLFLOW_TRACKING_URI"] = uri
        name = "bench-iris"
        for _ in range(3):
            register_iris_version(uri, name, kind="good")
        say("registered 3 versions of bench-iris")
        bodies = [orjson.dumps(scoring_payload(iris_rows(1, seed=i))) for i in range(200)]

        serve_port = free_port()
        say("starting mlflow models serve (~20 s)")
        with open(tmp / "serve.log", "wb") as log:
            serve = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{name}/1",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(serve_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env_with_venv({"MLFLOW_TRACKING_URI": uri}),
                start_new_session=True,
            )
        procs.append(serve)
        wait_http(
            f"http://127.0.0.1:{serve_port}/ping", timeout=180, proc=serve, log=tmp / "serve.log"
        )

        say("starting the gateway")
        gw = GatewayProcess(tmp / "gateway", token=TOKEN, tracking_uri=uri).start()
        setup_gateway(gw, name)
        gw.wait_ready(timeout=120)

        urls = {"a": f"http://127.0.0.1:{serve_port}/invocations"}
        urls.update({t: f"{gw.url}/models/{t}/invocations" for t in TARGETS[1:]})
        targets = args.targets.split(",")
        loads = [os.getloadavg()[0]]
        for conc in CONCURRENCY:
            say(
                f"concurrency {conc}: {args.requests} requests per target in {args.rounds} interleaved rounds"
            )
            chosen = {t: urls[t] for t in targets}
            got = measure_interleaved(
                chosen, bodies, args.requests, conc, args.rounds, args.max_seconds
            )
            for target in targets:
                m = got[target]
                m.update(target=target, c=conc)
                rows.append(m)
                say(
                    f"    ({target}) {m['rps']:.0f} req/s, p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms, non-200 {m['bad']}"
                )
            loads.append(os.getloadavg()[0])

        say("overhead: gateway at concurrency 1 vs direct predict")
        since = time.time()
        m = measure_interleaved({"b": urls["b"]}, bodies, 1000, 1, 1, 60)["b"]
        with admin(gw) as c:
            snap = c.get("/admin/models/b/stats", params={"since": since}).json()
        arm = next(a for a in snap["arms"] if a["version"] == "1" and a["arm"] == "primary")
        overhead = {
            "client_mean_us": m["mean"] * 1000,
            "server_model_us": arm["latency_sum_ms"]
            / max(1, sum(arm["latency"]["counts"].values()))
            * 1000,
        }
        with admin(gw) as c:
            dropped = c.get("/admin/state").json()["shadow_dropped"].get("d/3", 0)
            dsnap = c.get("/admin/models/d/stats", params={"since": 0}).json()
        shadow = sum(a["requests"] for a in dsnap["arms"] if a["arm"] == "shadow")
        primary = sum(a["requests"] for a in dsnap["arms"] if a["arm"] == "primary")
        notes.append(
            f"(d) mirrored {primary} primary requests: the shadow answered {shadow} copies and "
            f"dropped {dropped} (a copy is dropped, and counted, only when the shadow's queue is full)."
        )
        pairs = [p for p in dsnap["pairs"] if p["shadow_version"] == "3"]
        if pairs:
            n_pairs = sum(p["pairs"] for p in pairs)
            n_agree = sum(p["agree"] for p in pairs)
            notes.append(
                f"(d) paired {n_pairs} predictions with the primary's, {n_agree} agreeing (same model)."
            )
        same, compared = same_answers(urls, bodies)
        notes.append(
            f"(b) answered {same} of the {compared} benchmark bodies byte-identically to (a), each "
            "sent alone (tests/parity checks every model kind and format, also under concurrency)."
        )
        with admin(gw) as c:
            versions = {
                t: c.get("/admin/state").json()["models"][t]["versions"]["1"]["batching"]
                for t in ("b", "b-off", "b-on")
            }
        for t, b in versions.items():
            notes.append(
                f"({t}) batching {b['mode']}: {b['requests']} requests answered with "
                f"{b['predict_calls']} predict calls ({b['requests'] / max(1, b['predict_calls']):.1f} "
                f"requests per call over the run)."
            )
        stop_process(serve)
        gw.stop()
        direct = direct_costs(uri, name, "1")
        say(f"direct: {direct}")
        loads.append(os.getloadavg()[0])
        notes.append(
            "1-minute load average at the start, after each concurrency and at the end: "
            + ", ".join(f"{x:.2f}" for x in loads)
            + " (above 2 means other work shared the 2 cores: absolute figures are depressed, "
            "the ratios from interleaved rounds are the figures to read)."
        )
        write_doc(Path(args.out), rows, direct, overhead, args, notes)
        say(f"wrote {args.out}")
        print(Path(args.out).read_text())
    finally:
        for p in procs:
            stop_process(p)
        if gw is not None:
            gw.stop()
        mlflow_srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
