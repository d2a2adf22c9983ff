"""Domain errors of the server. They know nothing of gRPC; transport/status.py maps each to a status.

A message repeats what the caller sent (a model name, an input name) only through `shown` (one name)
or `shown_list` (names), so that a 100,000-character name comes back as 100 characters and its length,
not as a status too large for the caller's metadata limit (8 KiB by default), which the caller would see
as RESOURCE_EXHAUSTED instead.
"""

from collections.abc import Sequence

SHOWN_ITEMS = 8


def shown(text: str, limit: int = 100) -> str:
    """A caller's string as an error message repeats it: at most `limit` characters of it, so a huge
    name cannot swell the answer past what a client accepts."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown_list(items: Sequence[str]) -> str:
    """A list of a caller's names as an error message repeats it: the first SHOWN_ITEMS, each `shown`."""
    first = [shown(item) for item in items[:SHOWN_ITEMS]]
    return f"{first} and {len(items) - SHOWN_ITEMS} more" if len(items) > SHOWN_ITEMS else f"{first}"


class ServingError(Exception):
    """Base of every error whose message is meant for the caller."""


class InvalidInput(ServingError):
    """The request itself is wrong: shape, dtype, names, empty batch, bad enum."""


class ModelNotFound(ServingError):
    """No model (or version) of that name is loaded."""


class ModeNotSupported(ServingError):
    """The model cannot answer in the requested mode (classes of a linear output, say)."""


class ModelNotReady(ServingError):
    """The model is still loading or warming up; retrying later will work."""


class Overloaded(ServingError):
    """The model's queue is full; retrying later may work."""


class ModelFailed(ServingError):
    """Running the model itself failed; the message names an incident in the server log, not internals."""


class ModelLoadError(ServingError):
    """A model file could not be loaded."""


class ModelConfigError(ModelLoadError):
    """A model's config.json in the repository is malformed or asks for what the server does not allow."""


class ControlDisabled(ServingError):
    """A call asked to load or unload models on a server whose model control is off."""


class UnsafeModelError(ModelLoadError):
    """A model file asks for something that could run code, and the operator did not allow it."""


class UntestedVersion(RuntimeError):
    """The installed Keras or TensorFlow is outside the versions whose private APIs were checked."""


class SessionNotFound(ServingError):
    """No session of that id: never created here, ended, or expired."""


class CannotStep(ServingError):
    """The model cannot keep sessions (a layer needs whole sequences), or cannot forecast; says why."""


class SessionModelGone(ServingError):
    """The model version a session is pinned to has been unloaded; the session has ended with it."""
