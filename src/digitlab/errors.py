"""The errors digitlab raises for things a user can fix.

Every `DigitlabError` carries a one-line message that says what is wrong and what to do.
The CLI prints it and exits with status 2; the HTTP API turns it into a 4xx response.
Anything else that escapes is a bug in digitlab, and keeps its traceback.
"""


class DigitlabError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(DigitlabError):
    """A dataset cannot be found, fetched, verified or parsed."""


class SpecError(DigitlabError):
    """A network spec, preset or compile choice is unknown or inconsistent."""


class ImageError(DigitlabError):
    """An image cannot be decoded, is too large, or holds no digit."""


class RunError(DigitlabError):
    """A run directory is missing, incomplete or unreadable."""


class WriteError(DigitlabError, OSError):
    """A file can't be written: a full disk, a read-only place, a folder where a file was meant.

    It is an `OSError` too, so code that keeps work safe on any failed write still catches it.
    """


class DivergedError(SpecError):
    """Training diverged: the loss became NaN or infinite, so nothing was saved.

    A `SpecError` (the fix is in the spec: a lower learning rate, scaled inputs), typed so an
    experiment can record a diverged cell as a result without reading the message.
    """
