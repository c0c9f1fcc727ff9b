"""One command that proves a GPU install: train, eval, transcribe, a 3-trial study, the throughput table.

    python bench/gpu_check.py [--device cuda] [--out results/gpu_check.json]
    python bench/gpu_check.py --device cpu --tiny          # what the test suite runs

1. ``stt train`` a tiny config for 2 epochs on the device, ``stt eval`` its test split (the WER must
   equal the one in result.json: same precision on both sides), ``stt transcribe`` one file.
2. A 3-trial study from spaces/small.yaml on the device (every trial must finish, none as an error).
3. The throughput table: the seed base config and the small-space default (small.yaml), each beside the
   design note's reference step measured in the same run, in fp32, bf16 autocast and bf16 + torch.compile,
   as audio-seconds per second and achieved TFLOP/s (training FLOPs counted by torch on the same batches).

Everything lands in a JSON summary (``--out``); the exit status is non-zero if a check failed. On one
H100 the whole run takes a few minutes; ``--tiny`` shrinks corpus, steps and epochs to seconds, and on
the CPU it compiles with the ``eager`` backend (no C++ toolchain needed) unless ``--compile-backend`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from design_note import NoteModel, note_train_step
from timing import step_flops, time_steps

from stt.core.device import autocast, pick_device
from stt.data.batching import collate
from stt.data.training_data import open_training_data
from stt.model.layer_config import load_layer_config
from stt.train.run_config import RunConfig, load_run_config
from stt.train.trainer import Trainer

TINY_RUN = """
frontend: fbank
train: {epochs: %(epochs)d, lr: 0.005, batch_frames: %(bf)d, warmup: 0.1, seed: 0}
model:
  input_proj: base
  layers:
    - - - [conv_block, {in_chan: 64, out_chan: 64, kernel: 5, stride: 2, dropout: 0.1}]
    - - - [conv_attention_conv_block, {out_chan: 64, kernel_conv: 3, n_heads: 4, dropout_conv: 0.1}]
        - [separable_conv_block, {out_chan: 64, kernel: 5, dil: 2, k: 2}]
      - - [feed_forward, {output_size: 64, d_ff: 128, dropout: 0.1}]
