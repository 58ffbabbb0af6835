"""What the entry points (train.py, eval.py, sample.py) share on the command line: one
error style.

Every error a user reads is one line on stderr, `error: <what is wrong>`, whether it is a
flag that does not fit (exit code 2, as argparse's usage errors) or a bad file or
checkpoint (exit code 1). Under torchrun every process meets the same error, so only
rank 0 prints it: the launcher's environment says which process this is before any
process group exists.
"""

from __future__ import annotations

import argparse
import os
import sys


def print_error(message: str) -> None:
    """`error: <message>` on stderr, once under torchrun (rank 0)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors read like every other error: one line, and exit code 2."""

    def error(self, message: str):
        print_error(f"{message} (see {self.prog} --help)")
        sys.exit(2)
