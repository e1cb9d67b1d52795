"""User-facing errors: one clear line and a non-zero exit instead of a traceback."""
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
