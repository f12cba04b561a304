"""One exception type for everything the user can fix; the CLI turns it into a one-line error and exit 2."""


class UserError(Exception):
    """Bad input, bad configuration or missing data: reported as one line, never as a traceback."""
