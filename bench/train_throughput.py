"""Training throughput (audio-seconds/second): this library's step against the design note's, same batches.

    python bench/train_throughput.py [--data data/synth-bench] [--steps 8] [--rounds 3]

For the default small config and the seed's 512-wide base config it times, on
the same batches and interleaved round by round so that drift in the machine
hits every row alike:

  * ``ours``: ``Trainer.train_step`` exactly as training runs it (cached
    float16 features, masked blocks, the run's precision, compiled where the
    run would compile);
  * ``note``: the design note's model and step (``bench/design_note.py``) on
    the same cached features, fp32 - the pure model-step comparison;
  * ``note+fe``: the same, with the fbank frontend recomputed from the audio
    at every step, as the design note's data pipeline did before it cached.

The batches are the trainer's own: frame-budget length buckets in epoch 0's
shuffled order, with the padding real batches have (printed). Each row is the
median over rounds of audio-seconds per second of step time (the first step of
every round warms up and is not counted); ratios are ours / reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from design_note import NoteModel, note_train_step
from timing import time_steps

from stt.data.audio import read_audio
from stt.data.batching import collate
from stt.data.corpus import find_splits, read_split
from stt.data.frontends import Fbank
from stt.data.training_data import open_training_data
from stt.model.layer_config import load_layer_config
from stt.train.run_config import RunConfig, load_run_config
from stt.train.trainer import Trainer


def bench(name: str, run: RunConfig, data, paths: dict, args, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run, data, tmp, device=str(device), progress=False)
    steps = args.steps if "seed" not in name else args.seed_steps
    order = trainer.sampler.order()[: steps + 1]  # epoch 0's batches, as training sees them
    items = [[trainer.train_set[trainer.keep[i]] for i in b] for b in order]
    host = [collate(it) for it in items]
    pad = 1 - sum(int(b.feat_lens.sum()) for b in host) / sum(b.feats.shape[0] * b.feats.shape[1] for b in host)
    dur = [sum(trainer.durations[trainer.keep[i]] for i in b) for b in order]
    ours_batches = [(trainer._to_device(collate(it, trainer.buckets))[:4], d) for it, d in zip(items, dur)]
    note_batches = [
        ((b.feats.to(device), b.targets.to(device), b.target_lens.to(device)), d) for b, d in zip(host, dur)
    ]
    fbank = Fbank()
    utts = data.train.utterances

    def fe_batch(b):  # the frontend from the audio, per step
        feats = [fbank(read_audio(paths[utts[i]["id"]])) for i in b.index.tolist()]
        return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(device)

    torch.manual_seed(0)
    note = NoteModel(run.layers, data.feature_size, len(data.tokenizer)).to(device)
    note_opt = torch.optim.AdamW(note.parameters(), lr=1e-3)
    kinds = {
        "ours": (lambda b: trainer.train_step(*b), ours_batches),
        "note": (lambda b: note_train_step(note, note_opt, *b), note_batches),
        "note+fe": (
            lambda b: note_train_step(note, note_opt, fe_batch(b[0]), b[1], b[2]),
            [((hb, nb[0][1], nb[0][2]), nb[1]) for hb, nb in zip(host, note_batches)],
        ),
    }
    rates = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k, (step, batches) in kinds.items():
            audio, secs = time_steps(step, batches, device)
            rates[k].append(audio / secs)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"{name:15s} padding {100 * pad:4.1f}%  ours {med['ours']:8.1f}  note {med['note']:8.1f}  "
        f"note+fe {med['note+fe']:8.1f} audio-s/s   ours/note {med['ours'] / med['note']:.2f}x   "
        f"ours/note+fe {med['ours'] / med['note+fe']:.2f}x",
        flush=True,
    )
    return {"config": name, "padding": pad, **{k: v for k, v in med.items()}, "rounds": rates}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth-bench")
    p.add_argument("--steps", type=int, default=8, help="timed steps per round for small.yaml")
    p.add_argument(
        "--seed-steps", type=int, default=3, help="timed steps per round for the 512-wide seed config (slow on CPU)"
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each row is the median")
    p.add_argument("--batch-frames", type=int, default=8000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if not Path(args.data).exists():
        from stt.data.synth import SynthSettings, prepare_synth

        prepare_synth(args.data, SynthSettings(hours=0.25))
    device = torch.device(args.device)
    data = open_training_data(args.data, progress=False)
    paths = {u.id: u.path for u in read_split(find_splits(args.data)[data.split_names["train"]])[0]}
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {args.batch_frames} frames/batch, "
        f"{args.rounds} rounds",
        flush=True,
    )
    small = load_run_config("small.yaml")
    small.train.batch_frames = args.batch_frames
    base = RunConfig(layers=load_layer_config("seed_base.yaml"))
    base.train.batch_frames = args.batch_frames
    base.train.precision, base.train.compile = small.train.precision, small.train.compile
    bench("small.yaml", small, data, paths, args, device)
    bench("seed_base.yaml", base, data, paths, args, device)


if __name__ == "__main__":
    main()
