"""The study report: one self-contained HTML file (plotly's script inline: it opens offline, and can be mailed).

What a multi-fidelity study needs to be read: each candidate's learning curve across the trials that continued
it, with the rungs and the pause/promote decisions; a leaderboard that sorts and filters; a Pareto front among
candidates at one fidelity (never a probe against a model trained in full); an architecture diagram of any
candidate, drawn as SVG from its config; and parameter importances only where there are enough candidates at
one fidelity for them to mean something. Several studies sit side by side.

Every string from a storage (names, reasons, configs) is text here, never markup: it is escaped, or passed to
plotly as data.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import optuna
import pandas as pd

from search.results.compare import candidates
from search.storage import load_study
from search.trials import Attr, Status, candidate_of, status_of
from stt.core.errors import StudyError
from stt.core.files import atomic_path, make_dir, write_text

IMPORTANCE_MIN = 10  # candidates scored at one fidelity before parameter importances are shown
PARETO_MIN = 3  # the default Pareto fidelity: the highest one with at least this many candidates
esc = html.escape


# -- data ---------------------------------------------------------------------------------------------------
def _plan(study: optuna.Study):
    """The study's fidelity plan (steps per epoch, rungs), or None for a study this tool did not create."""
    from search.study import read_settings, study_space

    try:
        settings = read_settings(study)
        return settings.fidelity(study_space(settings))
    except Exception:  # an older or foreign study: curves are drawn by step, without rungs
        return None


def curves(study: optuna.Study) -> dict[int, dict]:
    """Per candidate: its dev signal by fidelity (epochs) across all its trials, its dev WER by epoch, whether it
    is a seed, and the pause/promote decisions on its way ``[(epochs, what, why)]``."""
    plan = _plan(study)
    units = plan.units if plan is not None else 1
    out: dict[int, dict] = {}
    for t in study.get_trials(deepcopy=False):
        c = candidate_of(t)
        if not isinstance(c, int):
            continue
        d = out.setdefault(c, {"signal": {}, "wer": {}, "seed": None, "events": [], "trials": []})
        d["trials"].append(t.number)
        d["signal"].update({s / units: v for s, v in t.intermediate_values.items()})
        history = t.user_attrs.get(Attr.HISTORY)
        if isinstance(history, dict) and isinstance(history.get("dev_wer"), list):
            d["wer"].update({i + 1: w for i, w in enumerate(history["dev_wer"]) if isinstance(w, (int, float))})
        if isinstance(t.user_attrs.get(Attr.SEED), str):
            d["seed"] = t.user_attrs[Attr.SEED]
        reached = max(t.intermediate_values, default=0) / units
        if status_of(t) == Status.PAUSED:
            d["events"].append((reached, "paused", str(t.user_attrs.get(Attr.REASON, ""))))
        if Attr.CONTINUES in t.user_attrs:
            first = min((s for s in t.intermediate_values), default=0) / units
            d["events"].append((first, "promoted", f"trial {t.number} continues trial {t.user_attrs[Attr.CONTINUES]}"))
    return out


def fidelity_scores(study: optuna.Study, df: pd.DataFrame) -> dict[float, dict[int, float]]:
    """Dev WER by fidelity (epochs) and candidate: every epoch a candidate finished, and a probe's fraction."""
    out: dict[float, dict[int, float]] = {}
    for c, d in curves(study).items():
        for epoch, wer in d["wer"].items():
            out.setdefault(float(epoch), {})[c] = wer
    for _, r in candidates(df[df["study"] == study.study_name]).iterrows():
        e = pd.to_numeric(r.get("epochs"), errors="coerce")
        if pd.notna(r.get("dev_wer")) and pd.notna(e) and 0 < e < 1:  # stopped at the probe
            out.setdefault(round(float(e), 2), {})[int(r["candidate"])] = float(r["dev_wer"])
    return dict(sorted(out.items()))


def default_fidelity(scores: dict[float, dict]) -> float | None:
    """The highest fidelity with at least PARETO_MIN candidates (else the one with the most)."""
    if not scores:
        return None
    enough = [f for f, s in scores.items() if len(s) >= PARETO_MIN]
    return max(enough) if enough else max(scores, key=lambda f: (len(scores[f]), f))


