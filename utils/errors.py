"""Problems with the user's input, as one line each.

A problem with a path, a flag or a file is a UserError: a script wrapped in exit_on_user_error
prints it as ``error: <message>`` and exits 1 instead of showing a traceback. A problem the run
can go on with is one line, ``warning: <message>``. This module imports nothing of the project,
so every layer can raise these.
"""
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
