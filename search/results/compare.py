"""Compare trials: a pandas DataFrame per study, a text leaderboard, and the report (``search.results.report``)."""

from __future__ import annotations

import json

import pandas as pd

from search.rescore import rescored
from search.storage import load_study
from search.trials import COLUMNS
from stt.model.blocks import BLOCKS

SEARCHABLE = [t for t, cls in BLOCKS.items() if cls.Config.searchable]  # block types a space may sample


def _architecture(config_json: str | None) -> dict:
    """Flattened architecture columns from a stored run config."""
    if not isinstance(config_json, str) or not config_json:  # a trial that stopped before its config: NaN in pandas
        return {}
    from stt.model.layer_config import load_layer_config

    cfg = json.loads(config_json)
    layers = load_layer_config(cfg["model"]["layers"])
    branch_types = [t for layer in layers.layers for t, _ in layer[0]]
    row = {
        "n_layers": len(layers.layers),
        "branches_per_layer": "-".join(str(len(layer[0])) for layer in layers.layers),
        "n_branches": len(branch_types),
        # the model's width: its first layer's (a layered space's ``width``), or its widest layer's where the
        # features enter the first layer directly (input_proj: null, e.g. QuartzNet: 64 features in)
        "width": layers.in_width
        if cfg["model"].get("input_proj")
        else max(layers.layer_in_out(i)[1] for i in range(len(layers.layers))),
        "total_stride": layers.total_stride,
        "receptive_field": layers.receptive_field,
        "lr": cfg["train"]["lr"],
        "train_epochs": cfg["train"]["epochs"],
    }
    for t in SEARCHABLE:
        row[f"n_{t}"] = branch_types.count(t)
    return row


def trials_frame(study_name: str, storage: str | None = None) -> pd.DataFrame:
    """One row per trial: Optuna's ``trials_dataframe`` plus metrics, status and the flattened architecture."""
    study = load_study(study_name, storage)
    raw = study.trials_dataframe(
        attrs=("number", "state", "values", "datetime_start", "datetime_complete", "user_attrs", "system_attrs"),
        multi_index=False,
    )
    if raw.empty:
        return pd.DataFrame(columns=["study", "trial", "state", "value", *COLUMNS])
    df = pd.DataFrame({"study": study_name, "trial": raw["number"], "state": raw["state"]})
    values = [c for c in raw.columns if c == "value" or c.startswith("values_")]
    df["value"] = raw[values[0]] if values else None
    if len(values) > 1:
        for i, c in enumerate(values):
            df[f"value_{i}"] = raw[c]
    for c in COLUMNS:
        df[c] = raw.get(f"user_attrs_{c}")
    df["status"] = df["status"].where(df["status"].notna(), raw["state"].str.lower())
    df["candidate"] = df["candidate"].where(df["candidate"].notna(), df["trial"])  # trials before search.pruners.asha
    df["reason"] = df["reason"].fillna("")
    df["epochs"] = df["epochs"].where(df["epochs"].notna(), [len(t.intermediate_values) for t in study.trials])
    df["retry_of"] = raw.get("system_attrs_failed_trial")
    df["config"] = raw.get("user_attrs_config")
    df["datetime_start"], df["datetime_complete"] = raw["datetime_start"], raw["datetime_complete"]
    beam = rescored(study)
    for c in ("dev_wer_beam", "dev_cer_beam", "test_wer_beam", "test_cer_beam"):
        df[c] = [beam.get(n, {}).get(c) for n in raw["number"]]
    arch = pd.DataFrame(
        [_architecture(c) for c in (raw["user_attrs_config"] if "user_attrs_config" in raw else [None] * len(raw))],
        index=df.index,
    )
    return pd.concat([df, arch], axis=1)


def candidates(df: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate: its most-trained trial with a result (ASHA continues a candidate in new trials)."""
    d = df.assign(_scored=df["dev_wer"].notna(), _epochs=pd.to_numeric(df["epochs"], errors="coerce").fillna(0))
    d = d.sort_values(["_scored", "_epochs", "trial"], kind="stable")
    return d.groupby(["study", "candidate"], sort=False).tail(1).drop(columns=["_scored", "_epochs"])


def leaderboard(df: pd.DataFrame, top: int = 10) -> str:
    """The best candidates by dev WER, one row each (its most-trained trial), as a text table."""
    df = candidates(df)
    cols = [
        "study",
        "trial",
        "status",
        "dev_wer",
        "dev_cer",
        "test_wer",
        "dev_wer_beam",
        "test_wer_beam",
        "params",
        "gflops_per_second",
        "epochs",
        "n_layers",
        "branches_per_layer",
        "total_stride",
        "width",
        "wall_seconds",
        "seed",
    ]
    cols = [
        c
        for c in cols
        if c in df.columns and (c not in ("seed", "dev_wer_beam", "test_wer_beam") or df[c].notna().any())
    ]
    shown = df.sort_values(["dev_wer", "trial"], na_position="last").head(top)[cols].copy()
    for c in ("dev_wer", "dev_cer", "test_wer", "dev_wer_beam", "test_wer_beam"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: f"{100 * v:.1f}%" if pd.notna(v) else "-")
    if "gflops_per_second" in shown:
        shown["gflops_per_second"] = shown["gflops_per_second"].map(lambda v: f"{v:.3f}" if pd.notna(v) else "-")
    if "wall_seconds" in shown:
        shown["wall_seconds"] = shown["wall_seconds"].map(lambda v: f"{v:.0f}" if pd.notna(v) else "-")
    if "seed" in shown:  # which rows are the configs the study started from
        shown["seed"] = shown["seed"].map(lambda v: v if isinstance(v, str) else "")
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