# -- figures --------------------------------------------------------------------------------------------------
def learning_curves(study: optuna.Study):
    import plotly.graph_objects as go

    plan, data = _plan(study), curves(study)
    signal = "dev loss"
    fig = go.Figure()
    n_signal = 0
    for c, d in sorted(data.items()):
        if not d["signal"]:
            continue
        xs = sorted(d["signal"])
        seed = d["seed"] is not None
        name = f"{c} (seed {d['seed']})" if seed else str(c)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[d["signal"][x] for x in xs],
                mode="lines+markers",
                name=name,
                line={"width": 4 if seed else 1.5, **({"color": "black"} if seed else {})},
                hovertemplate=f"candidate {c}<br>%{{x:.2f}} epochs<br>{signal} %{{y:.3f}}<extra></extra>",
            )
        )
        n_signal += 1
        for epochs, what, why in d["events"]:
            y = d["signal"].get(epochs, d["signal"][xs[-1]])
            fig.add_trace(
                go.Scatter(
                    x=[epochs],
                    y=[y],
                    mode="markers",
                    marker={"symbol": "x" if what == "paused" else "triangle-up", "size": 11},
                    showlegend=False,
                    name=f"{c} {what}",
                    hovertext=f"candidate {c} {what} at {epochs:.2f} epochs: {why}",
                    hoverinfo="text",
                )
            )
    if plan is not None:
        for rung in plan.rungs:
            fig.add_vline(x=rung / plan.units, line_dash="dot", line_color="grey", opacity=0.6)
    fig.update_layout(
        title=f"{study.study_name}: learning curves (rungs dotted; x paused, ▲ promoted; seed in black)",
        xaxis_title="epochs",
        yaxis_title=signal,
        height=420,
        margin={"l": 50, "r": 10, "t": 50, "b": 40},
    )
    return fig if n_signal else None


_PER_FIDELITY = 4  # traces each fidelity adds to the Pareto figure: points and front, in each of its two panels


