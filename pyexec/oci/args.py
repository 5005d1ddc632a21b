"""runc's command-line grammar: global flags, a verb, the verb's flags and operands.

Clients (conmon, containerd's shim, Docker, the runtime-tools suite) call an
OCI runtime the way Go's ``flag`` package and urfave/cli parse: a flag is
``-name`` or ``--name``, its value ``--name=value`` or ``--name value``; a
boolean takes no separate value (``--detach``, ``--detach=false``); short
aliases (``-d``); global flags only before the verb; a verb's flags may
come before or after its operands, except for ``exec``, whose command
starts at the first operand after the container id; ``--`` ends the flags.

This module owns that grammar and the table of flags (``GLOBAL_FLAGS``,
``VERBS``); what the verbs do is elsewhere. ``parse`` returns an
``Invocation`` or raises ``UsageError`` with runc-like text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["Flag", "Verb", "Invocation", "UsageError", "GLOBAL_FLAGS", "VERBS", "parse"]

Value = Union[bool, str, List[str]]


class UsageError(Exception):
    """The command line does not follow the grammar (exit status 1, like runc)."""


@dataclass(frozen=True)
class Flag:
    """One flag: its names (the first is the key in ``Invocation.flags``),
    ``kind`` "bool", "str" or "list" (repeatable), and a default."""

    names: Tuple[str, ...]
    kind: str = "str"
    default: Optional[str] = None

    @property
    def key(self) -> str:
        return self.names[0]


@dataclass(frozen=True)
class Verb:
    """A verb: its flags, how many operands it takes (``min_args``..``max_args``,
    None: any number) and whether the operands after the first are a command
    (``exec``: flags end at the container id)."""

    flags: Tuple[Flag, ...] = ()
    min_args: int = 1
    max_args: Optional[int] = 1
    command_after_id: bool = False


@dataclass
class Invocation:
    """A parsed command line."""

    global_flags: Dict[str, Value]
    verb: str
    flags: Dict[str, Value]
    args: List[str] = field(default_factory=list)


def _flags(*specs: Union[str, Tuple[str, str]]) -> Tuple[Flag, ...]:
    """Flags from "name|alias" (a string flag) or ("name|alias", kind)."""
    out = []
    for spec in specs:
        names, kind = (spec, "str") if isinstance(spec, str) else spec
        out.append(Flag(tuple(names.split("|")), kind))
    return tuple(out)


GLOBAL_FLAGS = _flags("root", "log", "log-format", "criu", "rootless", ("systemd-cgroup", "bool"),
                      ("debug", "bool"), ("help|h", "bool"), ("version|v", "bool"))

_CREATE = ("bundle|b", "console-socket", "pid-file", ("no-pivot", "bool"), ("no-new-keyring", "bool"),
           "preserve-fds")
_UPDATE = ("resources|r", "blkio-weight", "cpu-period", "cpu-quota", "cpu-share", "cpu-rt-period",
           "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems", "memory", "memory-reservation", "memory-swap",
           "pids-limit", "l3-cache-schema", "mem-bw-schema")

VERBS: Mapping[str, Verb] = {
    "create": Verb(_flags(*_CREATE)),
    "run": Verb(_flags(*_CREATE, ("detach|d", "bool"), ("keep", "bool"), ("no-subreaper", "bool"))),
    "start": Verb(),
    "state": Verb(),
    "list": Verb(_flags("format|f", ("quiet|q", "bool")), min_args=0, max_args=0),
    "kill": Verb(_flags(("all|a", "bool")), max_args=2),
    "delete": Verb(_flags(("force|f", "bool"))),
    "exec": Verb(_flags("console-socket", "cwd", ("env|e", "list"), ("tty|t", "bool"), "user|u",
                        ("additional-gids|g", "list"), "process|p", ("detach|d", "bool"), "pid-file",
                        "process-label", "apparmor", ("no-new-privs", "bool"), ("cap|c", "list"),
                        "preserve-fds", "cgroup", ("ignore-paused", "bool")),
                 max_args=None, command_after_id=True),
    "pause": Verb(),
    "resume": Verb(),
    "update": Verb(_flags(*_UPDATE)),
    "ps": Verb(_flags("format|f"), max_args=None, command_after_id=True),
    "events": Verb(_flags(("stats", "bool"), "interval")),
    "features": Verb(min_args=0, max_args=0),
    "spec": Verb(_flags("bundle|b", ("rootless", "bool")), min_args=0, max_args=0),
    "checkpoint": Verb(_flags("image-path", "work-path", "parent-path", ("leave-running", "bool"),
                              ("tcp-established", "bool"), ("file-locks", "bool"), ("pre-dump", "bool")),
                       max_args=None),
    "restore": Verb(_flags(*_CREATE, "image-path", "work-path", ("detach|d", "bool"),
                           ("no-subreaper", "bool")), max_args=None),
}

_TRUE = ("true", "1", "t", "T", "TRUE", "True")
_FALSE = ("false", "0", "f", "F", "FALSE", "False")


def _index(flags: Sequence[Flag]) -> Dict[str, Flag]:
    return {name: flag for flag in flags for name in flag.names}


def _defaults(flags: Sequence[Flag]) -> Dict[str, Value]:
    out: Dict[str, Value] = {}
    for flag in flags:
        if flag.kind == "bool":
            out[flag.key] = False
        elif flag.kind == "list":
            out[flag.key] = []
        elif flag.default is not None:
            out[flag.key] = flag.default
    return out


def _take_flag(argv: Sequence[str], i: int, known: Mapping[str, Flag], values: Dict[str, Value],
               where: str) -> int:
    """Parse the flag at ``argv[i]`` into ``values``; the index after it."""
    text = argv[i].lstrip("-")
    name, has_value, inline = text.partition("=")
    flag = known.get(name)
    if flag is None:
        raise UsageError(f"flag provided but not defined: -{name}" + (f" ({where})" if where else ""))
    if flag.kind == "bool":
        if not has_value:
            values[flag.key] = True
        elif inline in _TRUE:
            values[flag.key] = True
        elif inline in _FALSE:
            values[flag.key] = False
        else:
            raise UsageError(f"invalid boolean value {inline!r} for -{name}")
        return i + 1
    if has_value:
        value, nxt = inline, i + 1
    elif i + 1 < len(argv):
        value, nxt = argv[i + 1], i + 2
    else:
        raise UsageError(f"flag needs an argument: -{name}")
    if flag.kind == "list":
        current = values.setdefault(flag.key, [])
        assert isinstance(current, list)
        current.append(value)
    else:
        values[flag.key] = value
    return nxt


def _is_flag(arg: str) -> bool:
    return len(arg) > 1 and arg.startswith("-") and arg != "--"


def parse(argv: Sequence[str]) -> Invocation:
    """Parse ``argv`` (without the program name)."""
    known_global = _index(GLOBAL_FLAGS)
    global_values = _defaults(GLOBAL_FLAGS)
    i = 0
    while i < len(argv) and _is_flag(argv[i]):
        i = _take_flag(argv, i, known_global, global_values, "")
    if i >= len(argv):
        return Invocation(global_values, "", {}, [])
    verb_name = argv[i]
    verb = VERBS.get(verb_name)
    if verb is None:
        raise UsageError(f"No help topic for '{verb_name}'")
    known = _index(verb.flags)
    values = _defaults(verb.flags)
    args: List[str] = []
    i += 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            args.extend(argv[i + 1:])
            break
        if verb.command_after_id and args:
            args.extend(argv[i:])  # the command and its own flags
            break
        if _is_flag(arg):
            i = _take_flag(argv, i, known, values, verb_name)
            continue
        args.append(arg)
        i += 1
    if len(args) < verb.min_args:
        what = "container id" if verb.min_args == 1 else f"{verb.min_args} arguments"
        raise UsageError(f"{verb_name}: requires a {what}" if verb.min_args == 1
                         else f"{verb_name}: requires {what}")
    if verb.max_args is not None and len(args) > verb.max_args:
        raise UsageError(f"{verb_name}: takes at most {verb.max_args} argument(s), got {len(args)}: "
                         f"{' '.join(args)}")
    return Invocation(global_values, verb_name, values, args)
