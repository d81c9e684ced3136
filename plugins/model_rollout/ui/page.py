"""Server-rendered HTML of the Rollouts page (inline CSS and SVG; no scripts, no CDN)."""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from model_rollout.ui import charts
from model_rollout.ui.data import stage_label

STATE_CLASS = {
    "rolling_out": "run",
    "promoted": "ok",
    "standby": "muted",
    "decommissioned": "muted",
    "rolled_back": "bad",
    "blocked": "bad",
    "healthy": "ok",
    "passed": "ok",
    "success": "ok",
    "degraded": "bad",
    "failed": "bad",
    "inconclusive": "warn",
    "running": "run",
}

CSS = """
:root{--bg:#f8fafc;--card:#fff;--fg:#0f172a;--mut:#64748b;--line:#e2e8f0}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1240px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:0}h3{font-size:14px;margin:16px 0 6px;
color:var(--mut);text-transform:uppercase;letter-spacing:.04em}
a{color:#1d4ed8;text-decoration:none}a:hover{text-decoration:underline}
.top{display:flex;justify-content:space-between;align-items:baseline;gap:12px;flex-wrap:wrap}
.meta{color:var(--mut);font-size:12px}.card{background:var(--card);border:1px solid var(--line);
border-radius:8px;padding:14px 16px;margin-top:14px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;
border-bottom:1px solid var(--line);vertical-align:top}th{font-size:12px;color:var(--mut);
font-weight:600}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
background:#e2e8f0;color:#334155;white-space:nowrap}.badge.ok{background:#dcfce7;color:#166534}
.badge.bad{background:#fee2e2;color:#991b1b}.badge.warn{background:#fef9c3;color:#854d0e}
.badge.run{background:#dbeafe;color:#1e40af}.badge.muted{background:#f1f5f9;color:#64748b}
.split{display:flex;width:240px;height:20px;border-radius:4px;overflow:hidden;font-size:11px;
color:#fff;font-weight:600}.split .seg{display:flex;align-items:center;justify-content:center;
overflow:hidden;white-space:nowrap;min-width:2px}.split.empty{color:var(--mut);font-weight:400}
.sub{color:var(--mut);font-size:12px}.reason{border-left:4px solid #dc2626;background:#fef2f2;
padding:8px 12px;margin:10px 0;border-radius:4px}.reason.ok{border-color:#16a34a;background:#f0fdf4}
.reason.warn{border-color:#ca8a04;background:#fefce8}
.steps{display:flex;flex-wrap:wrap;gap:4px;align-items:center;margin:6px 0}
.step{border:1px solid var(--line);border-radius:6px;padding:4px 8px;background:#fff;min-width:84px}
.step b{display:block;font-size:13px}.step.bad{border-color:#fca5a5;background:#fef2f2}
.step.ok{border-color:#86efac}.step.warn{border-color:#fde047}.step.run{border-color:#93c5fd}.arrow{color:var(--mut)}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:6px 14px}
.chart-box h4{margin:6px 0 2px;font-size:13px}.legend{display:flex;gap:14px;flex-wrap:wrap;
font-size:12px;margin:4px 0}.sw{display:inline-block;width:14px;height:3px;vertical-align:middle;
margin-right:4px}.sw.d{background:none!important;border-top:2px dashed}
svg.chart{max-width:100%;height:auto;background:#fff}svg .grid{stroke:#eef2f7}
svg .ylab{font-size:10px;fill:#64748b;text-anchor:end}svg .xlab{font-size:10px;fill:#64748b}
svg .marker{stroke-dasharray:3 3;stroke-width:1.2}svg .mlab{font-size:10px}
svg .empty{font-size:12px;fill:#94a3b8}
.bar{position:relative;width:120px;height:8px;background:#f1f5f9;border-radius:4px;
margin-top:3px}.bar i{position:absolute;left:0;top:0;bottom:0;border-radius:4px}
.bar u{position:absolute;top:-3px;bottom:-3px;width:2px;background:#0f172a}
.errors{background:#fff7ed;border:1px solid #fed7aa;border-radius:8px;padding:8px 12px;
margin-top:12px;font-size:13px}code{font-size:12px}
"""


