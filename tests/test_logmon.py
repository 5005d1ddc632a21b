"""Rotated task logs (csrc/logmon.c through pyexec.logmon, and libexec/pyexec-logmon).

Real files, fifos, pipes and a tiny tmpfs; no mocks. The expected file layout
of the big rotation test comes from ``model()``, an independent Python
statement of the rules written in csrc/logmon.h.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from pyexec import _shim
from pyexec.config import LogConfig
from pyexec.logmon import LogMon, RotatingLog

ROOT = Path(__file__).resolve().parent.parent
LOGMON_EXE = ROOT / "libexec" / "pyexec-logmon"
K = 1024


def slack(max_size: int) -> int:
    return min(max_size // 16, 64 * K)


def files_of(directory: Path, base: str) -> Dict[int, bytes]:
    """{N: content} of the files named exactly <base>.<N>."""
    out = {}
    for path in directory.iterdir():
        match = re.fullmatch(re.escape(base) + r"\.(0|[1-9][0-9]*)", path.name)
        if match:
            out[int(match.group(1))] = path.read_bytes()
    return out


def joined(directory: Path, base: str) -> bytes:
    found = files_of(directory, base)
    return b"".join(found[n] for n in sorted(found))


def model(chunks: List[bytes], max_size: int, slack_: int) -> List[bytes]:
    """The rotation rules of csrc/logmon.h: the content of every file ever written."""
    files = [b""]
    for buf in chunks:
        while buf:
            cur = files[-1]
            size = len(cur)
            if size >= max_size:
                end = -1
                if cur[-1:] != b"\n" and size < max_size + slack_:
                    end = buf.find(b"\n", 0, min(len(buf), max_size + slack_ - size))
                if end < 0:
                    files.append(b"")
                    continue
                n = end + 1
            else:
                room = max_size - size
                if len(buf) <= room:
                    n = len(buf)
                elif buf.rfind(b"\n", 0, room) >= 0:
                    n = buf.rfind(b"\n", 0, room) + 1
                    files[-1] = cur + buf[:n]
                    buf = buf[n:]
                    files.append(b"")
                    continue
                elif buf.find(b"\n", room, min(len(buf), room + slack_)) >= 0:
                    n = buf.find(b"\n", room, min(len(buf), room + slack_)) + 1
                elif size == 0 or b"\n" not in buf:
                    n = room
                else:
                    files.append(b"")
                    continue
            files[-1] = cur + buf[:n]
            buf = buf[n:]
    return files


def lines_and_chunks(total: int, seed: int) -> "tuple[bytes, List[bytes]]":
    """total bytes of lines of 60..140 bytes, cut in chunks of 1..150 bytes and
    sometimes up to 70000 (rarely at a line boundary)."""
    rng = random.Random(seed)
    lines: List[bytes] = []
    size = 0
    while size < total:
        line = b"%06d " % len(lines) + bytes(rng.choice(b"abcdefgh") for _ in range(rng.randint(52, 132))) + b"\n"
        lines.append(line)
        size += len(line)
    data = b"".join(lines)[:total]
    chunks, pos = [], 0
    while pos < len(data):
        n = rng.randint(1, 70000) if rng.random() < 0.05 else rng.randint(1, 150)
        chunks.append(data[pos:pos + n])
        pos += n
    return data, chunks


# The seeds are chosen so that one file ends past the limit, at a newline within the slack.
@pytest.mark.parametrize("total, seed, kept", [(1000 * K, 5, [1, 2, 3]), (1024 * K, 1, [2, 3, 4])])
def test_rotation_keeps_the_newest_files_and_the_exact_tail(tmp_path: Path, total: int, seed: int,
                                                            kept: List[int]) -> None:
    data, chunks = lines_and_chunks(total, seed)
    max_size = 256 * K
    with RotatingLog(tmp_path, "web.stdout", LogConfig(max_files=3, max_file_size="256K")) as log:
        for chunk in chunks:
            assert log.write(chunk) == 0
        assert log.index == kept[-1]

    expected = model(chunks, max_size, slack(max_size))
    assert b"".join(expected) == data
    assert any(len(content) > max_size for content in expected)
    assert list(range(len(expected) - 3, len(expected))) == kept
    found = files_of(tmp_path, "web.stdout")
    assert sorted(found) == kept
    assert sorted(os.listdir(tmp_path)) == ["web.stdout.%d" % n for n in kept]
    assert [found[n] for n in kept] == expected[-3:]
    for n in kept:
        assert len(found[n]) <= max_size + slack(max_size)
        assert n == kept[-1] or found[n].endswith(b"\n")
    tail = b"".join(found[n] for n in kept)
    assert data.endswith(tail) and len(tail) > 2 * max_size


def test_the_c_code_follows_the_model_on_random_input(tmp_path: Path) -> None:
    """Differential check: random line lengths, newline densities, chunkings, sizes."""
    for case in range(150):
        rng = random.Random(case)
        max_size = rng.choice([1024, 1025, 1500, 4096])
        longest = rng.choice([10, 100, 2000, 10000])
        data = bytearray()
        target = rng.randint(0, 30000)
        while len(data) < target:
            data += b"a" * rng.randint(0, longest) + (b"\n" if rng.random() < 0.9 else b"")
        chunks, pos = [], 0
        while pos < len(data):
            n = rng.randint(1, rng.choice([10, 300, 5000, 20000]))
            chunks.append(bytes(data[pos:pos + n]))
            pos += n
        base = "case%d" % case
        with RotatingLog(tmp_path, base, LogConfig(max_files=1000, max_file_size=max_size)) as log:
            for chunk in chunks:
                log.write(chunk)
        found = files_of(tmp_path, base)
        assert [found[n] for n in sorted(found)] == model(chunks, max_size, slack(max_size)), case


def test_a_chunk_without_newline_is_split_hard(tmp_path: Path) -> None:
    with RotatingLog(tmp_path, "a", LogConfig(max_files=10, max_file_size=1024)) as log:
        log.write(b"x" * 3000)
    assert [len(c) for _, c in sorted(files_of(tmp_path, "a").items())] == [1024, 1024, 952]
    # an empty file and a newline beyond the slack: hard split too
    with RotatingLog(tmp_path, "b", LogConfig(max_files=10, max_file_size=1024)) as log:
        log.write(b"y" * 2000 + b"\n")
    assert files_of(tmp_path, "b") == {0: b"y" * 1024, 1: b"y" * 976 + b"\n"}


def test_the_line_crossing_the_limit_ends_within_the_slack(tmp_path: Path) -> None:
    config = LogConfig(max_files=10, max_file_size=1024)  # slack 64
    with RotatingLog(tmp_path, "near", config) as log:
        log.write(b"x" * 1000)
        log.write(b"y" * 30 + b"\nzz")  # newline 7 bytes past the limit
    assert files_of(tmp_path, "near") == {0: b"x" * 1000 + b"y" * 30 + b"\n", 1: b"zz"}
    with RotatingLog(tmp_path, "far", config) as log:
        log.write(b"x" * 1000)
        log.write(b"y" * 100 + b"\n")  # beyond the slack: the chunk starts the next file
    assert files_of(tmp_path, "far") == {0: b"x" * 1000, 1: b"y" * 100 + b"\n"}
    with RotatingLog(tmp_path, "exact", config) as log:
        log.write(b"x" * 1024)  # reaches the limit mid-line ...
        log.write(b"y" * 10 + b"\nz")  # ... so the line may still end in this file
        log.write(b"a" * 1022 + b"\n")
        log.write(b"b\n")  # .1 is full and ends with a newline: rotate
    assert files_of(tmp_path, "exact") == {0: b"x" * 1024 + b"y" * 10 + b"\n",
                                           1: b"z" + b"a" * 1022 + b"\n", 2: b"b\n"}


def test_restart_appends_to_the_highest_index(tmp_path: Path) -> None:
    config = LogConfig(max_files=10, max_file_size=1024)
    with RotatingLog(tmp_path, "web.stdout", config) as log:
        for i in range(30):
            log.write(b"line %03d %s\n" % (i, b"." * 80))
        index, size = log.index, log.size
    assert index == 2
    with RotatingLog(tmp_path, "web.stdout", config) as log:
        assert (log.index, log.size) == (index, size)
        log.write(b"after restart\n")
    found = files_of(tmp_path, "web.stdout")
    assert sorted(found) == [0, 1, 2] and found[2].endswith(b"line 029 " + b"." * 80 + b"\nafter restart\n")
    # a file left mid-line at the limit may still get the end of its line after a restart
    with RotatingLog(tmp_path, "mid", config) as log:
        log.write(b"m" * 1024)
    with RotatingLog(tmp_path, "mid", config) as log:
        log.write(b"end\nnext\n")
    assert files_of(tmp_path, "mid") == {0: b"m" * 1024 + b"end\n", 1: b"next\n"}


def test_reopen_with_fewer_files_purges_the_oldest(tmp_path: Path) -> None:
    with RotatingLog(tmp_path, "web.stderr", LogConfig(max_files=5, max_file_size=1024)) as log:
        log.write(b"z" * 5 * 1024)
    assert sorted(files_of(tmp_path, "web.stderr")) == [0, 1, 2, 3, 4]
    with RotatingLog(tmp_path, "web.stderr", LogConfig(max_files=2, max_file_size=1024)) as log:
        assert log.index == 4
    assert sorted(files_of(tmp_path, "web.stderr")) == [3, 4]


def test_foreign_names_are_never_deleted(tmp_path: Path) -> None:
    foreign = ["web.stdout.x", "web.stdout.1.bak", "web.stdout.01", "web.stdout.", "web.stdout.-1",
               "web.stdout.1x", "other.stdout.0", "web.stderr.0", "web.stdout", "web.std.0"]
    for name in foreign:
        (tmp_path / name).write_bytes(b"mine")
    with RotatingLog(tmp_path, "web.stdout", LogConfig(max_files=1, max_file_size=1024)) as log:
        log.write(b"q" * 10 * 1024)
    assert sorted(files_of(tmp_path, "web.stdout")) == [9]
    assert sorted(os.listdir(tmp_path)) == sorted(foreign + ["web.stdout.9"])
    assert all((tmp_path / name).read_bytes() == b"mine" for name in foreign)


def test_planted_names_are_replaced_never_followed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    precious = tmp_path / "precious"
    precious.write_bytes(b"keep")
    os.symlink(precious, logs / "web.stdout.4")  # at open: the highest index is a symlink
    config = LogConfig(max_files=10, max_file_size=1024)
    with RotatingLog(logs, "web.stdout", config) as log:
        assert log.index == 4
        os.symlink(precious, logs / "web.stdout.5")  # the next file of a rotation
        os.mkfifo(logs / "web.stdout.6")  # a fifo without reader
        os.link(precious, logs / "web.stdout.7")  # a hard link
        log.write(b"w" * 4 * 1024)
        assert log.index == 7 and log.dropped == 0
    assert precious.read_bytes() == b"keep" and os.stat(precious).st_nlink == 1
    found = files_of(logs, "web.stdout")
    assert found == {n: b"w" * 1024 for n in (4, 5, 6, 7)}
    assert all((logs / f"web.stdout.{n}").is_file() and not (logs / f"web.stdout.{n}").is_symlink()
               for n in (4, 5, 6, 7))


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        RotatingLog(tmp_path, "a/b")
    assert info.value.errno == errno.EINVAL
    log = _shim.ffi.new("struct px_log *")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _shim.lib.px_log_open(log, fd, b"small", 1023, 1) == -errno.EINVAL
        assert _shim.lib.px_log_open(log, fd, b"none", 1024, 0) == -errno.EINVAL
        assert _shim.lib.px_log_open(log, fd, b"", 1024, 1) == -errno.EINVAL
        _shim.lib.px_log_close(log)
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        RotatingLog(tmp_path / "missing", "a")


@pytest.mark.needs_root(reason="mounting the small tmpfs needs root")
def test_a_full_disk_drops_counts_and_marks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        filler = small / "filler"
        filler.write_bytes(b"f" * 32 * K)
        caplog.set_level(logging.WARNING, logger="pyexec.logmon")
        with RotatingLog(small, "web.stdout", LogConfig(max_files=3, max_file_size="1M")) as log:
            lost = [log.write(b"%05d %s\n" % (i, b"d" * 1000)) for i in range(60)]
            assert log.dropped > 0 and log.dropped == sum(lost)
            assert log.last_errno == errno.ENOSPC
            assert [r.message for r in caplog.records].count(
                "web.stdout.N in %s: No space left on device; dropping output until writes succeed again"
                % small) == 1
            filler.unlink()
            assert log.write(b"hello\n") == 0
            dropped = log.dropped
        content = (small / "web.stdout.0").read_bytes()
        assert content.endswith(b"[pyexec-logmon: %d bytes dropped: no space left on device]\nhello\n" % dropped)
        assert content.startswith(b"00000 ") and content.count(b"bytes dropped") == 1
    finally:
        subprocess.run(["umount", str(small)], check=True)


WRITER = """
import sys
out, err, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(out, "wb") as o, open(err, "wb") as e:
    for i in range(first, last):
        o.write(b"out %06d %s\\n" % (i, b"o" * 60))
        e.write(b"err %06d\\n" % i)
