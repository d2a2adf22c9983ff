"""One line of an error's text for a refusal: what Keras, TensorFlow or h5py said, without their frames."""

from __future__ import annotations

import re

MAX_REASON_CHARS = 500


def one_line(error: BaseException, limit: int = MAX_REASON_CHARS) -> str:
    """"ValueError: ..." on one line. TensorFlow's "in user code:" texts list the frames first and
    the error last, so their last line is kept; other texts are joined onto one line and cut."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0] == "in user code:":
        text = lines[-1]
    text = " ".join(text.split())
    # Keras prints the whole config it could not build before the reason.
    deserializing = re.match(r"Error when deserializing class '[^']*'", text)
    if deserializing and "Exception encountered:" in text:
        text = f"{deserializing.group(0)}: {text.rsplit('Exception encountered:', 1)[1].strip()}"
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(error).__name__}: {text}"
