"""The second-device path without a GPU: the meta device stands in for CUDA.

A tensor made on the CPU that meets a meta model raises, as it would on a GPU;
so does any hidden host read (``.item()``, ``bool(t)``), because meta tensors
hold no data. The one sanctioned read, ``stt.core.device.to_host``, is replaced by
a counter that hands back zeros, so the tests also count host syncs.
"""

import shutil

import pytest
import torch

from stt.data.training_data import open_training_data
from stt.model.measure import describe, forward_gflops_per_second
from stt.model.network import STTModel
from stt.train.evaluation import Evaluator
from stt.train.run_config import load_run_config
from stt.train.trainer import Trainer

META = torch.device("meta")

TINY = """
frontend: fbank
train: {epochs: 1, lr: 0.005, batch_frames: 1500, seed: 0}
model:
  input_proj: base
  layers:
    - - - [conv_block, {in_chan: 32, out_chan: 32, kernel: 5, stride: 2, dropout: 0.1}]
    - - - [conv_attention_conv_block, {out_chan: 32, kernel_conv: 3, n_heads: 4, dropout_conv: 0.1}]
        - [separable_conv_block, {out_chan: 32, kernel: 5, dil: 2, k: 2, dropout: 0.1}]
        - [attention_conv_block, {n_heads: 2, kernel: 3}]
      - - [feed_forward, {output_size: 32, d_ff: 64, dropout: 0.1}]
"""


@pytest.fixture(scope="module", autouse=True)
def meta_ctc():
    """CTC has no meta kernel in torch: shape-only ones, as strict about devices as CUDA's."""
    lib = torch.library.Library("aten", "IMPL")

    def same_device(log_probs, *others):
        for t in others:
            if t.device != log_probs.device:
                raise RuntimeError(f"Tensor on device {t.device} is not on the expected device {log_probs.device}!")

    def ctc(log_probs, targets, input_lengths, target_lengths, blank=0, zero_infinity=False):
        same_device(log_probs, targets, input_lengths, target_lengths)
        T, B, _ = log_probs.shape
        return log_probs.new_empty(B), log_probs.new_empty(B, T, 2 * targets.size(-1) + 1)

    def ctc_backward(
        grad, log_probs, targets, input_lengths, target_lengths, nll, log_alpha, blank, zero_infinity=False
    ):
        return torch.empty_like(log_probs)

    lib.impl("_ctc_loss.Tensor", ctc, "Meta")
    lib.impl("_ctc_loss_backward.Tensor", ctc_backward, "Meta")
    yield
    lib._destroy()


@pytest.fixture
def host_reads(monkeypatch):
    """Replace every sanctioned device->host read by zeros; the list counts them."""
    reads = []

    def fake(t):
        reads.append(tuple(t.shape))
        return torch.zeros(t.shape, dtype=t.dtype)

    for mod in ("stt.core.device", "stt.train.trainer", "stt.train.evaluation"):
        monkeypatch.setattr(f"{mod}.to_host", fake)
    return reads


def meta_model():
    return STTModel("seed_base.yaml", input_size=80, output_size=29).to(META)


def test_flop_counter_on_a_second_device():
    # main before this change built its probe on the CPU: "Tensor on device meta is not on the expected device cpu!"
    cpu = STTModel("seed_base.yaml", input_size=80, output_size=29)
    assert forward_gflops_per_second(meta_model()) == pytest.approx(forward_gflops_per_second(cpu))


def test_describe_on_a_second_device():
    d = describe(meta_model())
    assert d["parameters"] > 39_000_000 and d["gflops_per_second"] > 0 and d["total_stride"] == 4


def test_the_stand_in_catches_a_cpu_tensor_meeting_the_model():
    model = meta_model()
    with pytest.raises(RuntimeError, match="Tensor on device meta is not on the expected device cpu"):
        model(torch.zeros(2, 50, 80))  # features left on the CPU
    with pytest.raises(RuntimeError, match="Tensor on device cpu is not on the expected device meta"):
        model(torch.zeros(2, 50, 80, device=META), torch.tensor([50, 40]))  # lengths left on the CPU


def test_model_runs_forward_and_backward_on_a_second_device():
    model = meta_model().train()
    y, lengths = model(torch.zeros(3, 101, 80, device=META), torch.tensor([101, 90, 7], device=META))
    assert y.device == lengths.device == META and y.shape == (3, 26, 29)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.device == META for p in model.parameters())
    y, lengths = model(torch.zeros(2, 40, 80, device=META))  # no padding: the unmasked fast path
    assert lengths.device == META and y.shape == (2, 10, 29)


@pytest.fixture
def corpus(tiny_corpus, tmp_path):
    dst = tmp_path / "c"
    shutil.copytree(tiny_corpus, dst)
    return dst


def test_training_evaluation_and_checkpoint_on_a_second_device(corpus, tmp_path, host_reads):
    run = load_run_config(TINY)
    data = open_training_data(corpus, progress=False)
    trainer = Trainer(run, data, tmp_path / "run", device="meta", log_every=4, checkpoint_every=3, progress=False)
    assert next(trainer.model.parameters()).device == META
    res = trainer.fit()
    assert res.status == "completed" and res.epochs == 1 and res.device == "meta" and res.gflops_per_second > 0
    steps = len(trainer.sampler.batches)
    # host syncs: the loss every 4 steps and before every checkpoint (every 3), once at the epoch's end, one
    # argmax per evaluation batch (dev, then test with the best weights) and each evaluation's summed CTC
    # loss once at its end; nothing per training step
    loss_reads = len({s for s in range(1, steps + 1) if s % 4 == 0 or s % 3 == 0}) + 1 + 2
    dev_batches = len(_eval_batches(data.caches["dev"], run.train.batch_frames))
    test_batches = len(_eval_batches(data.caches["test"], run.train.batch_frames))
    assert host_reads.count(()) == loss_reads, host_reads
    assert len(host_reads) == loss_reads + dev_batches + test_batches
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["state"]["epoch"] == 1 and ck["state"]["step"] == steps


def _eval_batches(cache, batch_frames):
    from stt.data.batching import FrameBudgetBatchSampler

    return FrameBudgetBatchSampler(cache.frames, batch_frames, shuffle=False).batches


def test_evaluation_on_a_second_device(corpus, host_reads):
    data = open_training_data(corpus, progress=False)
    model = STTModel(load_run_config(TINY).layers, input_size=data.feature_size, output_size=len(data.tokenizer)).to(
        META
    )
    for precision in ("auto", "fp32"):
        evaluator = Evaluator(model, data.tokenizer, META, 1500, precision)
        scores, ids, refs, hyps = evaluator.transcribe(data.caches["dev"])
        assert len(hyps) == len(refs) == len(data.caches["dev"]) and scores.wer == 1.0  # zeros decode to blanks
