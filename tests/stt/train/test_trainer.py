"""CTC training: loss falls and a memorised utterance decodes; resume after a kill; infeasible; diverged; eval;
transcribe."""

import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from stt.cli import main as stt_main
from stt.data.batching import collate
from stt.data.corpus import find_splits, read_librispeech
from stt.data.training_data import open_training_data
from stt.decode.greedy import greedy_decode
from stt.train.evaluation import Evaluator
from stt.train.feasibility import InfeasibleError
from stt.train.metrics import score
from stt.train.run import load_run
from stt.train.run_config import load_run_config
from stt.train.trainer import Trainer

TINY = """
frontend: fbank
train: {epochs: %(epochs)d, lr: 0.005, batch_frames: %(bf)d, warmup: 0.1, seed: 0}
model:
  input_proj: base
  layers:
    - - - [conv_block, {in_chan: 48, out_chan: 48, kernel: 5, stride: %(stride)d, dropout: 0.1}]
    - - - [conv_attention_conv_block, {out_chan: 48, kernel_conv: 3, n_heads: 4, dropout_conv: 0.1}]
        - [separable_conv_block, {out_chan: 48, kernel: 5, dil: 2, k: 2}]
      - - [feed_forward, {output_size: 48, d_ff: 96, dropout: 0.1}]
"""


def tiny_run(epochs=3, bf=3000, stride=2):
    return load_run_config(TINY % {"epochs": epochs, "bf": bf, "stride": stride})


@pytest.fixture
def corpus(tiny_corpus, tmp_path):
    dst = tmp_path / "c"
    shutil.copytree(tiny_corpus, dst)  # the cache comes along: prepared once per session
    return dst