def pareto(study: optuna.Study, df: pd.DataFrame, scores: dict | None = None):
    """Dev WER against GFLOPs per audio-second and against parameters, among candidates at one fidelity; a menu
    picks the fidelity (default: the highest with at least PARETO_MIN candidates). ``scores``: the study's
    :func:`fidelity_scores`, when already computed."""
    from plotly.subplots import make_subplots

    scores = fidelity_scores(study, df) if scores is None else scores
    if not scores:
        return None
    rows = candidates(df[df["study"] == study.study_name]).set_index("candidate")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("dev WER vs GFLOPs/s of audio", "dev WER vs parameters"))
    default = default_fidelity(scores)
    for f, by_candidate in scores.items():
        _add_fidelity(fig, f, _points(by_candidate, rows), visible=f == default)
    n = len(scores)
    buttons = [
        {
            "label": f"{f:g} epochs ({len(by_candidate)} candidates)",
            "method": "update",
            "args": [{"visible": [j // _PER_FIDELITY == i for j in range(_PER_FIDELITY * n)]}],
        }
        for i, (f, by_candidate) in enumerate(scores.items())
    ]
    menu = {"buttons": buttons, "active": list(scores).index(default), "x": 1.0, "y": 1.25, "xanchor": "right"}
    fig.update_layout(
        title=f"{study.study_name}: Pareto front at one fidelity",
        updatemenus=[menu],
        height=420,
        margin={"l": 50, "r": 10, "t": 90, "b": 40},
    )
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text="dev WER (%)", row=1, col=1)
    return fig


def _points(by_candidate: dict[int, float], rows: pd.DataFrame) -> pd.DataFrame:
    """The candidates scored at one fidelity: dev WER (%), GFLOPs per audio-second, parameters."""
    return pd.DataFrame(
        [
            {
                "candidate": c,
                "wer": 100 * w,
                "gflops": rows.loc[c, "gflops_per_second"] if c in rows.index else None,
                "params": rows.loc[c, "params"] if c in rows.index else None,
            }
            for c, w in by_candidate.items()
        ]
    )


def _add_fidelity(fig, f: float, pts: pd.DataFrame, visible: bool) -> None:
    """One fidelity's points and Pareto front in both panels (_PER_FIDELITY traces, shown with ``visible``)."""
    import plotly.graph_objects as go

    from search.results.compare import pareto_front

    for col, x in ((1, "gflops"), (2, "params")):
        d = pts.dropna(subset=[x])
        front = pareto_front(d, x=x, y="wer")
        fig.add_trace(
            go.Scatter(
                x=d[x],
                y=d["wer"],
                mode="markers",
                text=[f"candidate {c}" for c in d["candidate"]],
                hovertemplate="%{text}<br>%{x:.4g}<br>dev WER %{y:.1f}%<extra></extra>",
                name=f"{f:g} epochs",
                showlegend=False,
                visible=visible,
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=front[x],
                y=front["wer"],
                mode="lines",
                line={"shape": "hv", "color": "black", "width": 1},
                name="Pareto front",
                showlegend=False,
                visible=visible,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )


def importances(study: optuna.Study, df: pd.DataFrame, scores: dict | None = None):
    """Parameter importances for dev WER at the highest fidelity with IMPORTANCE_MIN candidates: (figure, None),
    or (None, why there is none)."""
    import plotly.graph_objects as go

    scores = fidelity_scores(study, df) if scores is None else scores
    enough = [f for f, s in scores.items() if len(s) >= IMPORTANCE_MIN]
    if not enough:
        most = max(scores.items(), key=lambda kv: len(kv[1]), default=(None, {}))
        where = f" (at {most[0]:g} epochs)" if most[0] is not None else ""
        return None, (
            f"{study.study_name}: parameter importances need at least {IMPORTANCE_MIN} candidates scored at one "
            f"fidelity; the most here is {len(most[1])}{where}, so none are shown"
        )
    level = max(enough)
    firsts = {t.number: t for t in study.get_trials(deepcopy=False)}
    at_level = optuna.create_study()
    for c, wer in scores[level].items():
        t = firsts.get(c)
        if t is None or not t.distributions:
            continue
        at_level.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=wer))
    try:
        imp = optuna.importance.get_param_importances(at_level)
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        return None, f"{study.study_name}: parameter importances could not be computed ({str(e)[:120]})"
    names = list(imp)[:15][::-1]
    fig = go.Figure(go.Bar(x=[imp[k] for k in names], y=names, orientation="h"))
    fig.update_layout(
        title=f"{study.study_name}: parameter importances for dev WER at {level:g} epochs "
        f"({len(scores[level])} candidates)",
        height=max(300, 24 * len(names) + 100),
        margin={"l": 200, "r": 10, "t": 50, "b": 40},
    )
    return fig, None


# -- architecture diagram -----------------------------------------------------------------------------------------
_COLOURS = {
    "conv_block": "#cfe2f3",
    "separable_conv_block": "#d9ead3",
    "attention_conv_block": "#fce5cd",
    "conv_attention_conv_block": "#f4cccc",
    "jasper_block": "#d9d2e9",
}


_SHORT = (  # a branch's settings worth a glance, as the diagram writes them
    ("kernel", "k"),
    ("kernel_conv", "k"),
    ("kernel_attn", "ka"),
    ("dil", "d"),
    ("dil_conv", "d"),
    ("stride", "s"),
    ("stride_conv", "s"),
    ("n_heads", "h"),
    ("repeat", "×"),
    ("d_ff", "ff"),
)


def _branch_label(t: str, kw: dict) -> str:
    parts = [t.replace("_block", "")]
    for key, short in _SHORT:
        if key in kw and (kw[key] not in (None, 1) or key.startswith("kernel")):
            parts.append(f"{short}{kw[key]}")
    parts += [word for key, word in (("separable", "sep"), ("se", "SE")) if kw.get(key)]
    if kw.get("k") == 2:
        parts.append("GLU")
    return " ".join(parts)


def architecture_svg(config_json: str) -> str:
    """An SVG of a run config's model: a row per layer (its widths in and out, its stride), its blocks in order,
    each block's parallel branches stacked (type, kernel, dilation, stride, heads, GLU)."""
    from stt.model.layer_config import load_layer_config

    cfg = json.loads(config_json)
    layers = load_layer_config(cfg["model"]["layers"])
    box_w, box_h, gap, label_w = 190, 22, 8, 150
    rows, y = [], 10
    width = label_w
    for i, layer in enumerate(layers.layers):
        c_in, c_out = layers.layer_in_out(i)
        height = max(len(blk) for blk in layer) * (box_h + 4) + 8
        rows.append(
            f"<text x='4' y='{y + 14}' font-size='12' font-weight='bold'>layer {i}</text>"
            f"<text x='4' y='{y + 30}' font-size='11'>{c_in}→{c_out}, stride {layers.layer_stride(i)}</text>"
        )
        x = label_w
        for blk in layer:
            by = y
            for t, kw in blk:
                colour = _COLOURS.get(t, "#eeeeee")
                rows.append(
                    f"<rect x='{x}' y='{by}' width='{box_w}' height='{box_h}' rx='4' fill='{colour}' stroke='#555'/>"
                    f"<text x='{x + 6}' y='{by + 15}' font-size='11'>{esc(_branch_label(t, kw))}</text>"
                )
                by += box_h + 4
            x += box_w + gap
        width = max(width, x)
        y += height + gap
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width + 10}' height='{y + 4}' "
        f"font-family='sans-serif' role='img'>{''.join(rows)}</svg>"
    )


