"""The README's tour runs as written: every shell line of it, in order, in an empty folder, through the installed
commands. The corpus is smaller and every training is one epoch; those are the only changes, each checked."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the only rewrites: a tiny corpus, and one epoch wherever a model trains
SMALLER = {
    r"--hours 1\b": "--hours 0.02 --vocab 30",
    r"^(stt train .*)$": r"\1 --epochs 1",
    r"^(stt-search launch .*)$": r"\1 --epochs 1",
}


def tour_lines() -> list[str]:
    """The shell lines of the README's tour section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_tour_covers_the_five_minute_promise():
    commands = {" ".join(line.split()[:2]) for line in tour_lines()}
    for step in ("stt prepare", "stt train", "stt-search launch", "stt-search export", "stt-search compare"):
        assert step in commands, step
    assert any(line.startswith("stt transcribe") and "--decoder beam" in line for line in tour_lines())
    for pattern in SMALLER:  # each rewrite still finds its line: the README and this test change together
        assert any(re.search(pattern, line) for line in tour_lines()), pattern


@pytest.mark.slow
def test_every_line_of_the_readme_tour_runs(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # the installed commands, as a user runs them
    outputs = []
    for line in tour_lines():
        for pattern, repl in SMALLER.items():
            line = re.sub(pattern, repl, line)
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    for made in (
        "data/synth/train",
        "results/runs/small/best.pt",
        "results/studies.db",
        "results/tour-best.yaml",
        "results/tour-best.pt",
        "results/compare/tour/report.html",
        "data/synth/lm/lm.arpa",
        "results/runs/small/decoder.json",
    ):
        assert (tmp_path / made).exists(), made
    out = "".join(outputs)
    assert "parameters:         2,570,272" in out  # describe (without the output layer)
    assert re.search(r"test: WER [\d.]+%", out) and "beam 50, lexicon of" in out  # eval, greedy then beam
    assert "data/synth/test/30000/0/30000-0-0000.flac\t" in out  # transcribe
