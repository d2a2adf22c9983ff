"""One line of an error's text for a refusal: what Keras, TensorFlow or h5py said, without their frames."""

from __future__ import annotations

import re

MAX_REASON_CHARS = 500
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ERROR_LINE = re.compile(r"[\w.]+(Error|Exception)\b[^:]*:")


def one_line(error: BaseException, limit: int = MAX_REASON_CHARS) -> str:
    """"ValueError: ..." on one line, cut at `limit` characters. TensorFlow's "in user code:" texts
    list the frames first and the error after them; Keras adds the call's arguments and, for a config it
    could not build, the whole config: only the reason is kept."""
    text = ANSI.sub("", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0] == "in user code:":
        errors = [index for index, line in enumerate(lines) if ERROR_LINE.match(line)]
        text = " ".join(lines[errors[-1] if errors else -1:])
    text = re.sub(r"\s*Arguments received by .*$", "", " ".join(text.split()))
    deserializing = re.match(r"Error when deserializing class '[^']*'", text)
    if deserializing and "Exception encountered:" in text:
        text = f"{deserializing.group(0)}: {text.rsplit('Exception encountered:', 1)[1].strip()}"
    kind = type(error).__name__
    text = text.removeprefix(f"{kind}: ")
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{kind}: {text}"