# -- the page -------------------------------------------------------------------------------------------------
_COLUMNS = [
    ("study", "study", "text"),
    ("candidate", "candidate", "num"),
    ("status", "status", "text"),
    ("epochs", "fidelity (epochs)", "num"),
    ("dev_wer", "dev WER", "pct"),
    ("dev_wer_beam", "dev WER (beam)", "pct"),
    ("test_wer", "test WER", "pct"),
    ("test_wer_beam", "test WER (beam)", "pct"),
    ("params", "parameters", "num"),
    ("gflops_per_second", "GFLOPs/s", "num"),
    ("n_layers", "layers", "num"),
    ("blocks", "block types", "text"),
    ("seed", "seed", "text"),
]


def _cell(value, kind: str) -> tuple[str, str]:
    """(shown text, sort key) of a leaderboard cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-", ""
    if kind == "pct":
        return f"{100 * float(value):.1f}%", f"{float(value):.6f}"
    if kind == "num":
        v = float(value)
        shown = f"{v:,.0f}" if v >= 1000 or v == int(v) else f"{v:.3g}"
        return shown, f"{v:.6f}"
    return str(value), str(value)


def _anchor(r) -> str:
    """The id of a candidate's architecture section (its study and trial), which its config link opens."""
    return f"cfg-{esc(str(r['study']))}-{int(r['trial'])}"