def _badge(text: Any, kind: str | None = None) -> str:
    if text in (None, ""):
        return '<span class="sub">—</span>'
    cls = kind if kind is not None else STATE_CLASS.get(str(text), "")
    return f'<span class="badge {cls}">{escape(str(text).replace("_", " "))}</span>'


def _when(t: float | None) -> str:
    if not t:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        if abs(v) >= 1e18:  # the judge's JSON clips infinities to +-1e18
            return "∞" if v > 0 else "-∞"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits}g}"
        return (
            f"{v:.{digits}g}"
            if abs(v) < 1
            else f"{v:,.{max(digits - 1, 1)}f}".rstrip("0").rstrip(".")
        )
    return escape(str(v))


def _evalue(log_e: Any) -> str:
    if not isinstance(log_e, int | float):
        return "—"
    return _num(math.exp(min(float(log_e), 700.0)))


class Links:
    """URLs of Airflow pages (under its base path) and of the MLflow UI."""

    def __init__(self, airflow_base: str, page: str, tracking_uri: str | None):
        self.base = airflow_base.rstrip("/")
        self.page = page
        self.mlflow = (
            tracking_uri.rstrip("/")
            if tracking_uri and tracking_uri.startswith(("http://", "https://"))
            else None
        )

    def dag(self, dag_id: str) -> str:
        return f"{self.base}/dags/{quote(dag_id, safe='')}"

    def run(self, dag_id: str, run_id: str) -> str:
        return f"{self.dag(dag_id)}/runs/{quote(run_id, safe='')}"

    def detail(self, model: str, version: str | None = None) -> str:
        q = {"model": model, **({"version": version} if version else {})}
        return f"{self.page}?{urlencode(q)}#model-{quote(model)}"

    def mlflow_version(self, model: str, version: str) -> str | None:
        return f"{self.mlflow}/#/models/{quote(model)}/versions/{version}" if self.mlflow else None

    def mlflow_run(self, experiment_id: str | None, run_id: str) -> str | None:
        if not (self.mlflow and experiment_id):
            return None
        return f"{self.mlflow}/#/experiments/{experiment_id}/runs/{run_id}"


def _a(href: str | None, text: str, top: bool = True) -> str:
    if not href:
        return escape(text)
    target = ' target="_top"' if top else ""
    return f'<a href="{escape(href)}"{target}>{escape(text)}</a>'


def colors_for(model: dict[str, Any]) -> dict[str, str]:
    """One color per version: incumbent/champion first, then the others by version number."""
    versions: set[str] = set((model.get("route") or {}).get("weights") or {})
    versions |= set((model.get("route") or {}).get("shadows") or [])
    for arm in (model.get("series") or {}).get("arms") or []:
        versions.add(arm["version"])
    for r in model.get("rollouts") or []:
        versions.add(r["version"])
    ordered = sorted(versions, key=lambda v: int(v) if v.isdigit() else 1 << 30)
    return {v: charts.PALETTE[i % len(charts.PALETTE)] for i, v in enumerate(ordered)}


# --- sections ----------------------------------------------------------------------------
def _verdict_cell(rollout: dict[str, Any] | None) -> str:
    if not rollout:
        return '<span class="sub">no rollout yet</span>'
    v = rollout.get("verdict") or {}
    status = v.get("status")
    failing = [k for k, s in v.items() if k != "status" and s == "degraded"]
    extra = f' <span class="sub">{escape(", ".join(failing))}</span>' if failing else ""
    return _badge(status or "none recorded", None if status else "muted") + extra


