"""The one exception type the command line turns into a clean one-line error (exit code 2)."""


class UserInputError(ValueError):
    """Bad input from the user: a missing file, an unknown name, an out-of-range parameter.

    The message is one line that names the problem and says how to fix it.
    """


class MissingSplitError(UserInputError):
    """The dataset exists but has no such split (e.g. an ImageFolder without a test/ folder)."""