def leaderboard_table(df: pd.DataFrame) -> str:
    rows = candidates(df).sort_values(["dev_wer", "trial"], na_position="last")
    block_cols = [c for c in rows.columns if c.startswith("n_") and c.endswith("_block")]
    head = "".join(f"<th data-kind='{k}' onclick='sortBy(this)'>{esc(label)}</th>" for _, label, k in _COLUMNS)
    body = []
    for _, r in rows.iterrows():
        r = r.copy()
        r["blocks"] = " ".join(c[2:].replace("_block", "") for c in block_cols if pd.notna(r[c]) and r[c] > 0)
        r["seed"] = r["seed"] if isinstance(r.get("seed"), str) else ""
        cells = []
        for col, _, kind in _COLUMNS:
            shown, key = _cell(r.get(col), kind)
            cells.append(f"<td data-v='{esc(key)}'>{esc(shown)}</td>")
        anchor = _anchor(r)
        cells.append(f"<td><a href='#{anchor}' onclick='showArch(\"{anchor}\")'>config</a></td>")
        body.append(f"<tr data-status='{esc(str(r['status']))}'>{''.join(cells)}</tr>")
    statuses = sorted(set(rows["status"].astype(str)))
    options = "".join(f"<option>{esc(s)}</option>" for s in statuses)
    return (
        "<div class='filters'>filter: <input id='q' oninput='filterRows()' placeholder='block type, seed, ...'> "
        f"status: <select id='st' onchange='filterRows()'><option value=''>all</option>{options}</select></div>"
        f"<table id='board'><thead><tr>{head}<th>config</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _configs(df: pd.DataFrame) -> str:
    out = []
    for _, r in candidates(df).iterrows():
        cfg = r.get("config")
        if not isinstance(cfg, str) or not cfg:
            continue
        anchor = _anchor(r)
        try:
            svg = architecture_svg(cfg)
        except Exception as e:  # a config this version cannot read: say so, keep the text
            svg = f"<p>(no diagram: {esc(str(e)[:160])})</p>"
        pretty = json.dumps(json.loads(cfg), indent=1)
        out.append(
            f"<div class='arch' id='{anchor}'><h3>{esc(str(r['study']))}, candidate {int(r['candidate'])} "
            f"(trial {int(r['trial'])})</h3>{svg}<details><summary>config</summary><pre>{esc(pretty)}</pre>"
            "</details></div>"
        )
    return "".join(out)


_SCRIPT = """
function sortBy(th) {
  const table = th.closest('table'), i = [...th.parentNode.children].indexOf(th), kind = th.dataset.kind;
  const asc = th.dataset.asc !== '1'; th.parentNode.querySelectorAll('th').forEach(h => delete h.dataset.asc);
  th.dataset.asc = asc ? '1' : '0';
  const rows = [...table.tBodies[0].rows];
  const key = r => r.cells[i].dataset.v;
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === '' || y === '') return (x === '') - (y === '');  // blanks last, either way
    const d = kind === 'text' ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
    return asc ? d : -d;
  });
  rows.forEach(r => table.tBodies[0].appendChild(r));
}
function filterRows() {
  const q = document.getElementById('q').value.toLowerCase(), st = document.getElementById('st').value;
  document.querySelectorAll('#board tbody tr').forEach(r => {
    r.style.display = (!q || r.textContent.toLowerCase().includes(q)) && (!st || r.dataset.status === st) ? '' : 'none';
  });
}
function showArch(id) {
  document.querySelectorAll('.arch').forEach(a => a.style.display = a.id === id ? '' : 'none');
}
"""

_STYLE = """
body { font-family: sans-serif; margin: 1em 2em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { cursor: pointer; background: #f0f0f0; }
.row { display: flex; flex-wrap: wrap; gap: 1em; }
.row > div { flex: 1 1 600px; min-width: 500px; }
.arch { display: none; } .arch:first-of-type { display: block; }
.note { color: #555; }
"""


def _figure_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def report_html(df: pd.DataFrame, studies: list[optuna.Study]) -> str:
    """The whole report as one HTML page."""
    from plotly.offline import get_plotlyjs

    names = esc(", ".join(s.study_name for s in studies))

    def row(figs) -> str:
        return "<div class='row'>" + "".join(f"<div>{f}</div>" for f in figs) + "</div>"

    curves_html = row(
        _figure_html(f) if f else "<p class='note'>no curve yet</p>" for f in map(learning_curves, studies)
    )
    scores = [fidelity_scores(s, df) for s in studies]  # once per study: its Pareto and importances read them
    pareto_html = row(
        _figure_html(f) if f else "<p class='note'>no scored candidate yet</p>"
        for f in (pareto(s, df, sc) for s, sc in zip(studies, scores))
    )
    imp = []
    for s, sc in zip(studies, scores):
        fig, why = importances(s, df, sc)
        imp.append(_figure_html(fig) if fig is not None else f"<p class='note'>{esc(why)}</p>")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>stt-search: {names}</title>"
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script><script>{_SCRIPT}</script></head><body>"
        f"<h1>Studies {names}</h1>"
        f"<h2>Leaderboard</h2><p class='note'>one row per candidate (its most-trained trial); click a column to "
        f"sort</p>{leaderboard_table(df)}"
        f"<h2>Learning curves</h2>{curves_html}"
        f"<h2>Pareto fronts</h2>{pareto_html}"
        f"<h2>Architectures</h2><p class='note'>the leaderboard's config links choose one</p>{_configs(df)}"
        f"<h2>Parameter importances</h2>{row(imp)}"
        "<p>All trials: <a href='trials.csv'>trials.csv</a></p></body></html>"
    )


def write_report(df: pd.DataFrame, out_dir: str | Path, studies: list[str], storage: str | None = None) -> Path:
    """The report (``search.results.report``: one self-contained HTML file) and the trials as CSV; the HTML path."""
    out = Path(out_dir)
    if not df["dev_wer"].notna().any():
        raise StudyError(
            f"{', '.join(studies)}: no trial has finished yet, nothing to compare "
            "(`stt-search resume` continues a study)"
        )
    page = report_html(df, [load_study(n, storage) for n in studies])
    make_dir(out)
    with atomic_path(out / "trials.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_text(out / "report.html", page)  # last: a report.html means the whole report is there
    return out / "report.html"
