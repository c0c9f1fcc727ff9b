"""The README's tour runs as written: every shell line of it, in order, in an empty folder. The corpus is smaller,
every training is one epoch and the search looks at three candidates; those are the only changes, each checked.

Each line runs through the command's ``main`` in this process (the installed scripts themselves are run by
tests/search/cli/test_cli.py's demo test): a process per line would double the test's time in start-ups.
"""

import re
import shlex
from pathlib import Path

import pytest

from search.cli import main as search_main
from stt.cli import main as stt_main

ROOT = Path(__file__).resolve().parents[1]
# the only rewrites: a tiny corpus, one epoch wherever a model trains, and fewer candidates
SMALLER = {
    r"--hours 1\b": "--hours 0.02 --vocab 30",
    r"^(stt train .*)$": r"\1 --epochs 1",
    r"^(stt-search launch .*)$": r"\1 --epochs 1",
    r"--trials 8\b": "--trials 3",
}
COMMANDS = {"stt": stt_main, "stt-search": search_main}


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
def test_every_line_of_the_readme_tour_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in tour_lines():
        for pattern, repl in SMALLER.items():
            line = re.sub(pattern, repl, line)
        command, *argv = shlex.split(line)
        code = COMMANDS[command](argv)
        out, err = capsys.readouterr()
        assert code == 0, f"{line}\n{err[-3000:]}"
        outputs.append(out)
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
    assert "3/3 trials finished" in out  # the search
    assert "parameters:         2,575,869 with the 29-letter CTC output (2,570,272 without)" in out  # describe
    assert re.search(r"test: WER [\d.]+%", out) and "beam 50, lexicon of" in out  # eval, greedy then beam
    assert "data/synth/test/30000/0/30000-0-0000.flac\t" in out  # transcribe
