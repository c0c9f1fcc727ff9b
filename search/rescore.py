"""Beam-search WER for a study's best trials (``--rescore-top K``).

Studies rank candidates by greedy dev WER: it is fast, and a property of the acoustic model alone.
What a user ships is the model with a lexicon and an LM, so the finished top-K trials are decoded
again with the beam decoder, on dev and test, in a child process. The results are study user
attributes ``rescored_N`` (a finished trial's own attributes cannot change in Optuna), which
``trials_frame`` turns into the columns ``dev_wer_beam``, ``dev_cer_beam``, ``test_wer_beam`` and
``test_cer_beam``. Each worker rescores what is missing when it finishes, so a study rescored by one
worker is not rescored again by the next.
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from search.trials import run_dir_of, study_key, trained_by
from stt.core.errors import StudyError

log = logging.getLogger("search")
PREFIX = "rescored_"


def rescore_top(
    study: optuna.Study, k: int, lm: str, lexicon: str, data_dir: str, runs_dir: str, device: str | None = None
) -> list[int]:
    """Beam-decode the ``k`` best finished trials not rescored yet; returns their numbers."""
    from search.isolation import call_in_child

    done = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.values),
        key=lambda t: (t.values[0], t.number),
    )[:k]
    have = study.user_attrs
    todo = [t for t in done if f"{PREFIX}{t.number}" not in have]
    trials = study.get_trials(deepcopy=False)
    for t in todo:
        try:
            run_dir = run_dir_of(runs_dir, study_key(study), trained_by(trials, t))
        except StudyError as e:  # a storage from elsewhere
            log.warning("trial %d: not rescored: %s", t.number, e)
            continue
        scores = call_in_child(beam_scores, str(run_dir), data_dir, lm, lexicon, device)
        study.set_user_attr(f"{PREFIX}{t.number}", scores)
        shown = ", ".join(f"{k} {100 * v:.1f}%" for k, v in scores.items() if k.endswith("wer_beam"))
        log.info(
            "trial %d rescored with the beam decoder: %s (greedy dev WER %.1f%%)", t.number, shown, 100 * t.values[0]
        )
    return [t.number for t in todo]


def beam_scores(run_dir: str, data_dir: str, lm: str, lexicon: str, device: str | None) -> dict:
    """dev/test WER and CER of a run's best weights with the beam decoder (in the child)."""
    from stt.data.corpus import find_splits, resolve_split
    from stt.decode.beam import make_decoder
    from stt.train.run import load_run

    loaded = load_run(run_dir, device=device)
    decoder = make_decoder(loaded.tokenizer, lm, lexicon)
    splits = find_splits(data_dir)
    out = {}
    for role in ("dev", "test"):
        try:
            name = resolve_split(splits, role)
        except ValueError:  # no such split in this corpus
            continue
        s = loaded.evaluator().transcribe(loaded.features(data_dir, name), decoder).scores
        out[f"{role}_wer_beam"], out[f"{role}_cer_beam"] = s.wer, s.cer
    out["decoder"] = decoder.describe()
    return out


def rescored(study: optuna.Study) -> dict[int, dict]:
    """trial number -> its beam-search scores."""
    return {
        int(k[len(PREFIX) :]): v for k, v in study.user_attrs.items() if k.startswith(PREFIX) and isinstance(v, dict)
    }
