"""The one exception type the CLI turns into a clean one-line message and exit status 2."""


class BenchError(Exception):
    """Bad input or an unusable environment: the message is shown to the user as is."""