"""


def _cli(main, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


def check_train_eval_transcribe(data_dir: Path, work: Path, device: str, tiny: bool) -> dict:
    from stt.cli import main as stt
    from stt.data.corpus import find_splits, read_split

    cfg = work / "tiny.yaml"
    cfg.write_text(TINY_RUN % {"epochs": 2, "bf": 3000 if tiny else 20000})
    run_dir = work / "run"
    t0 = time.time()
    rc, _ = _cli(
        stt, ["train", "--config", str(cfg), "--data", str(data_dir), "--out", str(run_dir), "--device", device]
    )
    result = json.loads((run_dir / "result.json").read_text())
    rc_eval, text = _cli(
        stt, ["eval", "--checkpoint", str(run_dir), "--data", str(data_dir), "--split", "test", "--device", device]
    )
    wav = read_split(find_splits(data_dir)["test"])[0][0].path
    rc_tr, line = _cli(stt, ["transcribe", "--checkpoint", str(run_dir), "--device", device, wav])
    agree = f"WER {100 * result['test_wer']:.2f}%" in text if result.get("test_wer") is not None else False
    return {
        "ok": rc == 0 and rc_eval == 0 and rc_tr == 0 and agree and result["device"].startswith(device.split(":")[0]),
        "status": result["status"],
        "device": result["device"],
        "precision": result["precision"],
        "test_wer": result.get("test_wer"),
        "eval_agrees_with_result_json": agree,
        "eval": text.strip(),
        "transcribe": line.strip(),
        "seconds": round(time.time() - t0, 1),
    }


def check_study(data_dir: Path, work: Path, device: str, tiny: bool) -> dict:
    from search.settings import settings_from_space
    from search.study import launch

    space = Path(__file__).resolve().parent.parent / "spaces" / "small.yaml"
    settings = settings_from_space(
        str(space),
        str(data_dir),
        3,
        sampler="random",
        pruner="none",
        seed=0,
        epochs=1 if tiny else 2,
        runs_dir=str(work / "runs"),
    )
    t0 = time.time()
    study = launch("gpu-check", settings, f"sqlite:///{work / 'study.db'}", device=device)
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    devices = sorted({t.user_attrs.get("device", "") for t in trials if "device" in t.user_attrs})
    errors = [t.user_attrs.get("reason", "") for t in trials if t.state.name == "FAIL"]
    return {
        "ok": len(trials) == 3 and not errors,
        "states": states,
        "devices": devices,
        "errors": errors,
        "seconds": round(time.time() - t0, 1),
    }


def throughput(
    name: str, run: RunConfig, data, device: torch.device, mode: str, steps: int, backend: str
) -> list[dict]:
    """Rows for ours and the design note's step in one mode ("fp32", "bf16", "compiled")."""
    run.train.precision = "fp32" if mode == "fp32" else "bf16"
    run.train.compile = mode == "compiled"
    run.train.epochs = 100  # the schedule outlasts the timed steps
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run, data, tmp, device=str(device), progress=False, compile_backend=backend)
    order = []
    while len(order) < steps + 2:  # as many epochs of the trainer's own batches as the steps need
        trainer.sampler.set_epoch(len(order))
        order += trainer.sampler.order()
    order = order[: steps + 2]
    items = [[trainer.train_set[trainer.keep[i]] for i in b] for b in order]
    dur = [sum(trainer.durations[trainer.keep[i]] for i in b) for b in order]
    ours = [(trainer._to_device(collate(it, trainer.buckets))[:4], d) for it, d in zip(items, dur)]
    note_batches = [
        ((feats, targets, target_lens), d) for (feats, _, targets, target_lens), d in ours
    ]  # the same batches
    torch.manual_seed(0)
    note = NoteModel(run.layers, data.feature_size, len(data.tokenizer)).to(device)
    note_fwd = torch.compile(note, backend=backend) if mode == "compiled" else note
    note_opt = torch.optim.AdamW(note.parameters(), lr=1e-3)
    amp = None if mode == "fp32" else (lambda: autocast(device, "bf16"))

    def note_step(b):
        return note_train_step(note_fwd, note_opt, *b, autocast=amp)

    def ours_step(b):
        return trainer.train_step(*b)

    rows = []
    for kind, step, batches in (("ours", ours_step, ours), ("design-note", note_step, note_batches)):
        audio, secs = time_steps(step, batches, device, warmup=2)  # compiles happen in the warm-up
        flops = step_flops(step, batches[-1][0]) / batches[-1][1]  # training FLOPs per audio-second
        rate = audio / secs
        rows.append(
            {
                "config": name,
                "mode": mode,
                "kind": kind,
                "audio_s_per_s": round(rate, 1),
                "tflops": round(rate * flops / 1e12, 3),
                "gflop_per_audio_s": round(flops / 1e9, 2),
            }
        )
    if trainer.compiled:
        torch._dynamo.reset()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument(
        "--tiny", action="store_true", help="seconds, not minutes: tiny corpus, few steps (the suite runs this on CPU)"
    )
    p.add_argument("--data", default=None, help="corpus folder (default: synthesised into the work folder)")
    p.add_argument("--work", default=None, help="folder for runs and the study database (default: a temporary one)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per throughput row (default 20, tiny 2)")
    p.add_argument(
        "--batch-frames", type=int, default=None, help="frames per batch (default 48000 = 32 x 15 s; tiny 3000)"
    )
    p.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (default inductor; eager for --tiny on CPU)"
    )
    p.add_argument("--out", default="results/gpu_check.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = pick_device(args.device)
    backend = args.compile_backend or ("eager" if args.tiny and device.type == "cpu" else "inductor")
    steps = args.steps or (2 if args.tiny else 20)
    bf = args.batch_frames or (3000 if args.tiny else 48000)
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data_dir = Path(args.data) if args.data else work / "corpus"
        if not args.data:
            from stt.data.synth import SynthSettings, prepare_synth

            hours = (
                SynthSettings(hours=0.012, vocab=30, seed=3, min_words=2, max_words=5)
                if args.tiny
                else SynthSettings(hours=0.25)
            )
            prepare_synth(data_dir, hours, workers=2, progress=False)
        summary = {
            "device": str(device),
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            "torch": torch.__version__,
            "tiny": args.tiny,
            "compile_backend": backend,
        }
        print(f"gpu_check on {summary['name']} ({device}), torch {torch.__version__}", flush=True)
        summary["train_eval_transcribe"] = check_train_eval_transcribe(data_dir, work, str(device), args.tiny)
        print(
            f"train/eval/transcribe: {'ok' if summary['train_eval_transcribe']['ok'] else 'FAILED'}  "
            f"({summary['train_eval_transcribe']['eval']})",
            flush=True,
        )
        summary["study"] = check_study(data_dir, work, str(device), args.tiny)
        print(
            f"3-trial study: {'ok' if summary['study']['ok'] else 'FAILED'}  {summary['study']['states']}", flush=True
        )
        data = open_training_data(data_dir, progress=False, device=str(device))
        configs = {
            "seed_base.yaml": RunConfig(layers=load_layer_config("seed_base.yaml")),
            "small.yaml": load_run_config("small.yaml"),
        }
        if args.tiny:  # the 512-wide base is minutes per step on a CPU: its tiny stand-in keeps the code path
            configs["seed_base.yaml"] = load_run_config(TINY_RUN % {"epochs": 1, "bf": bf})
        rows = []
        print(f"{'config':15s} {'mode':9s} {'kind':12s} {'audio-s/s':>10s} {'TFLOP/s':>8s}", flush=True)
        for name, run in configs.items():
            run.train.batch_frames = bf
            for mode in ("fp32", "bf16", "compiled"):
                for row in throughput(name, run, data, device, mode, steps, backend):
                    rows.append(row)
                    print(
                        f"{row['config']:15s} {row['mode']:9s} {row['kind']:12s} "
                        f"{row['audio_s_per_s']:10.1f} {row['tflops']:8.3f}",
                        flush=True,
                    )
        summary["throughput"] = rows
        ref = {(r["config"], r["mode"]): r["audio_s_per_s"] for r in rows if r["kind"] == "design-note"}
        best_ours = max(r["audio_s_per_s"] for r in rows if r["kind"] == "ours" and r["config"] == "seed_base.yaml")
        summary["base_vs_note_compiled"] = round(best_ours / ref[("seed_base.yaml", "compiled")], 2)
        print(
            f"seed_base: best of ours / design-note bf16+compile = {summary['base_vs_note_compiled']:.2f}x", flush=True
        )
    summary["seconds"] = round(time.time() - t_start, 1)
    summary["ok"] = summary["train_eval_transcribe"]["ok"] and summary["study"]["ok"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"{'ok' if summary['ok'] else 'FAILED'} in {summary['seconds']:.0f} s; summary: {out}", flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
