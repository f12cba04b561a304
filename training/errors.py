"""One exception type for everything the user can fix; the CLI turns it into a one-line error and exit 2."""


class UserError(Exception):
    """Bad input, bad configuration or missing data: reported as one line, never as a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries raise multi-line ones), or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