def summary_table(data: dict[str, Any], links: Links) -> str:
    rows = []
    for m in data["models"]:
        colors = colors_for(m)
        route = m.get("route")
        split = (
            charts.split_bar(route["weights"], colors)
            if route
            else '<span class="sub">not served</span>'
        )
        if route and (route["shadows"] or route.get("staging")):
            bits = [f"shadow v{escape(s)}" for s in route["shadows"]]
            bits += [f"staging v{escape(str(route['staging']))}"] if route.get("staging") else []
            split += f'<div class="sub">{", ".join(bits)}</div>'
        aliases = ", ".join(f"{escape(k)}: v{escape(v)}" for k, v in sorted(m["aliases"].items()))
        r = m.get("rollout")
        run = (r or {}).get("run")
        rollout_cell = (
            f'v{escape(r["version"])} {_badge(r["state"])}<div class="sub">stage: '
            f"{escape(stage_label(r['stage']))}</div>"
            if r
            else '<span class="sub">—</span>'
        )
        run_cell = (
            _a(links.run(m["dag_id"], run["run_id"]), run["run_id"]) + " " + _badge(run["state"])
            if run
            else (
                _a(links.dag(m["dag_id"]), m["dag_id"])
                if m["has_dag"]
                else '<span class="sub">no DAG</span>'
            )
        )
        rows.append(
            f'<tr data-model="{escape(m["name"])}"><td><a href="#model-{escape(m["name"])}">'
            f"<b>{escape(m['name'])}</b></a></td><td>{split}</td>"
            f'<td class="sub">{aliases or "—"}</td><td>{rollout_cell}</td>'
            f"<td>{_verdict_cell(r)}</td><td>{run_cell}</td></tr>"
        )
    if not rows:
        rows.append(
            '<tr><td colspan="6" class="sub">No models: nothing served, no rollout DAGs, no policies.</td></tr>'
        )
    return (
        '<div class="card"><table class="summary"><thead><tr><th>Model</th><th>Live traffic split</th>'
        "<th>Aliases</th><th>Current rollout</th><th>Last verdict</th><th>DAG run</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def progress_html(p: dict[str, Any] | None) -> str:
    """The running stage: elapsed of its window, what is not yet shown, what it still needs."""
    if not p:
        return ""
    minutes = f"{p['elapsed_seconds'] / 60:.1f} of {p['window_seconds'] / 60:.0f} min"
    if p["role"] == "guard" and p.get("leaning"):
        what = (
            "guard: a degradation is nearly shown on " + ", ".join(p["leaning"]) + "; "
            "the step holds its share until the evidence settles it"
        )
    elif p["role"] == "guard":
        what = "guard: goes on at the window's end unless a degradation is shown"
    elif not p["missing"]:
        what = "every metric shown within tolerance"
    else:
        what = "not yet shown within tolerance: " + ", ".join(p["missing"])
        need = p.get("needed_seconds")
        if need is None:
            what += " (no amount of traffic at the observed rate would show it)"
        else:
            who = "a candidate as good as the incumbent " if p.get("needed_as_baseline") else ""
            what += f"; {who}needs ~{max(need, 0) / 60:.0f} more min at the observed rate"
    return (
        f'<div class="reason warn" data-role="progress"><b>Now: {escape(stage_label(p["stage"]))}'
        f"</b> ({escape(p['role'])}), {minutes}: {escape(what)}.</div>"
    )


def timeline_html(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return '<div class="sub">No traffic steps recorded yet.</div>'
    parts = []
    for s in steps:
        cls = STATE_CLASS.get(str(s.get("outcome")), "")
        traffic = "mirror" if s["stage"] == "shadow" else f"{s['percent']}%"
        at = time.strftime("%H:%M:%S", time.gmtime(s["at"])) if s.get("at") else ""
        parts.append(
            f'<div class="step {cls}" data-stage="{escape(s["stage"])}"><b>{escape(s["label"])}</b>'
            f'<span class="sub">{escape(traffic)} {escape(at)}</span><br>{_badge(s.get("outcome"))}</div>'
        )
    return f'<div class="steps">{"<span class=arrow>→</span>".join(parts)}</div>'


def _metric_row(name: str, m: dict[str, Any]) -> str:
    value, thr = m.get("value"), m.get("threshold")
    stat = str(m.get("statistic") or "")
    if (
        stat.startswith("log e-value")
        and isinstance(value, int | float)
        and isinstance(thr, int | float)
    ):
        evidence = f"e = {_evalue(value)} vs {_evalue(thr)}"
    else:
        evidence = f"{_num(value)} vs {_num(thr)}"
    bar = ""
    if isinstance(value, int | float) and isinstance(thr, int | float) and thr > 0:
        frac = min(max(value / thr, 0.0), 1.5) / 1.5
        color = "#dc2626" if value >= thr else "#60a5fa"
        bar = (
            f'<div class="bar" title="statistic / threshold"><i style="width:{frac * 100:.1f}%;'
            f'background:{color}"></i><u style="left:{100 / 1.5:.1f}%"></u></div>'
        )
    interval = m.get("interval") or [None, None]
    est = (
        f"{_num(m.get('estimate'))} [{_num(interval[0])}, {_num(interval[1])}]"
        f' <span class="sub">tolerance {_num(m.get("tolerance"))}</span>'
    )
    samples = ", ".join(f"{escape(k)} {_num(v)}" for k, v in (m.get("samples") or {}).items())
    return (
        f'<tr data-metric="{escape(name)}"><td><b>{escape(name)}</b></td><td>{_badge(m.get("status"))}</td>'
        f'<td class="num" title="{escape(stat)}">{evidence}{bar}</td>'
        f'<td>{est}<div class="sub">{escape(m.get("scale") or "")}</div></td>'
        f'<td class="sub">{samples}</td><td>{escape(m.get("reason") or "")}</td></tr>'
    )


def evidence_html(r: dict[str, Any], links: Links) -> str:
    d = r.get("deciding")
    ev = r.get("evidence") or {}
    ev_link = ""
    if ev.get("run_id"):
        url = links.mlflow_run(ev.get("experiment_id"), ev["run_id"])
        ev_link = f'<span class="sub">evidence: {_a(url, ev.get("path") or ev["run_id"], top=False)} (MLflow run {escape(ev["run_id"][:12])})</span>'
    if not d:
        return f'<div class="sub">No judge decision recorded yet. {ev_link}</div>'
    v = d.get("verdict") or {}
    metrics = v.get("metrics") or {}
    items = metrics.items() if isinstance(metrics, dict) else ((x.get("name"), x) for x in metrics)
    rows = "".join(_metric_row(str(k), x or {}) for k, x in items)
    head = (
        f"<div>Stage <b>{escape(stage_label(d.get('stage')))}</b>: {_badge(d.get('outcome'))} "
        f'<span class="sub">{escape(str(v.get("mode") or ""))} baseline v{escape(str(v.get("baseline", "?")))} '
        f"vs candidate v{escape(str(v.get('candidate', '?')))}, alpha {_num(v.get('alpha'))} "
        f"({_num(v.get('alpha_per_metric'))} per metric)"
        f"{', ' + str(d['looks']) + ' looks' if d.get('looks') else ''}</span></div>"
        f'<div class="sub">{escape(str(d.get("reason") or v.get("reason") or ""))}</div>'
    )
    table = (
        '<table class="evidence"><thead><tr><th>Metric</th><th>Status</th><th>Evidence vs threshold</th>'
        "<th>Estimate [anytime interval]</th><th>Samples</th><th>Judge's reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return f"{head}{table}<div>{ev_link}</div>"


def charts_html(m: dict[str, Any], colors: dict[str, str], steps: list[dict[str, Any]]) -> str:
    s = m.get("series")
    w = m.get("window") or {}
    if not s:
        return '<div class="sub">No statistics for this model.</div>'
    step = s["step"]
    xs = [t + step / 2 for t in s["t"]]
    x0, x1 = s["start"], s["end"]
    markers = [
        charts.Marker(st["at"], st["label"], "#dc2626" if st["stage"] == "rollback" else "#64748b")
        for st in steps
        if st.get("at")
    ]
    share, err, lat, legend = [], [], [], []
    for arm in s["arms"]:
        color = colors.get(arm["version"], charts.PALETTE[0])
        lab = arm["label"]
        n = arm["requests"]
        if arm["arm"] == "primary":
            share.append(
                charts.Line(
                    lab,
                    color,
                    xs,
                    [None if v is None else 100 * v for v in arm["share"]],
                    tips=[
                        f"{lab}: {'—' if v is None else f'{100 * v:.1f}%'} of {n[i]} requests"
                        if v is not None
                        else ""
                        for i, v in enumerate(arm["share"])
                    ],
                )
            )
        err.append(
            charts.Line(
                lab,
                color,
                xs,
                [None if v is None else 100 * v for v in arm["error_rate"]],
                dashed=arm["arm"] != "primary",
                tips=[f"{lab}: {arm['errors'][i]} errors / {n[i]} requests" for i in range(len(n))],
            )
        )
        lat.append(
            charts.Line(
                f"{lab} p50", color, xs, arm["p50"], tips=[f"{lab} p50 {v} ms" for v in arm["p50"]]
            )
        )
        lat.append(
            charts.Line(
                f"{lab} p99",
                color,
                xs,
                arm["p99"],
                dashed=True,
                tips=[f"{lab} p99 {v} ms" for v in arm["p99"]],
            )
        )
        total = sum(n)
        legend.append(
            f'<span><i class="sw" style="background:{color}"></i>{escape(lab)} '
            f'<span class="sub">{total} req, {sum(arm["errors"])} err</span></span>'
        )
    pct = lambda v: f"{v:g}%"  # noqa: E731
    ms = lambda v: f"{v:g} ms"  # noqa: E731
    boxes = [
        (
            "Observed traffic share per version",
            charts.line_chart(
                "Observed traffic share (%)",
                share,
                x0,
                x1,
                fmt=pct,
                y_max=100,
                markers=markers,
                name="share",
            ),
        ),
        (
            "Error rate per arm",
            charts.line_chart(
                "Error rate (%)", err, x0, x1, fmt=pct, markers=markers, name="errors"
            ),
        ),
        (
            "Latency per arm: p50 (solid), p99 (dashed)",
            charts.line_chart("Latency (ms)", lat, x0, x1, fmt=ms, markers=markers, name="latency"),
        ),
    ]
    body = "".join(f'<div class="chart-box"><h4>{escape(t)}</h4>{svg}</div>' for t, svg in boxes)
    note = (
        f"Gateway statistics per {step:g} s interval from {_when(x0)} to {_when(x1)} "
        f"(window: {escape(str(w.get('basis', '')))}), from differences of cumulative snapshots. "
        "Share = that version's answers / all live answers. Vertical lines: traffic steps."
    )
    return (
        f'<div class="legend">{"".join(legend) or "<span class=sub>no requests in this window</span>"}</div>'
        f'<div class="charts">{body}</div><div class="sub">{note}</div>'
    )


def history_html(m: dict[str, Any], links: Links) -> str:
    shown = (m.get("rollout") or {}).get("version")
    rows = []
    for r in m.get("rollouts") or []:
        run = (
            _a(links.run(m["dag_id"], r["run_id"]), r["run_id"]) + " " + _badge(r.get("run_state"))
            if r.get("run_id")
            else "—"
        )
        this = " (shown)" if r["version"] == shown else ""
        rows.append(
            f"<tr><td>{_a(links.detail(m['name'], r['version']), 'v' + r['version'], top=False)}{this}</td>"
            f"<td>{_badge(r['state'])}</td><td>{escape(stage_label(r['stage']))}</td>"
            f"<td>{_verdict_cell(r)}</td><td>{escape(r.get('reason') or '')}</td><td>{run}</td></tr>"
        )
    if len(rows) < 2:
        return ""
    return (
        "<h3>All rollouts of this model</h3><table><thead><tr><th>Version</th><th>State</th>"
        "<th>Stage</th><th>Verdict</th><th>Reason</th><th>DAG run</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def model_html(m: dict[str, Any], links: Links) -> str:
    colors = colors_for(m)
    r = m.get("rollout")
    title = f"<h2>{escape(m['name'])}</h2>"
    dag = (
        _a(links.dag(m["dag_id"]), m["dag_id"])
        if m["has_dag"]
        else '<span class="sub">no rollout DAG</span>'
    )
    if not r:
        head = f'<div class="top">{title}<span class="sub">{dag}</span></div><div class="sub">No rollout recorded on any version.</div>'
        return f'<section class="card model" id="model-{escape(m["name"])}">{head}<h3>Traffic</h3>{charts_html(m, colors, [])}</section>'
    run = r.get("run")
    run_link = (
        _a(links.run(m["dag_id"], run["run_id"]), f"DAG run {run['run_id']}")
        + " "
        + _badge(run["state"])
        if run
        else dag
    )
    mv = _a(links.mlflow_version(m["name"], r["version"]), f"v{r['version']} in MLflow", top=False)
    head = (
        f'<div class="top">{title}<span class="sub">{run_link} · {mv}</span></div>'
        f"<div>Rollout of <b>v{escape(r['version'])}</b> {_badge(r['state'])} "
        f'<span class="sub">stage {escape(stage_label(r["stage"]))}'
        f"{' · started ' + _when(r.get('start')) if r.get('start') else ''}"
        f"{' · ended ' + _when(r.get('end')) if r.get('end') and r['state'] != 'rolling_out' else ''}</span></div>"
    )
    reason = ""
    if r.get("reason") or r["state"] in ("rolled_back", "blocked"):
        label = "Rollback reason" if r["state"] == "rolled_back" else "Reason"
        reason = f'<div class="reason" data-role="reason"><b>{label}:</b> {escape(r.get("reason") or "not recorded")}</div>'
    elif r["state"] == "promoted":
        reason = '<div class="reason ok"><b>Promoted:</b> every stage was judged healthy.</div>'
    return (
        f'<section class="card model" id="model-{escape(m["name"])}" data-version="{escape(r["version"])}">{head}{reason}'
        f"<h3>Traffic steps</h3>{progress_html(r.get('progress'))}{timeline_html(r['timeline'])}"
        f"<h3>Live statistics</h3>{charts_html(m, colors, r['timeline'])}"
        f"<h3>Judge evidence</h3>{evidence_html(r, links)}{history_html(m, links)}</section>"
    )


def render(
    data: dict[str, Any],
    links: Links,
    user: str | None = None,
    query: dict[str, Any] | None = None,
    refresh: int | None = None,
) -> str:
    """The whole page; `query` is this view's parameters (model, version, window)."""
    query = {k: v for k, v in (query or {}).items() if v is not None}
    here = links.page + (f"?{urlencode(query)}" if query else "")
    if refresh:
        auto_link = f'<a href="{escape(here)}">auto-refresh off</a>'
    else:
        on = links.page + "?" + urlencode({**query, "refresh": 30})
        auto_link = f'<a href="{escape(on)}">auto-refresh 30 s</a>'
    meta_refresh = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    scope = f' · <a href="{escape(links.page)}">all models</a>' if query.get("model") else ""
    errors = "".join(f"<div>{escape(e)}</div>" for e in data.get("errors") or [])
    errors = (
        f'<div class="errors"><b>Some sources did not answer:</b>{errors}</div>' if errors else ""
    )
    sources = " · ".join(
        x
        for x in (
            f"MLflow {escape(data['tracking_uri'])}" if data.get("tracking_uri") else "",
            f"serving {escape(data['serving'])}" if data.get("serving") else "",
            f"signed in as {escape(user)}" if user else "",
        )
        if x
    )
    body = summary_table(data, links) + "".join(model_html(m, links) for m in data["models"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{meta_refresh}<title>Rollouts</title><style>{CSS}</style></head><body><main>"
        f'<div class="top"><h1>Rollouts</h1><span class="meta">updated '
        f"{_when(data['generated_at'])} in {data.get('took', 0):.1f} s · "
        f'<a href="{escape(here)}">refresh</a> · {auto_link}{scope} · '
        f'<a href="{escape(links.page)}api/rollouts">JSON</a></span></div>'
        f'<div class="meta">{sources}</div>{errors}{body}</main></body></html>'
    )
