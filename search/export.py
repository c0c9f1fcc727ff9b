"""Export a trial's run config as the YAML that `stt train --config` takes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.study import DEFAULT_STORAGE, StudyError, open_storage, redact
from stt.run_config import load_run_config


def pick_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match:
            raise StudyError(f"study '{study.study_name}' has no trial {number}")
        if "config" not in match[0].user_attrs:
            raise StudyError(f"trial {number} of '{study.study_name}' has no stored config (state {match[0].state.name})")
        return match[0]
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not done:
        raise StudyError(f"study '{study.study_name}' has no finished trial to export yet")
    return min(done, key=lambda t: (t.values[0], t.number))


def export(study_name: str, out: str | Path, storage: str | None = None, trial: int | None = None,
           weights: bool = False) -> tuple[Path, optuna.trial.FrozenTrial]:  # fmt: skip
    """Write the trial's run config to ``out`` (atomically); with ``weights``, copy its best.pt beside it."""
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise StudyError(f"no study '{study_name}' in {redact(storage or DEFAULT_STORAGE)}") from None
    t = pick_trial(study, trial)
    run = load_run_config(json.loads(t.user_attrs["config"]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    header = (f"# exported from study '{study_name}', trial {t.number}: dev WER "
              f"{t.user_attrs.get('dev_wer', float('nan')):.4f}, {t.user_attrs.get('params', 0):,} parameters\n"
              f"# train it: stt train --config {out.name} --data DATA\n")  # fmt: skip
    tmp.write_text(header + run.to_yaml())
    if weights:
        # run directories are stored relative to the study's runs root (absolute ones join to themselves)
        src = Path(study.user_attrs.get("runs_dir", ".")) / t.user_attrs.get("run_dir", "") / "best.pt"
        if not src.exists():
            tmp.unlink()
            raise StudyError(f"trial {t.number}: no weights at {src}")
        shutil.copy2(src, out.with_suffix(".pt"))
    tmp.replace(out)
    return out, t
