"""Path-aware type checks for parsed JSON: every error names where the value is.

The config.json parsers (spec.py, spec_linux.py, spec_resources.py) read
their input only through these helpers, so each ``ConfigError`` carries the
JSON path of the offending value (``linux.resources.memory.limit``,
``mounts[2].options[1]``) and the checks are the same everywhere:

* types are strict: a bool is not an int, a float is not an int (Go's
  encoding/json refuses both for an integer field), a string is not a list;
* JSON ``null`` counts as absent, as it does for Go's encoding/json, which
  writes the configs of Docker, containerd and Podman (a nil slice in a field
  without ``omitempty`` comes out as ``null``);
* integer ranges are the Go types' of runtime-spec's specs-go (``INT64``,
  ``UINT32``...), or narrower where the kernel's are.

A missing required value is reported as ``MISSING`` (``process.cwd: <missing>
is required``). The module is data-only: it reads nothing but its arguments.
"""
from __future__ import annotations

import json
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

from ..errors import ConfigError

__all__ = [
    "MISSING", "INT32", "INT64", "UINT16", "UINT32", "UINT64", "join", "member", "item",
    "expect_object", "expect_list", "expect_str", "expect_bool", "expect_int", "expect_abs_path",
    "expect_choice", "expect_str_list", "expect_str_map", "JsonObject",
]

# (lowest, highest) of the integer types runtime-spec's Go structs use.
INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)
UINT16 = (0, (1 << 16) - 1)
UINT32 = (0, (1 << 32) - 1)
UINT64 = (0, (1 << 64) - 1)


class _Missing:
    """The value of a required field that is not there (its repr reads well in a message)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def join(path: str, key: str) -> str:
    """The path of ``key`` inside the object at ``path`` ("" is the document itself)."""
    return f"{path}.{key}" if path else key


def member(path: str, key: str) -> str:
    """The path of ``key`` of a map (annotations, sysctl): ``linux.sysctl["net.ipv4.ip_forward"]``."""
    return join(path, key) if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def item(path: str, index: int) -> str:
    """The path of element ``index`` of the list at ``path``."""
    return f"{path}[{index}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def expect_object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, value, f"must be an object, not {_type_name(value)}")
    return value


def expect_list(value: Any, path: str) -> List[Any]:
    if not isinstance(value, list):
        raise ConfigError(path, value, f"must be a list, not {_type_name(value)}")
    return value


def expect_str(value: Any, path: str, nonempty: bool = False) -> str:
    """A string without NUL (no kernel interface takes one); ``nonempty``: not ""."""
    if not isinstance(value, str):
        raise ConfigError(path, value, f"must be a string, not {_type_name(value)}")
    if "\0" in value:
        raise ConfigError(path, value, "must not contain a NUL character")
    if nonempty and not value:
        raise ConfigError(path, value, "must not be empty")
    return value


def expect_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, value, f"must be true or false, not {_type_name(value)}")
    return value


def expect_int(value: Any, path: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; bools and floats (even 1.0) are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, value, f"must be an integer, not {_type_name(value)}")
    if not lo <= value <= hi:
        raise ConfigError(path, value, f"is out of range ({lo} to {hi})")
    return value


def expect_abs_path(value: Any, path: str) -> str:
    text = expect_str(value, path, nonempty=True)
    if not text.startswith("/"):
        raise ConfigError(path, value, "must be an absolute path")
    return text


def expect_choice(value: Any, path: str, choices: Collection[str]) -> str:
    text = expect_str(value, path)
    if text not in choices:
        raise ConfigError(path, value, f"is not one of {', '.join(sorted(choices))}")
    return text


def expect_str_list(value: Any, path: str, nonempty: bool = False) -> Tuple[str, ...]:
    """A list of strings; ``nonempty`` applies to each string."""
    return tuple(expect_str(v, item(path, i), nonempty) for i, v in enumerate(expect_list(value, path)))


def expect_str_map(value: Any, path: str) -> Dict[str, str]:
    """An object of string values with non-empty keys (runtime-spec's mapStringString)."""
    out: Dict[str, str] = {}
    for key, v in expect_object(value, path).items():
        if not key:
            raise ConfigError(path, key, "has an empty key")
        out[key] = expect_str(v, member(path, key))
    return out


class JsonObject:
    """A JSON object together with its path: typed getters for its fields.

    Getters of optional fields return a default (or None) for an absent or
    ``null`` field; ``required_*`` ones raise ``ConfigError(path, MISSING,
    "is required")``. Keys nobody asks for are ignored, as runtime-spec
    says unknown properties must be.
    """

    def __init__(self, value: Any, path: str) -> None:
        self.value = expect_object(value, path)
        self.path = path

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def raw(self, key: str) -> Any:
        return self.value.get(key)

    def required(self, key: str, why: str = "") -> Any:
        value = self.value.get(key)
        if value is None:
            raise ConfigError(self.at(key), MISSING, "is required" + (f" ({why})" if why else ""))
        return value

    def reject(self, key: str, reason: str) -> None:
        """A known field pyexec cannot honour: an error when it is set."""
        if self.has(key):
            raise ConfigError(self.at(key), self.value[key], reason)

    def text(self, key: str, default: str = "", nonempty: bool = False) -> str:
        return expect_str(self.value[key], self.at(key), nonempty) if self.has(key) else default

    def opt_text(self, key: str) -> Optional[str]:
        """The string, or None when absent or empty (Go's omitempty cannot tell them apart)."""
        return self.text(key) or None

    def required_text(self, key: str, nonempty: bool = True) -> str:
        return expect_str(self.required(key), self.at(key), nonempty)

    def flag(self, key: str, default: bool = False) -> bool:
        return expect_bool(self.value[key], self.at(key)) if self.has(key) else default

    def required_flag(self, key: str) -> bool:
        return expect_bool(self.required(key), self.at(key))

    def opt_flag(self, key: str) -> Optional[bool]:
        return expect_bool(self.value[key], self.at(key)) if self.has(key) else None

    def number(self, key: str, bounds: Tuple[int, int]) -> Optional[int]:
        return expect_int(self.value[key], self.at(key), *bounds) if self.has(key) else None

    def required_number(self, key: str, bounds: Tuple[int, int]) -> int:
        return expect_int(self.required(key), self.at(key), *bounds)

    def choice(self, key: str, choices: Collection[str]) -> Optional[str]:
        return expect_choice(self.value[key], self.at(key), choices) if self.has(key) else None

    def texts(self, key: str, nonempty: bool = False) -> Tuple[str, ...]:
        return expect_str_list(self.value[key], self.at(key), nonempty) if self.has(key) else ()

    def mapping(self, key: str) -> Dict[str, str]:
        return expect_str_map(self.value[key], self.at(key)) if self.has(key) else {}

    def child(self, key: str) -> Optional["JsonObject"]:
        return JsonObject(self.value[key], self.at(key)) if self.has(key) else None

    def items(self, key: str) -> List[Tuple[Any, str]]:
        """The elements of the list at ``key`` with their paths (absent: none)."""
        if not self.has(key):
            return []
        path = self.at(key)
        return [(v, item(path, i)) for i, v in enumerate(expect_list(self.value[key], path))]

    def children(self, key: str) -> List["JsonObject"]:
        """The list of objects at ``key``, each with its path."""
        return [JsonObject(v, p) for v, p in self.items(key)]
