"""The command line shared by every script: the argument parser and the argument types.

Errors in the user's input are utils.errors.UserError; the parser's own errors are one line too.
"""
import argparse


def default_text(value):
    """A flag's default as a user types it: 769,769 for a pair, true/false for a boolean."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Help lines that end with the flag's default: ``(default: 769,769)``, ``(default: off)`` for a
    switch, ``(required)``; a help that says what its default is in its own words keeps them."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or "default" in text or argparse.SUPPRESS in (action.help, action.default)):
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0:
            return f"{text} (default: {'on' if action.default else 'off'})"
        if action.default is None:
            return text
        return f"{text} (default: {default_text(action.default).replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: <message>``, with exit status 2 and no usage
    dump, and whose help shows every flag's default (HelpFormatter)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

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
