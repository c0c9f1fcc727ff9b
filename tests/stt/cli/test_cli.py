"""The stt command line: describe output, prepare reports and exit codes."""

import shutil

import pytest

from stt.cli import main


def test_describe_prints_the_seed_figures(capsys):
    assert main(["describe", "seed_base.yaml", "--input-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "39,644,368" in out and "total stride:       4" in out and "receptive field:    153 frames" in out
    assert "forward GFLOPs/s:" in out


def test_describe_bad_config_is_one_line(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("- - - [conv_block, {in_chan: 8, out_chan: 8, n_heads: 2}]\n")
    assert main(["describe", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c.yaml: layers[0].blocks[0].branches[0].n_heads: unknown key" in err


def test_prepare_features_reports_counts_and_fails_when_nothing_is_usable(tiny_corpus, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(tiny_corpus, data)
    assert main(["prepare", "features", "--data", str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train: kept" in out and "skipped 0" in out
    bad = tmp_path / "bad"
    (bad / "train" / "1" / "2").mkdir(parents=True)
    (bad / "train" / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    assert main(["prepare", "features", "--data", str(bad), "--quiet"]) == 2
    cap = capsys.readouterr()
    assert "has no audio file" in cap.out and "nothing usable" in cap.err
    assert main(["prepare", "features", "--data", str(tmp_path / "none")]) == 2
    assert "no such data folder" in capsys.readouterr().err


@pytest.mark.slow
def test_two_trainings_into_one_run_directory_the_second_is_one_line_and_the_lock_goes_with_a_killed_first(
    tiny_corpus, tmp_path
):
    """Both used to exit 0, one run silently lost. The first holds --out for its whole run; SIGTERM releases it."""
    import signal
    import subprocess
    import sys
    import threading

    shutil.copytree(tiny_corpus, tmp_path / "data")
    (tmp_path / "run.yaml").write_text(
        "frontend: fbank\ntrain: {epochs: 1000, lr: 0.005, batch_frames: 3000}\n"
        "model:\n  layers:\n    - - - [conv_block, {in_chan: 32, out_chan: 32, kernel: 5, stride: 2}]\n"
    )
    train = [sys.executable, "-m", "stt.cli", "train", "--config", "run.yaml", "--data", "data", "--out", "out"]
    first = subprocess.Popen(train, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # training has begun once it names its run directory, under the lock
            if "run directory out" in line:
                break
        threading.Thread(target=first.stderr.read, daemon=True).start()  # a full pipe must not stall it
        assert (tmp_path / "out" / ".lock").exists()
        second = subprocess.run(train, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert f"run directory out is in use by another training process ({socket_name()}:{first.pid})" in second.stderr
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    finally:
        first.kill()
    assert not (tmp_path / "out" / ".lock").exists()  # the lock went with its holder


def socket_name() -> str:
    import socket

    return socket.gethostname()


@pytest.mark.slow
def test_sigterm_during_prepare_exits_143_and_leaves_no_lock_file(tiny_corpus, tmp_path):
    """SIGTERM used to leave the cache's .lock behind; it now stops prepare as Ctrl-C does, locks released."""
    import signal
    import subprocess
    import sys

    data = tmp_path / "data"
    shutil.copytree(tiny_corpus, data, ignore=shutil.ignore_patterns(".stt-cache"))
    cmd = [sys.executable, "-m", "stt.cli", "prepare", "features", "--data", str(data), "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        cache = data / ".stt-cache"
        while proc.poll() is None and not list(cache.glob("*.lock")):  # computing a split's features, locked
            pass
        assert proc.poll() is None, "prepare finished before it was caught holding its lock"
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert not list(cache.rglob("*.lock"))
