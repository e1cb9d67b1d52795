"""The command line shared by every script: one-line user errors, the argument parser, argument types.

A problem with the user's input (a path, a flag, a file) is a UserError: the script prints it as
one line, ``error: <message>``, and exits non-zero instead of showing a traceback; a problem the
run can go on with is one line, ``warning: <message>``.
"""
import argparse
import functools
import sys


class UserError(Exception):
    """A problem with the user's input (a path, a flag, a file); printed as one line."""


def exit_on_user_error(main):
    """Wrap a script's main(): a UserError prints ``error: <message>`` to stderr and exits 1."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
    return wrapper


def warn(message):
    """Print one line, ``warning: <message>``, to stderr; the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: <message>``, with exit status 2 and no usage dump."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def str2bool(text):
    """'1', 'true', 'yes', 'on' -> True; '0', 'false', 'no', 'off' -> False (any case)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false, yes/no), got {text!r}")


def size_pair(text):
    """'769,769' -> (769, 769); a single '769' -> (769, 769). Sizes are (height, width)."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH with positive integers, got {text!r}")
    return tuple(parts)


def size_triple(text):
    """'32,48,40' -> (32, 48, 40): the sizes (D1, D2, D3) of a volume, all positive."""
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected D1,D2,D3 with positive integers, got {text!r}")
    return tuple(int(p) for p in parts)


def float_list(text):
    """'0.75,1.0,1.25' -> [0.75, 1.0, 1.25] (all positive)."""
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}")
    return values


def point(text):
    """'Y,X' -> (Y, X), pixel coordinates (row, column) in an image, both non-negative."""
    try:
        y, x = (int(p) for p in text.split(","))
    except ValueError:
        y = x = -1
    if min(y, x) < 0:
        raise argparse.ArgumentTypeError(f"expected Y,X with non-negative integers, got {text!r}")
    return y, x


def unit_interval(text):
    """A float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _bounded_int(text, low, high, expected):
    """int(text) if it lies in [low, high] (high None: no upper bound), else an argparse error."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def label_value(text):
    """A label value of the 8-bit label PNGs: an integer in 0..255 (such as the ignore label 255)."""
    return _bounded_int(text, 0, 255, "an integer label value in 0..255")


def positive_int(text):
    """An integer of at least 1."""
    return _bounded_int(text, 1, None, "a positive integer")
