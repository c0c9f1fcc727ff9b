"""Foundations the rest of stt stands on: the error hierarchy (``errors``), whole-or-absent files and lock files
(``files``), devices and precision (``device``), checkpoints that load as data (``checkpoint``) and the argparse
pieces both command lines share (``args``). Imports nothing else from stt."""

__version__ = "0.1.0"  # recorded in every result.json and trial