@pytest.mark.slow
def test_loss_falls_and_a_memorised_utterance_decodes(tiny_corpus, tmp_path):
    # one utterance as its own train and dev split (TSV manifests): the model must learn it by heart
    utt = sorted(read_librispeech(find_splits(tiny_corpus)["train"])[0], key=lambda u: u.duration)[5]
    data = tmp_path / "one"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text(f"{utt.path}\t{utt.text}\n")
    run = tiny_run(epochs=150, bf=100000)
    run.train.lr, run.train.warmup = 0.003, 0.05
    for blk in run.layers.layers:  # memorising wants no dropout
        for branch in blk:
            for _, kw in branch:
                for k in kw:
                    if k.startswith("dropout"):
                        kw[k] = 0.0
    trainer = Trainer(run, open_training_data(data, progress=False), tmp_path / "run", progress=False)
    res = trainer.fit()
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    dev_losses = [h["dev_loss"] for h in res.history]  # dev is the same utterance: its loss falls as far
    assert dev_losses[-1] < 0.2 * dev_losses[0], dev_losses[::10]
    evaluator = Evaluator(load_run(tmp_path / "run").model, trainer.data.tokenizer, trainer.device, 100000)
    s, ids, refs, hyps = evaluator.transcribe(trainer.data.caches["dev"])
    assert hyps == [utt.text.lower()], (hyps, refs)
    assert res.dev_wer == 0.0 and res.status == "completed"


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _data(corpus):
    return open_training_data(corpus, progress=False)


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_to_the_same_weights(corpus, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    # with SpecAugment on: its masks come from the checkpointed RNG, so they must repeat after a resume too
    text = TINY % {"epochs": 4, "bf": 1500, "stride": 2}
    cfg.write_text(text.replace("seed: 0}", "seed: 0, freq_masks: 2, time_masks: 2}"))
    ref = Trainer(load_run_config(cfg), _data(corpus), tmp_path / "ref", progress=False, checkpoint_every=3)
    ref_res = ref.fit()
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "stt.cli",
        "train",
        "--config",
        str(cfg),
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--checkpoint-every",
        "3",
        "--log-every",
        "3",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # stderr is no terminal, so the trainer logs "epoch E/4 step S/N ..." right after the step-S checkpoint:
    # kill it on the first such line of epoch 2, mid-epoch, with a checkpoint of that very step on disk
    for line in proc.stderr:
        if line.startswith("epoch 2/4 step "):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    done = torch.load(out / "last.pt", weights_only=True)["state"]
    assert done["epoch"] == 1 and done["step_in_epoch"] > 0, "not killed mid-epoch 2"
    res = Trainer(load_run_config(cfg), _data(corpus), out, progress=False, checkpoint_every=3).fit(resume=True)
    assert res.epochs == 4 and [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    a, b = _weights(tmp_path / "ref" / "last.pt"), _weights(out / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the whole state came back: the logged losses and scores are the uninterrupted run's too
    for h_ref, h in zip(ref_res.history, res.history):
        assert (h["train_loss"], h["dev_wer"]) == (h_ref["train_loss"], h_ref["dev_wer"])


@pytest.mark.slow
def test_a_probe_and_every_dev_pass_leave_training_as_it_would_be_without_them(corpus, tmp_path):
    # a study probes dev after 1/3 of epoch 1; `stt train` of the exported config does not, and must still
    # train the same model (dropout is on, so a dev pass that drew from the global RNG would shift it)
    plain = Trainer(tiny_run(epochs=2), _data(corpus), tmp_path / "plain", progress=False)
    plain.fit()
    probed = Trainer(tiny_run(epochs=2), _data(corpus), tmp_path / "probed", progress=False, probe=1 / 3)
    seen = []
    probed.fit(on_epoch=lambda epoch, metrics: seen.append(metrics.get("probe")))
    assert seen[0] is not None and 0 < seen[0] < 1  # the probe did score dev part-way through epoch 1
    for (name, a), b in zip(plain.model.state_dict().items(), probed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_too_much_downsampling_fails_before_training(corpus, tmp_path, capsys):
    with pytest.raises(InfeasibleError, match=r"total stride 32 gives 3\.1 output frames/s.*use a total stride <="):
        Trainer(tiny_run(stride=32), _data(corpus), tmp_path / "r", progress=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY % {"epochs": 1, "bf": 3000, "stride": 32})
    assert stt_main(["train", "--config", str(cfg), "--data", str(corpus), "--out", str(tmp_path / "r2")]) == 2
    assert "total stride 32" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_nan_loss_ends_with_status_diverged(corpus, tmp_path):
    trainer = Trainer(tiny_run(), _data(corpus), tmp_path / "r", progress=False)
    real = trainer.model.forward
    calls = []

    def poisoned(x, lengths=None):
        y, n = real(x, lengths)
        calls.append(1)
        return (y * float("nan") if len(calls) == 2 else y), n  # the second training step

    trainer.model.forward = poisoned
    res = trainer.fit()
    assert res.status == "diverged" and res.reason == "non-finite loss at epoch 1, by step 2", res.reason
    assert json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "diverged"


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    res = Trainer(tiny_run(epochs=4), _data(tiny_corpus), out, progress=False).fit()
    return out, res


def test_dev_loss_is_the_ctc_loss_per_letter_whatever_the_batching(trained, tiny_corpus):
    import torch.nn.functional as F

    from stt.data.batching import FeatureDataset

    loaded = load_run(trained[0])
    data = _data(tiny_corpus)
    cache = data.caches["dev"]
    scores = Evaluator(loaded.model, loaded.tokenizer, torch.device("cpu"), 3000).score(cache)
    total, letters = 0.0, 0
    ds = FeatureDataset(cache, loaded.tokenizer)
    with torch.no_grad():
        for i in range(len(ds)):  # one utterance at a time: no padding at all
            feats, target, _ = ds[i]
            logits, n = loaded.model(feats.float()[None])
            lp = logits.log_softmax(-1).transpose(0, 1)
            total += F.ctc_loss(
                lp,
                target[None],
                n,
                torch.tensor([len(target)]),
                blank=loaded.tokenizer.blank,
                reduction="sum",
                zero_infinity=True,
            ).item()
            letters += len(target)
    assert scores.loss == pytest.approx(total / letters, rel=1e-4)
    history = [json.loads(line) for line in (trained[0] / "metrics.jsonl").read_text().splitlines()]
    assert all(h["dev_loss"] > 0 for h in history) and history[-1]["dev_loss"] < history[0]["dev_loss"]


def test_eval_reproduces_the_logged_wer(trained, tiny_corpus, capsys):
    out, res = trained
    assert res.test_wer is not None
    assert (
        stt_main(["eval", "--checkpoint", str(out), "--data", str(tiny_corpus), "--split", "test", "--errors", "2"])
        == 0
    )
    text = capsys.readouterr().out
    assert f"WER {100 * res.test_wer:.2f}%" in text and "REF:" in text
    logged = json.loads((out / "result.json").read_text())
    assert logged["test_wer"] == res.test_wer and (out / "config.yaml").exists() and (out / "tokenizer.json").exists()


def test_eval_on_a_data_folder_without_a_cache_creates_nothing_and_scores_the_same(
    trained, tiny_corpus, tmp_path, capsys
):
    """A read-only command: features are computed in memory when the folder has no prepared cache."""
    out, res = trained
    data = tmp_path / "fresh"
    shutil.copytree(tiny_corpus, data, ignore=shutil.ignore_patterns(".stt-cache"))
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert stt_main(["eval", "--checkpoint", str(out), "--data", str(data), "--split", "test"]) == 0
    assert f"WER {100 * res.test_wer:.2f}%" in capsys.readouterr().out
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # no .stt-cache, no lock file


def test_transcribe_prints_the_text_of_a_test_file(trained, tiny_corpus, capsys):
    out, _ = trained
    utt = read_librispeech(find_splits(tiny_corpus)["test"])[0][0]
    assert stt_main(["transcribe", "--checkpoint", str(out), utt.path]) == 0
    path, text = capsys.readouterr().out.rstrip("\n").split("\t")  # a tiny model may well print no letters
    loaded = load_run(out)
    from stt.data.audio import read_audio
    from stt.data.frontends import Fbank

    with torch.no_grad():
        logits, lens = loaded.model(Fbank()(read_audio(utt.path))[None])
    assert path == utt.path and text == loaded.tokenizer.decode(greedy_decode(logits, lens)[0])


def test_corpus_level_wer_is_not_the_mean_of_utterance_wers():
    s = score(["a b c d e f g h i j", "x"], ["a b c d e f g h i j", "y"])
    assert s.wer == pytest.approx(1 / 11) and s.words == 11  # the mean of per-utterance WERs would say 0.5


@pytest.mark.slow
def test_compiled_runs_keep_few_graphs_and_each_run_compiles_afresh(corpus, tmp_path):
    # Dynamo caches graphs per code object, and every STTModel shares forward's: without a reset per run, a
    # process training trial after trial would hit the recompile limit and silently fall back to eager
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs[-1] += 1
        return gm.forward

    data = _data(corpus)
    for k in range(5):
        graphs.append(0)
        run = tiny_run(epochs=1, bf=800)
        run.train.compile = True
        trainer = Trainer(run, data, tmp_path / f"r{k}", progress=False, compile_backend=counting_backend)
        assert trainer.compiled and trainer.buckets == 4
        assert trainer.fit().status == "completed"
        lengths = {max(data.train.frames[trainer.keep[i]] for i in b) for b in trainer.sampler.batches}
        assert len(trainer.compile_shapes) < len(lengths)  # bucketing: fewer shapes than batch lengths
        assert 1 <= graphs[-1] <= len(trainer.compile_shapes), graphs


@pytest.mark.slow
def test_bf16_autocast_and_fp32_loss_curves_agree(corpus, tmp_path):
    # CPU autocast stands in for the GPU's; 100 steps, same seed, same batches
    curves = {}
    data = _data(corpus)
    for precision in ("fp32", "bf16"):
        run = tiny_run(epochs=20, bf=600)  # the schedule spans more than the 100 steps
        run.train.precision = precision
        trainer = Trainer(run, data, tmp_path / precision, progress=False)
        losses = []
        for epoch in range(100):
            trainer.sampler.set_epoch(epoch)
            for b in trainer.sampler.order():
                batch = collate([trainer.train_set[trainer.keep[i]] for i in b])
                losses.append(float(trainer.train_step(*trainer._to_device(batch)[:4])))
                if len(losses) == 100:
                    break
            if len(losses) == 100:
                break
        curves[precision] = torch.tensor(losses)
    fp32, bf16 = curves["fp32"], curves["bf16"]
    assert fp32[-10:].mean() < 0.7 * fp32[:10].mean()  # it learns, so the comparison means something
    assert not torch.equal(fp32, bf16)  # bf16 really ran
    # while the weights are still close, step by step: bf16 keeps 8 mantissa bits (~0.4 % per rounding)
    step_rel = ((bf16[:20] - fp32[:20]).abs() / fp32[:20]).max()
    assert step_rel < 0.01, step_rel
    # then the two trajectories drift apart as any two precisions' do; the curves stay together: no window of 10
    # steps strays by more than 2 % of what training gained. (Not relative to the loss itself: near the end the
    # loss is small and a 0.04 gap is 7 % of it on one Xeon, 5 % on another, where both curves fell by 6.4.)
    f, b = fp32.view(10, 10).mean(1), bf16.view(10, 10).mean(1)
    gap = (b - f).abs().max() / (f[0] - f[-1])
    assert gap < 0.02, gap


def test_eval_uses_the_runs_precision_and_reproduces_its_result(corpus, tmp_path, capsys):
    run = tiny_run(epochs=2)
    run.train.precision = "bf16"
    res = Trainer(run, _data(corpus), tmp_path / "r", progress=False).fit()
    assert res.precision == "bf16"
    assert stt_main(["eval", "--checkpoint", str(tmp_path / "r"), "--data", str(corpus), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert f"WER {100 * res.test_wer:.2f}%" in out and "bf16" in out


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero_and_resumes():
    from stt.train.run_config import TrainConfig
    from stt.train.trainer import build_scheduler

    tc = TrainConfig(schedule="cosine", lr=0.01, warmup=0.1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=tc.lr)
    sched = build_scheduler(opt, tc, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01) and max(lrs) == pytest.approx(0.01)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.0005
    state = sched.state_dict()
    buf = __import__("io").BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["_milestones"] == [10]  # a checkpoint of it loads as plain data
