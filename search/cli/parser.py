"""``stt-search``'s flags. The search options are generated from their one declaration (``search.settings``);
what is declared here belongs to a single command (the study's name, the space file, export's output)."""

from __future__ import annotations

import argparse

from search.cli import commands
from search.settings import (
    COMPARE,
    DASHBOARD,
    DEMO,
    EXPORT,
    LAUNCH,
    PROXY,
    RESUME,
    SLURM,
    WORKER,
    StudySettings,
    WorkerOptions,
    add_options,
)
from stt.core.args import NONNEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, OneLineParser

SPACE_HELP = "a shipped space by name (small, seed, quartznet, quartznet_cpu) or a search space YAML"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="stt-search", description="Architecture search for CTC speech recognisers (Optuna).")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_launch, _joins, _storage_proxy, _slurm, _results, _dashboard, _demo):
        add(sub)
    return p


def _launch(sub) -> None:
    """launch: create a study (from a space) and run it."""
    la = sub.add_parser(LAUNCH, help="create a study and run it")
    la.add_argument("--space", required=True, help=SPACE_HELP)
    la.add_argument("--study", required=True, help="study name")
    la.add_argument(
        "--enqueue",
        action="append",
        default=[],
        metavar="CONFIG",
        help="a run config (e.g. an exported one) to train first, after the space's seeds; repeatable",
    )
    la.add_argument(
        "--create-only",
        action="store_true",
        help="check everything and create the study, train nothing (its workers join later: worker, slurm)",
    )
    _options(la, LAUNCH, commands.launch)


def _joins(sub) -> None:
    """resume and worker: work on an existing study."""
    for name, what, func in (
        (RESUME, "continue a study towards its target (re-queues trials of dead workers)", commands.resume),
        (WORKER, "join a study from any machine and train its trials until the target is met", commands.worker),
    ):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("--study", required=True)
        _options(sp, name, func)


def _storage_proxy(sub) -> None:
    """storage-proxy: one storage served to many workers over gRPC."""
    sp = sub.add_parser(
        "storage-proxy", help="serve a storage to many workers over gRPC (they use --storage grpc://HOST:PORT)"
    )
    sp.add_argument("--host", default="localhost", help="address to listen on (default localhost)")
    sp.add_argument("--port", type=int, default=13000)
    sp.add_argument("--tls-cert", metavar="PEM", help="serve over TLS with this certificate chain (with --tls-key)")
    sp.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (mode 0600)")
    sp.add_argument(
        "--insecure",
        action="store_true",
        help="listen on an address other hosts reach, without TLS or authentication: anyone who reaches it can "
        "rewrite or delete the study",
    )
    _options(sp, PROXY, commands.storage_proxy)


def _slurm(sub) -> None:
    """slurm: a study's workers as a Slurm job array; their status; cancelling them."""
    sl = sub.add_parser(SLURM, help="run a study's workers as a Slurm job array; show or cancel them")
    sl.add_argument(
        "action", nargs="?", choices=("submit", "status", "cancel"), default="submit", help="(default submit)"
    )
    sl.add_argument("--study", required=True)
    sl.add_argument("--workers", type=POSITIVE_INT, default=1, help="array tasks, one worker each (default 1)")
    sl.add_argument("--gpus-per-worker", type=NONNEGATIVE_INT, default=0, help="GPUs per task (--gres=gpu:G)")
    sl.add_argument("--cpus-per-worker", type=POSITIVE_INT, default=1, help="cores per task (default 1)")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--time", type=POSITIVE_INT, default=60, help="minutes per task (default 60)")
    sl.add_argument(
        "--signal-delay",
        type=POSITIVE_INT,
        default=120,
        metavar="SECONDS",
        help="the warning signal comes this long before the time limit: the task checkpoints its trial and "
        "requeues itself (default 120)",
    )
    sl.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="an extra sbatch option; repeatable"
    )
    sl.add_argument("--logs", default=None, help="the tasks' logs (default results/slurm/STUDY)")
    sl.add_argument("--data", dest="data_mount", default=None, help="where the nodes mount the study's data")
    sl.add_argument("--runs-dir", dest="runs_mount", default=None, help="the nodes' runs root (a shared folder)")
    sl.add_argument("--timeout", type=POSITIVE_FLOAT, default=None, help="wall seconds for each worker")
    add_options(sl, WorkerOptions, SLURM)
    sl.set_defaults(func=commands.slurm)


def _results(sub) -> None:
    """export and compare: what a study found."""
    ex = sub.add_parser(EXPORT, help="write a trial's run config (default: the best) as YAML for `stt train`")
    ex.add_argument("--study", required=True)
    ex.add_argument("--trial", type=int, default=None)
    ex.add_argument("-o", "--output", required=True)
    ex.add_argument("--weights", action="store_true", help="also copy the trial's best.pt beside the YAML")
    _options(ex, EXPORT, commands.export)

    co = sub.add_parser(COMPARE, help="leaderboard, CSV and an interactive HTML report of one or more studies")
    co.add_argument("studies", nargs="+")
    co.add_argument("--top", type=POSITIVE_INT, default=10)
    co.add_argument("--out", default=None, help="report folder (default results/compare/NAMES)")
    _options(co, COMPARE, commands.compare)


def _dashboard(sub) -> None:
    """dashboard: the study in optuna-dashboard."""
    da = sub.add_parser(DASHBOARD, help="browse a study in optuna-dashboard (pip install -e '.[dashboard]')")
    da.add_argument("--study", required=True)
    da.add_argument("--port", type=POSITIVE_INT, default=8080, help="port on 127.0.0.1 (default 8080)")
    add_options(da, WorkerOptions, DASHBOARD)
    da.set_defaults(func=commands.dashboard)


def _demo(sub) -> None:
    """demo: the main job."""
    de = sub.add_parser(
        DEMO, help="the main job: synthesise the corpus if absent, run a short CPU study, export the best"
    )
    de.add_argument("--data", default="data/synth")
    de.add_argument("--hours", type=POSITIVE_FLOAT, default=1.0)
    de.add_argument("--space", default="small", help=SPACE_HELP)
    de.add_argument("--study", default="demo")
    de.add_argument(
        "--budget",
        type=POSITIVE_FLOAT,
        default=20 * 60,
        help="wall seconds for the study (default 20 min); a trial running then stops at its next epoch end",
    )
    de.add_argument("--export", default="results/demo-best.yaml")
    # the budget ends the demo first; seeded, and its three best beam-decoded with the corpus's lexicon and LM
    _options(de, DEMO, commands.demo, defaults={"trials": 60, "seed": 0, "rescore_top": 3})


def _options(parser: argparse.ArgumentParser, command: str, func, defaults: dict | None = None) -> None:
    add_options(parser, StudySettings, command, defaults)
    add_options(parser, WorkerOptions, command, defaults)
    parser.set_defaults(func=func)
