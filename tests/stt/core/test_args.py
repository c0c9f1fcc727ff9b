"""Checked values at the command line: one rule for a flag's text and for a value given in Python."""

import argparse

import pytest

from stt.core.args import NONNEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, OneLineParser


@pytest.mark.parametrize(
    "kind,text,message",
    [
        (POSITIVE_INT, "0", "0: expected an integer >= 1"),
        (POSITIVE_INT, "ten", "'ten' is not an integer"),
        (NONNEGATIVE_INT, "-1", "-1: expected an integer >= 0"),
        (POSITIVE_FLOAT, "0", "0: expected a number > 0"),
        (POSITIVE_FLOAT, "inf", "inf: expected a number > 0"),
        (POSITIVE_FLOAT, "fast", "'fast' is not a number"),
    ],
)
def test_a_bad_flag_value_says_what_was_expected(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{message}$"):
        kind(text)


def test_the_same_rule_checks_values_from_python():
    assert POSITIVE_INT.ok(3) and not POSITIVE_INT.ok(0) and not POSITIVE_INT.ok(True) and not POSITIVE_INT.ok(2.0)
    assert POSITIVE_FLOAT.ok(1) and POSITIVE_FLOAT.ok(0.5) and not POSITIVE_FLOAT.ok(float("nan"))


def test_the_parser_prints_one_line(capsys):
    p = OneLineParser(prog="tool")
    p.add_argument("--epochs", type=POSITIVE_INT)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--epochs", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "tool: error: argument --epochs: 0: expected an integer >= 1 (see tool --help)\n"
