"""Errors of the file format: a file's metadata that cannot be used, raw inputs a preparation refuses."""


class FormatError(ValueError):
    """The lstmserve metadata in a model file is malformed or asks for something this version lacks."""


class RawInputError(ValueError):
    """Raw observations the model's preparation cannot take (log of a value <= 0, say)."""
