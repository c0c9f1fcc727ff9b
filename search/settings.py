"""The search options, declared once.

Each field of :class:`StudySettings` (what a study is: stored with it, so ``resume`` and every worker read the
same) and of :class:`WorkerOptions` (how this process works on a study: never stored) carries its flag, its
help, the commands that take it and what its value must be. ``stt-search``'s flags are generated from these
declarations (:func:`add_options`), and a study made from Python is checked by the same rules
(:meth:`StudySettings.check`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import Any

from search.fidelity import UNITS, FidelityPlan
from search.pruners import PROBING, PRUNERS, SIGNALS
from search.samplers import SAMPLERS, SINGLE_OBJECTIVE
from search.space import Space, load_space
from search.storage import storage_env, storage_url
from stt.core.args import INTEGER, NONNEGATIVE_FLOAT, NONNEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, Kind
from stt.core.errors import StudyError
from stt.train.run_config import TrainConfig

# the commands of stt-search that take options declared here
LAUNCH, RESUME, WORKER, EXPORT, COMPARE, DEMO, PROXY, SLURM, DASHBOARD = (
    "launch",
    "resume",
    "worker",
    "export",
    "compare",
    "demo",
    "storage-proxy",
    "slurm",
    "dashboard",
)
JOINS = (RESUME, WORKER)  # the commands that work on an existing study

OBJECTIVES = ("wer", "params", "gflops")  # minimised; the first is always dev WER
_OBJECTIVES = Kind(
    f"a comma-separated list of {', '.join(OBJECTIVES)}",
    lambda text: tuple(text.split(",")),
    lambda v: bool(v) and v[0] == "wer" and all(o in OBJECTIVES for o in v),
    "starting with wer",
)


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    kind: Kind | None = None,
    choices: tuple | None = None,
    commands: tuple[str, ...] = (LAUNCH,),
    negate: bool = False,
    metavar: str | None = None,
):
    """A search option: a dataclass field that also says how the command line takes it.

    Args:
        flag: its flag (None: not a flag; the field is filled in from others, e.g. the space's text).
        kind: what a value must be (parses the flag's text, checks any value).
        choices: the only values allowed.
        commands: the stt-search commands that take the flag.
        negate: a boolean that the flag turns off (``--no-probe``).
    """
    meta = dict(help=help, flag=flag, kind=kind, choices=choices, commands=commands, negate=negate, metavar=metavar)
    return field(default=default, metadata=meta)


@dataclass
class StudySettings:
    """What a study is and how it searches; stored as the study's user attributes."""

    space_text: str = option(help="the space file's text, so resume samples the same space")
    space_name: str = option(help="the space's name, for messages")
    data_dir: str = option(flag="--data", help="data folder (features are prepared if missing)", metavar="DIR")
    trials: int = option(
        20, "target number of finished candidates", flag="--trials", kind=POSITIVE_INT, commands=(LAUNCH, DEMO)
    )
    sampler: str = option("tpe", "how candidates are proposed", flag="--sampler", choices=tuple(SAMPLERS))
    pruner: str = option(
        "asha",
        "asha: successive halving with pause and promote, rungs at 1, 3, 9... epochs; "
        "median: the median of earlier trials at the same epoch",
        flag="--pruner",
        choices=tuple(PRUNERS),
    )
    prune_on: str = option(
        "loss",
        "the dev signal pruning compares each epoch (loss: the CTC loss per letter, which ranks candidates "
        "from the first epoch, when WER is still ~100%%)",
        flag="--prune-on",
        choices=SIGNALS,
    )
    probe: bool = option(
        True,
        "asha: no rung after 1/3 of epoch 1 (the first rung is then epoch 1)",
        flag="--no-probe",
        negate=True,
    )
    seeds_in_full: bool = option(
        True,
        "asha: seed configs (the space's seeds, --enqueue) pause at rungs like any candidate "
        "(by default a seed trains in full)",
        flag="--pause-seeds",
        negate=True,
    )
    seed: int | None = option(
        None, "seeds the sampler, per trial", flag="--seed", kind=INTEGER, commands=(LAUNCH, DEMO)
    )
    objectives: tuple = option(
        ("wer",), "wer, or wer,params / wer,gflops for a Pareto front", flag="--objectives", kind=_OBJECTIVES
    )
    max_params: float | None = option(
        None, "skip (prune) candidates with more parameters", flag="--max-params", kind=POSITIVE_FLOAT
    )
    max_gflops: float | None = option(
        None,
        "skip candidates above this many forward GFLOPs per audio-second",
        flag="--max-gflops",
        kind=POSITIVE_FLOAT,
    )
    epochs: int | None = option(
        None, "override the space's train.epochs", flag="--epochs", kind=POSITIVE_INT, commands=(LAUNCH, DEMO)
    )
    trial_seconds: float | None = option(
        None,
        "wall budget per trial (stops after the epoch that crosses it)",
        flag="--trial-seconds",
        kind=POSITIVE_FLOAT,
    )
    runs_dir: str | None = option(
        None,
        "the runs root: trials train in RUNS_DIR/STUDY-UID/trial_N (default: $STT_RUNS_DIR, else results/runs)",
        flag="--runs-dir",
        commands=(LAUNCH, DEMO),
    )
    startup_trials: int | None = option(
        None,
        "random trials before TPE models the space (default: a third of --trials, 3 to 10)",
        flag="--startup-trials",
        kind=NONNEGATIVE_INT,
    )
    heartbeat: int = option(
        30,
        "seconds between a running trial's heartbeats; a worker silent for 4 is presumed dead and its trial "
        "re-queued (database storages)",
        flag="--heartbeat",
        kind=POSITIVE_INT,
    )
    stretch: float = option(
        0.4,
        "with --timeout: the share of the budget's end that goes to the best candidate trained in full, grown by a "
        "network morphism and trained on from its weights to the deadline (0: none; the rest of the budget searches)",
        flag="--stretch",
        kind=Kind("a number", float, lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "in [0, 1)"),
        commands=(LAUNCH, DEMO),
    )
    rescore_top: int = option(
        0,
        "beam-decode the K best finished candidates with a lexicon and LM at the end (columns dev/test_wer_beam); "
        "candidates are still ranked by greedy dev WER",
        flag="--rescore-top",
        kind=NONNEGATIVE_INT,
        commands=(LAUNCH, DEMO),
        metavar="K",
    )
    lm: str | None = option(
        None,
        "with --rescore-top: ARPA or KenLM file (default: a unigram LM of the training transcripts, in DATA/lm)",
        flag="--lm",
    )
    lexicon: str | None = option(
        None, "with --rescore-top and --lm: lexicon file, or auto (the LM's words)", flag="--lexicon"
    )

    def __post_init__(self):
        self.objectives = tuple(self.objectives)
        self.check()

    def check(self) -> None:
        """Every option's rule; a bad value is one line naming its flag (the same line argparse would print)."""
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.multi_objective and self.sampler in SINGLE_OBJECTIVE:
            raise StudyError(
                f"--sampler {self.sampler} ranks by one value; with --objectives "
                f"{','.join(self.objectives)} use --sampler nsga2, tpe or random"
            )
        if self.lexicon is not None and self.lm is None:
            raise StudyError("--lexicon needs --lm (without --lm, the corpus's own lexicon and unigram LM are used)")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def fidelity(self, space: Space, end: float | None = None, budget: float | None = None) -> FidelityPlan:
        """The study's fidelity plan: the full epochs (``--epochs``, else the space's ``train.epochs``), steps in
        thirds of an epoch when ASHA probes, and the deadlines: a run of ``budget`` seconds that ends at ``end``
        searches until its last ``--stretch`` share, which goes to growing the best candidate. Built once per
        worker, for the pruner and the objective alike.

        A space that searches ``train.epochs`` has no single full fidelity, so a pruner that compares candidates
        epoch by epoch could not rank like with like: refused in one line, unless ``--epochs`` fixes it.
        """
        epochs = self.epochs or space.spec.get("train", {}).get("epochs", TrainConfig().epochs)
        if isinstance(epochs, (list, dict)):
            if self.pruner != "none":
                raise StudyError(
                    f"{space.name}: train.epochs: {epochs} is searched, but --pruner {self.pruner} compares candidates "
                    "at the epochs of one full fidelity; fix train.epochs, pass --epochs N, or use --pruner none"
                )
            epochs = max(epochs) if isinstance(epochs, list) else int(epochs["high"])  # each trains its own
        probing = self.pruner in PROBING and self.probe and not self.multi_objective
        units = UNITS if probing else 1
        if end is None or not budget or not self.stretch or self.multi_objective:
            return FidelityPlan(epochs, units=units, deadline=end)
        return FidelityPlan(epochs, units=units, deadline=end - self.stretch * budget, stretch_end=end)

    def to_attrs(self) -> dict:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_attrs(cls, attrs: dict) -> StudySettings:
        d = {f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs}
        d.setdefault("probe", True)  # a study made before the setting counted its steps in thirds of an epoch
        d.setdefault("seeds_in_full", False)  # and paused its seeds like any candidate
        return cls(**d)


@dataclass
class WorkerOptions:
    """How and where this process works on a study; per process, never stored."""

    storage: str | None = option(
        None,
        "Optuna storage URL (default $STT_SEARCH_STORAGE, else sqlite:///results/studies.db; postgresql://... for "
        "many hosts; a password here is visible to every user of the host: use --storage-file or ~/.pgpass)",
        flag="--storage",
        commands=(LAUNCH, *JOINS, EXPORT, COMPARE, DEMO, PROXY, SLURM, DASHBOARD),
        metavar="URL",
    )
    storage_file: str | None = option(
        None,
        "a file (mode 0600) whose first line is the storage URL; workers started from here read the same file",
        flag="--storage-file",
        commands=(LAUNCH, *JOINS, EXPORT, COMPARE, DEMO, PROXY, SLURM, DASHBOARD),
        metavar="PATH",
    )
    timeout: float | None = option(
        None,
        "wall seconds for this run: no trial starts after it, and a running one stops at its next epoch end "
        "(resume continues it)",
        flag="--timeout",
        kind=POSITIVE_FLOAT,
        commands=(LAUNCH, *JOINS),
    )
    device: str | None = option(
        None,
        "where trials train: cpu, cuda, cuda:1 ... (default: CUDA if available)",
        flag="--device",
        commands=(LAUNCH, *JOINS),
    )
    in_process: bool = option(
        False,
        "train trials in this process instead of one child process each (debugging; memory grows)",
        flag="--in-process",
        commands=(LAUNCH, *JOINS),
    )
    workers: int = option(
        1,
        "local worker processes (default 1: this one)",
        flag="--workers",
        kind=POSITIVE_INT,
        commands=(LAUNCH, *JOINS),
    )
    trials_per_device: int = option(
        1,
        "with --workers and several GPUs: workers per GPU",
        flag="--trials-per-device",
        kind=POSITIVE_INT,
        commands=(LAUNCH, *JOINS),
    )
    data_mount: str | None = option(
        None, "where this host mounts the study's data folder (default: the study's)", flag="--data", commands=JOINS
    )
    runs_mount: str | None = option(
        None,
        "this host's runs root (default: $STT_RUNS_DIR, else results/runs here; never the database's)",
        flag="--runs-dir",
        commands=(*JOINS, EXPORT),
    )
    dry_run: float | None = option(
        None,
        "load test: sample and build each candidate, wait SECONDS, train nothing",
        flag="--dry-run",
        kind=NONNEGATIVE_FLOAT,
        commands=(WORKER,),
        metavar="SECONDS",
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        self.storage = storage_url(self.storage, self.storage_file)  # the one place the URL is resolved

    def worker_env(self) -> dict[str, str]:
        """The environment a worker started from here needs to open the same storage (never its argv)."""
        return storage_env(self.storage, self.storage_file)


def _check(f: dataclasses.Field, value) -> None:
    meta = f.metadata
    if value is None and f.default is None:
        return
    name = meta["flag"] or f.name
    if meta["kind"] is not None and not meta["kind"].ok(value):
        raise StudyError(f"{name} {_show(value)}: expected {meta['kind'].expected}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise StudyError(f"{name} {value!r}: valid: {', '.join(meta['choices'])}")


def _show(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else repr(value)


def _plain(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def add_options(parser: argparse.ArgumentParser, cls: type, command: str, defaults: dict | None = None) -> None:
    """Add the flags of ``cls``'s options that ``command`` takes (``defaults``: this command's own defaults)."""
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta["flag"] is None or command not in meta["commands"]:
            continue
        default = defaults.get(f.name, None if f.default is MISSING else f.default)
        if meta["negate"]:
            parser.add_argument(meta["flag"], dest=f.name, action="store_false", help=meta["help"])
        elif f.type == "bool":
            parser.add_argument(meta["flag"], dest=f.name, action="store_true", help=meta["help"])
        else:
            parser.add_argument(
                meta["flag"],
                dest=f.name,
                type=meta["kind"],
                choices=meta["choices"],
                default=default,
                required=f.default is MISSING and f.name not in defaults,
                metavar=meta["metavar"],
                help=meta["help"] + (f" (default {_plain(default)})" if default not in (None, ()) else ""),
            )


def options_from(args: argparse.Namespace, cls: type, **given):
    """The ``cls`` options a parsed command line holds (its other fields from ``given``)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **given})


def settings_from_space(space_path: str, data_dir: str, trials: int, **kw) -> StudySettings:
    """The settings of a study of the space file (or shipped space) ``space_path``; ``kw``: any other option."""
    space = load_space(space_path)
    return StudySettings(space_text=space.text, space_name=space.name, data_dir=str(data_dir), trials=trials, **kw)
