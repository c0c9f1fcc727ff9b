"""Compare trials: a pandas DataFrame per study, a leaderboard, CSV and an HTML/PNG report."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd

from search.study import DEFAULT_STORAGE, StudyError, open_storage, redact


def _architecture(config_json: str | None) -> dict:
    """Flattened architecture columns from a stored run config."""
    if not config_json:
        return {}
    from stt.layer_config import load_layer_config

    cfg = json.loads(config_json)
    layers = load_layer_config(cfg["model"]["layers"])
    branch_types = [t for layer in layers.layers for t, _ in layer[0]]
    row = {
        "n_layers": len(layers.layers),
        "branches_per_layer": "-".join(str(len(layer[0])) for layer in layers.layers),
        "n_branches": len(branch_types),
        "width": layers.in_width,
        "total_stride": layers.total_stride,
        "receptive_field": layers.receptive_field,
        "lr": cfg["train"]["lr"],
        "train_epochs": cfg["train"]["epochs"],
    }
    for t in ("conv_block", "separable_conv_block", "attention_conv_block", "conv_attention_conv_block"):
        row[f"n_{t}"] = branch_types.count(t)
    return row


def trials_frame(study_name: str, storage: str | None = None) -> pd.DataFrame:
    """One row per trial: state, metrics, status and the flattened architecture."""
    st = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        raise StudyError(f"no study '{study_name}' in {redact(storage or DEFAULT_STORAGE)}") from None
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        row = {
            "study": study_name, "trial": t.number, "state": t.state.name,
            "value": t.values[0] if t.values else None,
            "status": ua.get("status") or t.state.name.lower(), "reason": ua.get("reason", ""),
            "dev_wer": ua.get("dev_wer"), "dev_cer": ua.get("dev_cer"), "test_wer": ua.get("test_wer"),
            "test_cer": ua.get("test_cer"), "params": ua.get("params"), "gflops_per_second": ua.get("gflops_per_second"),
            "epochs": ua.get("epochs", len(t.intermediate_values)), "wall_seconds": ua.get("wall_seconds"),
            "audio_seconds_per_second": ua.get("audio_seconds_per_second"), "device": ua.get("device"),
            "version": ua.get("version"), "run_dir": ua.get("run_dir"), "duplicate_of": ua.get("duplicate_of"),
            "retry_of": t.system_attrs.get("failed_trial"), "config_hash": ua.get("config_hash"),
            "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
        }  # fmt: skip
        if t.values and len(t.values) > 1:
            for i, v in enumerate(t.values):
                row[f"value_{i}"] = v
        row.update(_architecture(ua.get("config")))
        rows.append(row)
    return pd.DataFrame(rows)


def leaderboard(df: pd.DataFrame, top: int = 10) -> str:
    cols = ["study", "trial", "status", "dev_wer", "dev_cer", "test_wer", "params", "gflops_per_second", "epochs",
            "n_layers", "branches_per_layer", "total_stride", "width", "wall_seconds"]  # fmt: skip
    cols = [c for c in cols if c in df.columns]
    shown = df.sort_values(["dev_wer", "trial"], na_position="last").head(top)[cols].copy()
    for c in ("dev_wer", "dev_cer", "test_wer"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: f"{100 * v:.1f}%" if pd.notna(v) else "-")
    if "gflops_per_second" in shown:
        shown["gflops_per_second"] = shown["gflops_per_second"].map(lambda v: f"{v:.3f}" if pd.notna(v) else "-")
    if "wall_seconds" in shown:
        shown["wall_seconds"] = shown["wall_seconds"].map(lambda v: f"{v:.0f}" if pd.notna(v) else "-")
    return shown.to_string(index=False)


def pareto_front(df: pd.DataFrame, x: str = "params", y: str = "dev_wer") -> pd.DataFrame:
    """Rows not dominated in (x, y), both minimised."""
    d = df.dropna(subset=[x, y]).sort_values([x, y])
    keep, best = [], float("inf")
    for i, r in d.iterrows():
        if r[y] < best:
            keep.append(i)
            best = r[y]
    return d.loc[keep]


def write_report(df: pd.DataFrame, out_dir: str | Path, studies: list[str], storage: str | None = None) -> Path:
    """CSV + PNG plots + an HTML page; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "trials.csv", index=False)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, g in df.groupby("study"):
        for status, gg in g.groupby("status"):
            ax.scatter(gg["trial"], gg["dev_wer"] * 100, label=f"{name}: {status}", s=25)
        done = g.dropna(subset=["dev_wer"]).sort_values("trial")
        ax.plot(done["trial"], done["dev_wer"].cummin() * 100, lw=1)
    ax.set(xlabel="trial", ylabel="dev WER (%)", title="history (line: best so far)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, g in df.groupby("study"):
        ax.scatter(g["params"], g["dev_wer"] * 100, label=name, s=25)
    front = pareto_front(df)
    ax.step(front["params"], front["dev_wer"] * 100, where="post", color="k", lw=1, label="Pareto front")
    ax.set(xscale="log", xlabel="parameters", ylabel="dev WER (%)", title="WER vs parameters")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "wer_vs_params.png", dpi=100)
    plt.close(fig)
    importances = {}
    for name in studies:
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(storage))
            importances[name] = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
        except (RuntimeError, ValueError, ZeroDivisionError) as e:  # too few complete trials
            importances[name] = {"(not enough complete trials)": str(e)[:80]}
    imp_html = "".join(
        f"<h3>{n}</h3><table>" + "".join(f"<tr><td>{k}</td><td>{v if isinstance(v, str) else f'{v:.3f}'}</td></tr>"
                                          for k, v in list(imp.items())[:15]) + "</table>"
        for n, imp in importances.items()
    )  # fmt: skip
    html = (f"<html><head><meta charset='utf-8'><title>stt-search: {', '.join(studies)}</title></head><body>"
            f"<h1>Studies {', '.join(studies)}</h1><h2>Leaderboard</h2><pre>{leaderboard(df, 20)}</pre>"
            "<h2>History</h2><img src='history.png'><h2>WER vs parameters</h2><img src='wer_vs_params.png'>"
            f"<h2>Parameter importances (dev WER)</h2>{imp_html}<p>All trials: <a href='trials.csv'>trials.csv</a></p>"
            "</body></html>")  # fmt: skip
    (out / "report.html").write_text(html)
    return out / "report.html"
