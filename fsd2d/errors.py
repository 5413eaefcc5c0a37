"""The one exception family for bad user input. The CLI turns it into one line and exit code 2."""


class InputError(ValueError):
    """Input a user can fix (unknown prompt, model, method; out-of-range value). Message: one line."""
