"""Export a trial's run config as the YAML that `stt train --config` takes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.storage import load_study
from search.trials import Attr, Status, run_dir_of, runs_root, status_of, study_key, trained_by
from stt.core.checkpoint import load_checkpoint
from stt.core.errors import StudyError
from stt.core.files import atomic_path, make_dir, write_text
from stt.train.run_config import load_run_config


def pick_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match:
            raise StudyError(f"study '{study.study_name}' has no trial {number}")
        if Attr.CONFIG not in match[0].user_attrs:
            raise StudyError(
                f"trial {number} of '{study.study_name}' has no stored config (state {match[0].state.name})"
            )
        return match[0]
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not done:  # a budget that ended before any candidate reached full fidelity: the best paused one so far
        done = [t for t in trials if status_of(t) == Status.PAUSED and t.user_attrs.get(Attr.DEV_WER) is not None]
        if not done:
            raise StudyError(f"study '{study.study_name}' has no finished trial to export yet")
        return min(done, key=lambda t: (t.user_attrs[Attr.DEV_WER], t.number))
    return min(done, key=lambda t: (t.values[0], t.number))


def export(
    study_name: str,
    out: str | Path,
    storage: str | None = None,
    trial: int | None = None,
    weights: bool = False,
    runs_dir: str | None = None,
) -> tuple[Path, optuna.trial.FrozenTrial]:
    """Write the trial's run config to ``out`` (atomically); with ``weights``, copy its best.pt beside it."""
    study = load_study(study_name, storage)
    t = pick_trial(study, trial)
    run = load_run_config(json.loads(t.user_attrs[Attr.CONFIG]))
    out = Path(out)
    header = (
        f"# exported from study '{study_name}', trial {t.number}: dev WER "
        f"{t.user_attrs.get(Attr.DEV_WER, float('nan')):.4f} "
        f"after {t.user_attrs.get(Attr.EPOCHS, '?')} of {run.train.epochs} "
        f"epochs, {t.user_attrs.get(Attr.PARAMS, 0):,} parameters\n"
        f"# train it: stt train --config {out.name} --data DATA\n"
    )
    src = _weights(study, t, runs_dir) if weights else None  # every check before the first write
    make_dir(out.parent)
    if src is not None:
        with atomic_path(out.with_suffix(".pt")) as tmp:
            shutil.copyfile(src, tmp)
    write_text(out, header + run.to_yaml())
    return out, t


def _weights(study: optuna.Study, t: optuna.trial.FrozenTrial, runs_dir: str | None) -> Path:
    """The trial's best.pt, only from inside this host's runs root, and only if it is a checkpoint of ours.

    The folder is derived from this host's runs root, the study and the trial (``run_dir_of``), never read
    from the database: a database from elsewhere must not make export copy an arbitrary file
    (``../../home/user/.ssh/id_rsa``) or pass on a file that is not a checkpoint.
    """
    root = Path(runs_root(runs_dir))
    run_dir = run_dir_of(root, study_key(study), trained_by(study.trials, t))
    src = (run_dir / "best.pt").resolve()
    if not src.is_relative_to(root):  # best.pt itself may be a link out of the root
        raise StudyError(
            f"trial {t.number}: {run_dir / 'best.pt'} leads outside the runs root {root}; refusing to copy {src}"
        )
    if not src.exists():
        raise StudyError(
            f"trial {t.number}: no weights at {src} (a host that mounts the runs root elsewhere passes --runs-dir)"
        )
    load_checkpoint(src, keys=("model",))  # loads nothing executable; a file that is not ours fails here, named
    return src
