"""``pyexec-oci``: the runc-compatible command, its error reporting and dispatch.

Clients read a runtime's failures two ways (../shared/oci-contract.md §5):
containerd takes the last ``level=error`` line of ``--log`` (with
``--log-format json``), Podman parses the whole file as one JSON object, and
kill/delete failures are classified from stderr's text. So a failing verb
appends exactly one ``{"level":"error","msg":…,"time":…}`` line to the log
(text format: ``time=… level=error msg=…``), prints the message on stderr,
and exits 1; a verb that succeeds prints nothing but what it reports.
``--debug`` adds debug lines to the log only, never to stderr or stdout
(those are the container's during create).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

from .. import __version__
from ..errors import PyexecError
from .args import Invocation, UsageError, parse
from .create import CreateOptions, create
from .create import run as run_container
from .exec import exec_verb
from .hooks import HookFailed
from .info import features, write_spec
from .live import events, update
from .state import DEFAULT_ROOT, NotFound, Root, rfc3339_now
from .verbs import RuntimeFailure, delete, kill, list_containers, pause, ps, resume, start, state

__all__ = ["main", "SPEC_VERSION"]

SPEC_VERSION = "1.1.0"
log = logging.getLogger("pyexec.oci")

Handler = Callable[[Root, Invocation], Optional[int]]


def _str(inv: Invocation, key: str, default: str = "") -> str:
    value = inv.flags.get(key, default)
    return value if isinstance(value, str) else default


def _create_options(inv: Invocation) -> CreateOptions:
    preserve = _str(inv, "preserve-fds", "0") or "0"
    if not preserve.isdigit():
        raise RuntimeFailure(f"invalid value {preserve!r} for --preserve-fds")
    return CreateOptions(bundle=_str(inv, "bundle") or ".", pid_file=_str(inv, "pid-file") or None,
                         console_socket=_str(inv, "console-socket") or None, preserve_fds=int(preserve),
                         systemd_cgroup=bool(inv.global_flags.get("systemd-cgroup")),
                         no_pivot=bool(inv.flags.get("no-pivot")))


def _create(root: Root, inv: Invocation) -> None:
    create(root, inv.args[0], _create_options(inv))


def _run(root: Root, inv: Invocation) -> int:
    return run_container(root, inv.args[0], _create_options(inv), detach=bool(inv.flags["detach"]),
                         keep=bool(inv.flags["keep"]))


def _verb_handlers() -> Dict[str, Handler]:
    return {
        "create": _create,
        "run": _run,
        "exec": exec_verb,
        "start": lambda root, inv: start(root, inv.args[0]),
        "state": lambda root, inv: state(root, inv.args[0]),
        "list": lambda root, inv: list_containers(root, _str(inv, "format", "table"), bool(inv.flags["quiet"])),
        "kill": lambda root, inv: kill(root, inv.args[0], inv.args[1] if len(inv.args) > 1 else None,
                                       bool(inv.flags["all"])),
        "delete": lambda root, inv: delete(root, inv.args[0], bool(inv.flags["force"])),
        "pause": lambda root, inv: pause(root, inv.args[0]),
        "resume": lambda root, inv: resume(root, inv.args[0]),
        "ps": lambda root, inv: ps(root, inv.args[0], _str(inv, "format", "table"), inv.args[1:]),
        "update": lambda root, inv: update(root, inv.args[0], inv.flags),
        "events": lambda root, inv: events(root, inv.args[0], bool(inv.flags["stats"]),
                                           _str(inv, "interval", "5s") or "5s"),
        "features": lambda root, inv: features(),
        "spec": lambda root, inv: write_spec(_str(inv, "bundle") or ".", bool(inv.flags["rootless"])),
        "checkpoint": _unsupported,
        "restore": _unsupported,
    }


def _unsupported(root: Root, inv: Invocation) -> None:
    raise RuntimeFailure(f"{inv.verb} is not supported by pyexec-oci (no CRIU integration)")


class _LogSink:
    """Where error (and, with --debug, debug) lines go: the --log file or stderr."""

    def __init__(self, path: Optional[str], fmt: str) -> None:
        self.path = path
        self.fmt = fmt if fmt in ("json", "text") else "text"

    def line(self, level: str, msg: str) -> None:
        now = rfc3339_now()
        if self.fmt == "json":
            text = json.dumps({"level": level, "msg": msg, "time": now}, separators=(",", ":")) + "\n"
        else:
            text = f"time={json.dumps(now)} level={level} msg={json.dumps(msg)}\n"
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


class _LogHandler(logging.Handler):
    """Library log records as lines of the runtime's log."""

    def __init__(self, sink: _LogSink) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.line(record.levelname.lower(), record.getMessage())


def _version() -> str:
    return f"pyexec-oci version {__version__}\ncommit: v{__version__}\nspec: {SPEC_VERSION}\n"


def _fail(sink: _LogSink, message: str) -> int:
    sink.line("error", message)
    sys.stderr.write(message + "\n")
    return 1


def run(argv: Sequence[str], extra: Optional[Dict[str, Handler]] = None) -> int:
    """Parse and run one command line; the exit status."""
    try:
        inv = parse(argv)
    except UsageError as exc:
        sys.stderr.write(f"pyexec-oci: {exc}\n")
        return 1
    g = inv.global_flags
    log_path = g.get("log")
    sink = _LogSink(log_path if isinstance(log_path, str) else None, str(g.get("log-format") or "text"))
    # Library warnings (and with --debug everything) go to the log, never to
    # stderr: during create that is the container's.
    library_log = logging.getLogger("pyexec")
    library_log.addHandler(_LogHandler(sink))
    library_log.setLevel(logging.DEBUG if g.get("debug") else logging.WARNING)
    library_log.propagate = False
    if g.get("version"):
        sys.stdout.write(_version())
        return 0
    if not inv.verb or g.get("help"):
        sys.stdout.write("usage: pyexec-oci [global flags] create|start|run|state|list|kill|delete|exec|pause|"
                         "resume|update|ps|events|features|spec [flags] [container id] ...\n")
        return 0
    handlers = _verb_handlers()
    handlers.update(extra or {})
    handler = handlers.get(inv.verb)
    if handler is None:
        return _fail(sink, f"{inv.verb} is not implemented yet")
    root = Root(str(g.get("root") or DEFAULT_ROOT))
    log.debug("pyexec-oci %s", " ".join(argv))
    try:
        status = handler(root, inv)
    except NotFound as exc:
        return _fail(sink, str(exc))
    except (RuntimeFailure, HookFailed, PyexecError, ValueError) as exc:
        return _fail(sink, str(exc))
    except OSError as exc:
        return _fail(sink, str(exc))
    return status or 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(sys.argv[1:] if argv is None else argv)
