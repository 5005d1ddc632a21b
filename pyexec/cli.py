"""The ``pyexec`` command: ``pyexec run [options] -- CMD ARGS...`` in the foreground.

It owns argument parsing, mapping library errors onto one-line messages
(``pyexec: error: --memory: '12XB' is not a size``, exit 125 like runc and
podman), passing the terminal's stdio through, forwarding signals to the task,
and the ``--stats`` summary. The exit status is the task's (128+N for a signal).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Union

from .config import DEFAULT_PATH, Bridge, ExecCommand, Isolation, Mount, Resources
from .errors import ConfigError, PyexecError
from .executor import new_executor
from .process import ExitResult

EXIT_PYEXEC_ERROR = 125
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)

# ConfigError fields → the option a person typed.
_OPTION_OF_FIELD = {
    "memory": "--memory", "pids": "--pids", "cpus": "--cpus", "hostname": "--hostname",
    "rootfs": "--rootfs", "mounts.source": "--mount", "mounts.target": "--mount", "user": "--user",
    "env": "--env", "cwd": "--workdir", "task_dir": "--task-dir", "name": "--name", "argv": "CMD",
    "network": "--net", "network.name": "--net", "network.subnet": "--net", "network.ip": "--net",
}


class CliError(Exception):
    """A usage error of the command line itself."""


class _Parser(argparse.ArgumentParser):
    """Usage errors become one line and exit 125, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyexec", description="Run tasks isolated and limited on Linux.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a task in a container, in the foreground",
                              usage="pyexec run [options] -- CMD [ARGS...]")
    run.add_argument("--executor", choices=("container", "universal", "portable"), default="container",
                     help="container (namespaces; root), universal (on the host; cgroup when possible) "
                          "or portable (a plain child process)")
    run.add_argument("--memory", help="memory limit, e.g. 256M")
    run.add_argument("--pids", type=_number_option(int, "an integer"), help="maximum number of processes")
    run.add_argument("--cpus", type=_number_option(float, "a number"), help="CPU bandwidth in cores, e.g. 0.5")
    run.add_argument("--hostname", help="host name inside the task (default: the task name)")
    run.add_argument("--rootfs", help="a directory to use as the root (default: a read-only mirror of the host)")
    run.add_argument("--mount", action="append", default=[], metavar="SRC:DST[:ro]", help="bind mount (repeatable)")
    run.add_argument("--user", help="user inside the task: name, uid or uid:gid")
    run.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable (repeatable)")
    run.add_argument("--workdir", help="working directory (default: / in a container, the task dir otherwise)")
    run.add_argument("--net", default="none", metavar="none|host|bridge[:NAME[:SUBNET[:IP]]]|netns:PATH",
                     help="network: none (own namespace, only lo; the default), host, bridge (a veth on bridge "
                          "NAME, default pyexec0 10.88.0.0/16) or netns:PATH / ns:PATH (join that namespace)")
    run.add_argument("--name", help="task name (default: the task dir's name)")
    run.add_argument("--task-dir", help="task directory (default: a temporary one, removed afterwards)")
    run.add_argument("--stats", action="store_true", help="print a one-line summary on stderr at the end")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    return parser


