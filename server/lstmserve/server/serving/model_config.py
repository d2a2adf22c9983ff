"""A repository model's settings: the server's flags, overridden by the model's own config.json.

config.json is read as untrusted input: at most MAX_CONFIG_BYTES, nesting checked before parsing,
duplicate keys, unknown keys and wrong types refused with a message naming the key, what was expected
and what the file holds. It may allow code (Lambda layers, custom-object modules) only on a server
started with --trust-model-config, because whoever writes the repository is not always the operator.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lstmserve.server.engine.base import BatchConfig
from lstmserve.server.errors import ModelConfigError, shown

CONFIG_NAME = "config.json"
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 4  # the schema needs 2 (an object of objects and lists)
MAX_LABELS = 32
MAX_POLICY_VERSIONS = 1000
LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_VERSION = 2**63 - 1
POSITIVE = re.compile(r"[1-9][0-9]{0,18}")
KEYS = ("version_policy", "labels", "batching", "custom_objects", "allow_code")
BATCHING_LIMITS = {"max_batch": (1, 4096), "max_delay_ms": (0, 10_000), "queue_capacity": (1, 1_000_000)}


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: the N highest, all of them, or the ones listed."""

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        kind, _, argument = text.partition(":")
        if kind == "all" and not argument:
            return cls("all")
        if kind == "latest" and _positive(argument) and int(argument) <= MAX_POLICY_VERSIONS:
            return cls("latest", int(argument))
        if kind == "specific" and argument:
            numbers = argument.split(",")
            if all(_positive(n) for n in numbers) and len(numbers) <= MAX_POLICY_VERSIONS:
                return cls("specific", versions=tuple(sorted({int(n) for n in numbers})))
        raise ValueError(f"version policy is '{shown(text)}'; expected 'latest:N' (N from 1 to "
                         f"{MAX_POLICY_VERSIONS}), 'all' or 'specific:V,V,...' (positive integers)")

    def select(self, versions: Iterable[int], cap: int) -> set[int]:
        """The versions this policy serves out of `versions`, never more than `cap` (the highest)."""
        ordered = sorted(versions, reverse=True)
        if self.kind == "latest":
            chosen = ordered[:self.count]
        elif self.kind == "specific":
            chosen = [v for v in ordered if v in self.versions]
        else:
            chosen = ordered
        return set(chosen[:cap])

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"


@dataclass(frozen=True)
class ModelSettings:
    """How one model of the repository is served. `load_key` is what a loaded version depends on: when
    it changes, loaded versions are loaded again and failed ones are tried again."""

    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)
    batching: BatchConfig = BatchConfig()
    custom_objects: tuple[str, ...] = ()
    allow_code: bool = False

    @property
    def load_key(self) -> tuple:
        return (self.batching, self.custom_objects, self.allow_code)


def read_settings(model_dir: Path, defaults: ModelSettings, trust_config: bool) -> ModelSettings:
    """`defaults` overridden by model_dir/config.json when there is one; ModelConfigError says what is
    wrong with it."""
    path = model_dir / CONFIG_NAME
    if not path.exists():
        return defaults
    where = f"{model_dir.name}/{CONFIG_NAME}"
    try:
        document = _parse(_read(path, where), where)
        return _apply(document, defaults, trust_config)
    except ValueError as error:
        raise ModelConfigError(f"{where}: {error}") from None


def _read(path: Path, where: str) -> str:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ModelConfigError(f"cannot read {where}: {error.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"the file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"the file is not UTF-8 ({error.reason} at byte {error.start})") from None


def _parse(text: str, where: str) -> dict[str, Any]:
    depth = _nesting(text)
    if depth > MAX_CONFIG_DEPTH:
        raise ValueError(f"the JSON nests {depth} levels deep; at most {MAX_CONFIG_DEPTH}")
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object; the file holds {_kind(document)}")
    return document


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings, found without building anything."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"key {shown(duplicates[0])!r} appears more than once")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _apply(document: dict[str, Any], defaults: ModelSettings, trust_config: bool) -> ModelSettings:
    _known(document, KEYS, "the top level")
    settings = defaults
    if "version_policy" in document:
        settings = replace(settings, policy=VersionPolicy.parse(_string(document, "version_policy")))
    if "labels" in document:
        settings = replace(settings, labels=_labels(document["labels"]))
    if "batching" in document:
        settings = replace(settings, batching=_batching(document["batching"], defaults.batching))
    code = [key for key in ("custom_objects", "allow_code") if key in document]
    if code and not trust_config:
        raise ValueError(f"'{code[0]}' lets a model file run code; this server takes it from a "
                         "config.json only when started with --trust-model-config")
    if "custom_objects" in document:
        settings = replace(settings, custom_objects=_modules(document["custom_objects"]))
    if "allow_code" in document:
        if not isinstance(document["allow_code"], bool):
            raise ValueError(f"'allow_code' is {_kind(document['allow_code'])}; expected true or false")
        settings = replace(settings, allow_code=document["allow_code"])
    return settings


def _known(section: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = [key for key in section if key not in keys]
    if unknown:
        raise ValueError(f"unknown key {shown(unknown[0])!r} in {where}; expected {list(keys)}")


def _string(document: dict[str, Any], key: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise ValueError(f"'{key}' is {_kind(value)}; expected a string")
    return value


def _labels(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"'labels' is {_kind(value)}; expected an object such as "
                         '{"stable": 3, "canary": 4}')
    if len(value) > MAX_LABELS:
        raise ValueError(f"'labels' has {len(value)} entries; at most {MAX_LABELS}")
    for label, version in value.items():
        if not LABEL.match(label):
            raise ValueError(f"label {shown(label)!r} is not a label: expected lower-case letters, "
                             "digits, '_' or '-', starting with a letter, at most 63 characters")
        if type(version) is not int or not 0 < version <= MAX_VERSION:
            raise ValueError(f"label '{label}' names {_kind(version)}; expected a version number "
                             "(a positive integer)")
    return dict(value)


def _batching(value: Any, defaults: BatchConfig) -> BatchConfig:
    if not isinstance(value, dict):
        raise ValueError(f"'batching' is {_kind(value)}; expected an object with "
                         f"{list(BATCHING_LIMITS)}")
    _known(value, tuple(BATCHING_LIMITS), "'batching'")
    numbers = {}
    for key, (low, high) in BATCHING_LIMITS.items():
        number = value.get(key)
        if number is None:
            continue
        integral = key != "max_delay_ms"
        if (isinstance(number, bool) or not isinstance(number, int if integral else (int, float))
                or not math.isfinite(number) or not low <= number <= high):
            kind = "an integer" if integral else "a number"
            raise ValueError(f"'batching.{key}' is {_kind(number)}; expected {kind} from {low} to {high}")
        numbers[key] = number
    return BatchConfig(numbers.get("max_batch", defaults.max_batch),
                       numbers.get("max_delay_ms", defaults.max_delay_s * 1000) / 1000,
                       numbers.get("queue_capacity", defaults.queue_capacity))


def _modules(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"'custom_objects' is {_kind(value)}; expected a list of module names")
    bad = [item for item in value if not MODULE.match(item)]
    if bad:
        raise ValueError(f"'custom_objects' holds {shown(bad[0])!r}; expected a module name such as "
                         "'mypackage.layers'")
    return tuple(value)


def _positive(text: str) -> bool:
    return POSITIVE.fullmatch(text) is not None and int(text) <= MAX_VERSION


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {shown(value)!r}"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)
