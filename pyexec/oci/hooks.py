"""OCI lifecycle hooks: each run with the container's state on its stdin.

A hook is ``{"path", "args", "env", "timeout"}`` (runtime-spec
config.md#posix-platform-hooks). It runs in the runtime's namespaces with
exactly ``env`` (none: an empty environment), ``args`` as its argv (the
first is argv[0], not looked up), the spec's state JSON on stdin, and is
killed after ``timeout`` seconds. Its output is captured, never passed on:
the runtime's stdout and stderr are the container's, and nothing the runtime
runs may reach them; a failure's message carries the hook's stderr. A failing prestart, createRuntime,
createContainer or startContainer hook fails the operation; a failing
poststart or poststop hook is logged and the operation goes on (the spec's
rule).
"""
from __future__ import annotations

import json
import logging
import subprocess
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .state import ContainerRecord

__all__ = ["HookFailed", "run_hooks", "run_hook_list"]

log = logging.getLogger(__name__)


class HookFailed(Exception):
    """A hook exited non-zero, was killed, timed out or could not be started."""


def run_hook_list(hooks: Sequence[Mapping[str, Any]], phase: str, state: Dict[str, Any],
                  fatal: bool = True) -> None:
    """Run ``hooks`` of ``phase`` in order with ``state`` on stdin."""
    payload = json.dumps(state).encode()
    for index, hook in enumerate(hooks):
        where = f"hooks.{phase}[{index}]"
        try:
            _run_one(hook, payload, where)
        except HookFailed as exc:
            if fatal:
                raise
            log.warning("%s", exc)


def _run_one(hook: Mapping[str, Any], payload: bytes, where: str) -> None:
    path = str(hook["path"])
    args: List[str] = list(hook.get("args") or [path])
    env: Optional[Dict[str, str]] = dict(entry.split("=", 1) for entry in hook.get("env") or [] if "=" in entry)
    timeout = hook.get("timeout")
    try:
        result = subprocess.run(args, executable=path, input=payload, env=env, timeout=timeout, check=False,
                                close_fds=True, capture_output=True)
    except subprocess.TimeoutExpired:
        raise HookFailed(f"{where} ({path}) timed out after {timeout}s") from None
    except OSError as exc:
        raise HookFailed(f"{where} ({path}) could not be started: {exc.strerror}") from None
    if result.returncode != 0:
        how = (f"was killed by signal {-result.returncode}" if result.returncode < 0
               else f"exited with status {result.returncode}")
        said = result.stderr.decode(errors="replace").strip()
        raise HookFailed(f"{where} ({path}) {how}" + (f": {said[-500:]}" if said else ""))


def run_hooks(record: ContainerRecord, phase: str, status: str, fatal: bool = True) -> None:
    """Run the recorded hooks of ``phase`` with the container's state as ``status``."""
    hooks = record.hooks.get(phase) or []
    if hooks:
        run_hook_list(hooks, phase, record.spec_state(status), fatal=fatal)