def _number_option(convert: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type that says which kind of number it wanted."""
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    return parse


def _parse_mount(spec: str) -> Mount:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ConfigError("mounts.source", spec, "is not SRC:DST[:ro|rw]")
    return Mount(source=os.path.abspath(parts[0]), target=parts[1],
                 readonly=len(parts) == 3 and parts[2] == "ro")


def _parse_env(items: Sequence[str]) -> Dict[str, str]:
    env = {"PATH": DEFAULT_PATH}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("env", item, "is not K=V")
        env[key] = value
    return env


def parse_network(spec: str) -> Union[str, Bridge]:
    """``--net``: none, host, bridge[:NAME[:SUBNET[:IP]]], netns:PATH or ns:PATH."""
    if spec == "bridge" or spec.startswith("bridge:"):
        parts = spec.split(":")[1:]
        if len(parts) > 3 or not all(parts):
            raise ConfigError("network", spec, "is not bridge[:NAME[:SUBNET[:IP]]]")
        names = ("name", "subnet", "ip")
        return Bridge(**dict(zip(names, parts)))
    return spec  # Isolation checks the rest


def build_command(args: argparse.Namespace, task_dir: str) -> ExecCommand:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise CliError("no command given (pyexec run [options] -- CMD [ARGS...])")
    isolation = Isolation(network=parse_network(args.net), rootfs=args.rootfs, hostname=args.hostname,
                          mounts=tuple(_parse_mount(m) for m in args.mount))
    # A foreground command: the task must not outlive pyexec run (kill -9 included).
    return ExecCommand(argv=cmd, task_dir=task_dir, name=args.name, env=_parse_env(args.env), kill_on_caller_exit=True,
                       cwd=args.workdir, user=args.user, stdio_fds=(0, 1, 2),
                       resources=Resources(memory=args.memory, pids=args.pids, cpus=args.cpus),
                       isolation=isolation)


def _format_bytes(value: Optional[int]) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if unit != "B" else f"{value}B"
        value /= 1024  # type: ignore[assignment]
    return str(value)


def _format_seconds(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}s"


def stats_line(result: ExitResult) -> str:
    usage = result.usage
    cpu = (f"cpu {_format_seconds(usage.cpu.usage_total_s)} (user {_format_seconds(usage.cpu.user_s)} "
           f"sys {_format_seconds(usage.cpu.system_s)})") if usage else "cpu n/a"
    peak_memory = usage.memory.max_usage if usage else None
    ended = f"signal {result.signal}" if result.signal else f"exit {result.exit_code}"
    return (f"pyexec: stats: wall {result.finished_at - result.started_at:.3f}s {cpu} "
            f"peak-memory {_format_bytes(peak_memory)} oom {'yes' if result.oom_killed else 'no'} {ended}")


def run(args: argparse.Namespace) -> int:
    made_dir = None
    task_dir = args.task_dir and os.path.abspath(args.task_dir)
    if task_dir is None:
        made_dir = task_dir = tempfile.mkdtemp(prefix="pyexec-run-")
    try:
        cmd = build_command(args, task_dir)
        if args.name is None:
            cmd = dataclasses.replace(cmd, name=f"run-{os.getpid()}")
        executor = new_executor(args.executor)
        # Handlers go in before the launch: a signal that arrives while the
        # task starts is held and delivered once it runs, never lost.
        pending: List[int] = []

        def forward(num: int, frame: object) -> None:
            if executor.pid is None:
                pending.append(num)
            else:
                executor.signal(num)

        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
        try:
            executor.launch(cmd)
            for num in pending:
                executor.signal(num)
            result = executor.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            executor.shutdown(grace=0)
        if args.stats:
            print(stats_line(result), file=sys.stderr)
        return result.exit_code
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)


def _describe(error: BaseException) -> str:
    if isinstance(error, ConfigError):
        option = _OPTION_OF_FIELD.get(error.field, error.field)
        return f"{option}: {error.value!r} {error.reason}"
    return str(error)


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except CliError as error:
        print(f"pyexec: error: {error}", file=sys.stderr)
        return EXIT_PYEXEC_ERROR
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="pyexec: %(levelname)s: %(message)s")
    try:
        if args.command == "run":
            return run(args)
    except (PyexecError, CliError, OSError) as error:
        print(f"pyexec: error: {_describe(error)}", file=sys.stderr)
        return EXIT_PYEXEC_ERROR
    except KeyboardInterrupt:
        return 130
    print(f"pyexec: error: unknown command {args.command}", file=sys.stderr)
    return EXIT_PYEXEC_ERROR


if __name__ == "__main__":
    sys.exit(main())
