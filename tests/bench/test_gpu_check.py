"""bench/gpu_check.py's CPU mode: the command a GPU user runs first must run end to end here too."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu_writes_its_summary(tiny_corpus, tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_check.py"),
            "--device",
            "cpu",
            "--tiny",
            "--data",
            str(tiny_corpus),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["ok"] and summary["device"] == "cpu"
    tet = summary["train_eval_transcribe"]
    assert tet["eval_agrees_with_result_json"] and tet["device"] == "cpu" and tet["transcribe"]
    assert summary["study"]["states"] == ["COMPLETE"] * 3 and summary["study"]["devices"] == ["cpu"]
    rows = {(r["config"], r["mode"], r["kind"]) for r in summary["throughput"]}
    assert rows == {
        (c, m, k)
        for c in ("seed_base.yaml", "small.yaml")
        for m in ("fp32", "bf16", "compiled")
        for k in ("ours", "design-note")
    }
    assert all(r["audio_s_per_s"] > 0 and r["tflops"] > 0 for r in summary["throughput"])
    assert "summary: " + str(out) in proc.stdout