"""


def test_logmon_survives_writers_that_come_and_go(tmp_path: Path) -> None:
    out, err, logs = tmp_path / "out", tmp_path / "err", tmp_path / "logs"
    os.mkfifo(out)
    os.mkfifo(err)
    logs.mkdir()
    mon = LogMon(out, err, logs, "web", LogConfig(max_files=100, max_file_size="64K")).start()
    try:
        # the first writer pushes more than a pipe holds, then exits (EOF for a plain reader)
        subprocess.run([sys.executable, "-c", WRITER, str(out), str(err), "0", "3000"], check=True, timeout=10)
        time.sleep(0.05)
        assert mon.running
        subprocess.run([sys.executable, "-c", WRITER, str(out), str(err), "3000", "4000"], check=True, timeout=10)
    finally:
        mon.stop(drain=True)
    assert not mon.running
    assert joined(logs, "web.stdout") == b"".join(b"out %06d %s\n" % (i, b"o" * 60) for i in range(4000))
    assert joined(logs, "web.stderr") == b"".join(b"err %06d\n" % i for i in range(4000))
    assert len(files_of(logs, "web.stdout")) > 1


def test_logmon_from_pipe_fds_ends_at_eof(tmp_path: Path) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    r, w = os.pipe()
    mon = LogMon.from_fds(r, None, tmp_path, "job", LogConfig(max_file_size="1K"))
    with mon:
        os.write(w, b"one\ntwo\n" * 300)
        os.close(w)
        deadline = time.monotonic() + 2
        while mon.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not mon.running
    assert joined(tmp_path, "job.stdout") == b"one\ntwo\n" * 300
    assert not files_of(tmp_path, "job.stderr")
    assert len(os.listdir("/proc/self/fd")) == fds_before
    mon.stop()  # a second stop does nothing


def test_logmon_stop_without_start_closes_everything(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "out")
    fds_before = len(os.listdir("/proc/self/fd"))
    mon = LogMon(tmp_path / "out", None, tmp_path, "idle")
    mon.stop(drain=False)
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert files_of(tmp_path, "idle.stdout") == {0: b""}
    mon = LogMon(tmp_path / "out", None, tmp_path, "idle")
    fd = os.open(tmp_path / "out", os.O_WRONLY)  # the LogMon is the reader
    os.write(fd, b"written before stop\n")
    os.close(fd)
    mon.stop()  # never started: drains in the caller's thread
    assert files_of(tmp_path, "idle.stdout") == {0: b"written before stop\n"}
    with pytest.raises(FileNotFoundError):
        LogMon(tmp_path / "out", tmp_path / "missing", tmp_path, "idle")
    with pytest.raises(OSError):
        LogMon(tmp_path / "idle.stdout.0", None, tmp_path, "idle")  # not a fifo
    assert len(os.listdir("/proc/self/fd")) == fds_before


def _open_when_read(path: Path, deadline: float) -> int:
    """Opens a fifo for writing once its reader is there (ENXIO before)."""
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


def test_pyexec_logmon_executable_drains_on_sigterm(tmp_path: Path) -> None:
    out, err, logs = tmp_path / "out", tmp_path / "err", tmp_path / "logs"
    os.mkfifo(out)
    os.mkfifo(err)
    logs.mkdir()
    proc = subprocess.Popen([sys.executable, str(LOGMON_EXE), "--stdout-fifo", str(out), "--stderr-fifo", str(err),
                             "--dir", str(logs), "--name", "svc", "--max-files", "4", "--max-file-size", "8K"],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        fds = [_open_when_read(out, deadline), _open_when_read(err, deadline)]
        for i in range(500):
            os.write(fds[0], b"stdout line %04d\n" % i)
            os.write(fds[1], b"stderr line %04d\n" % i)
        for fd in fds:
            os.close(fd)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stderr == b""
    assert sorted(files_of(logs, "svc.stdout")) == [0, 1]  # 500 * 17 bytes > 8K
    assert joined(logs, "svc.stdout") == b"".join(b"stdout line %04d\n" % i for i in range(500))
    assert joined(logs, "svc.stderr") == b"".join(b"stderr line %04d\n" % i for i in range(500))


def test_pyexec_logmon_executable_errors_in_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "out")
    for extra in (["--dir", str(tmp_path / "missing")], ["--dir", str(tmp_path), "--max-file-size", "12"],
                  ["--bogus"]):
        proc = subprocess.run([sys.executable, str(LOGMON_EXE), "--stdout-fifo", str(tmp_path / "out"),
                               "--name", "x"] + (extra if "--dir" in extra else extra + ["--dir", str(tmp_path)]),
                              capture_output=True, timeout=10)
        assert proc.returncode == 2
        assert proc.stderr.startswith(b"pyexec-logmon: ") and proc.stderr.count(b"\n") == 1, proc.stderr
