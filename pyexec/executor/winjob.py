"""The only Windows-specific code of pyexec: Job Objects and signal mapping.

A Job Object holds the task's process and everything it starts (children
inherit the job), so the task can be terminated as a whole, is killed when
the last handle of the job closes (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, i.e.
even when the caller crashes) and can have a memory limit for the whole job
(JOB_OBJECT_LIMIT_JOB_MEMORY, the closest match of a cgroup's memory limit).

Importing this module works everywhere; on a system without ``ctypes.windll``
every Job Object operation raises ``NotImplementedError``. Structures follow
the Win32 documentation of JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
JOBOBJECT_BASIC_LIMIT_INFORMATION, IO_COUNTERS and
JOBOBJECT_BASIC_PROCESS_ID_LIST.
"""
from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
from ctypes import wintypes
from typing import Any, List, Optional

from ..errors import ConfigError

__all__ = ["AVAILABLE", "JobObject", "send_signal"]

log = logging.getLogger(__name__)

AVAILABLE = hasattr(ctypes, "windll")

# winnt.h
JOB_OBJECT_LIMIT_PROCESS_MEMORY = 0x00000100
JOB_OBJECT_LIMIT_JOB_MEMORY = 0x00000200
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
# JOBOBJECTINFOCLASS
JobObjectBasicProcessIdList = 3
JobObjectExtendedLimitInformation = 9

ERROR_MORE_DATA = 234
_MAX_LISTED_PIDS = 4096  # a bigger job: the call fails with ERROR_MORE_DATA, the first ones are listed


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),   # LARGE_INTEGER
        ("PerJobUserTimeLimit", ctypes.c_int64),       # LARGE_INTEGER
        ("LimitFlags", wintypes.DWORD),
        ("MinimumWorkingSetSize", ctypes.c_size_t),     # SIZE_T
        ("MaximumWorkingSetSize", ctypes.c_size_t),     # SIZE_T
        ("ActiveProcessLimit", wintypes.DWORD),
        ("Affinity", ctypes.c_size_t),                  # ULONG_PTR
        ("PriorityClass", wintypes.DWORD),
        ("SchedulingClass", wintypes.DWORD),
    ]


class IO_COUNTERS(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),
        ("IoInfo", IO_COUNTERS),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


class JOBOBJECT_BASIC_PROCESS_ID_LIST(ctypes.Structure):
    _fields_ = [
        ("NumberOfAssignedProcesses", wintypes.DWORD),
        ("NumberOfProcessIdsInList", wintypes.DWORD),
        ("ProcessIdList", ctypes.c_size_t * _MAX_LISTED_PIDS),  # ULONG_PTR[]
    ]


_kernel32: Any = None


def _k32() -> Any:
    """kernel32 with argument and result types declared (handles are pointer sized)."""
    global _kernel32
    if not AVAILABLE:
        raise NotImplementedError("Windows Job Objects need ctypes.windll (Windows only)")
    if _kernel32 is None:
        k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        h, b, d = wintypes.HANDLE, wintypes.BOOL, wintypes.DWORD
        for name, res, args in (
            ("CreateJobObjectW", h, [ctypes.c_void_p, wintypes.LPCWSTR]),
            ("SetInformationJobObject", b, [h, ctypes.c_int, ctypes.c_void_p, d]),
            ("QueryInformationJobObject", b, [h, ctypes.c_int, ctypes.c_void_p, d, ctypes.POINTER(d)]),
            ("AssignProcessToJobObject", b, [h, h]),
            ("TerminateJobObject", b, [h, wintypes.UINT]),
            ("OpenProcess", h, [d, b, d]),
            ("CloseHandle", b, [h]),
        ):
            fn = getattr(k, name)
            fn.restype, fn.argtypes = res, args
        _kernel32 = k
    return _kernel32


def _check(ok: Any) -> Any:
    if not ok:
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    return ok


class JobObject:
    """An anonymous Job Object that kills its processes when closed."""

    def __init__(self, memory_limit: Optional[int] = None) -> None:
        k = _k32()
        self._handle = _check(k.CreateJobObjectW(None, None))
        self._memory_limit = memory_limit
        try:
            self._apply_limits()
        except BaseException:
            self.close()
            raise

    def _apply_limits(self) -> None:
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        flags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if self._memory_limit is not None:
            # The whole job's committed memory, like a cgroup's limit (not per process).
            flags |= JOB_OBJECT_LIMIT_JOB_MEMORY
            info.JobMemoryLimit = self._memory_limit
        info.BasicLimitInformation.LimitFlags = flags
        _check(_k32().SetInformationJobObject(self._handle, JobObjectExtendedLimitInformation,
                                              ctypes.byref(info), ctypes.sizeof(info)))

    def set_memory_limit(self, limit: Optional[int]) -> None:
        """Change the job's memory limit (None: no limit)."""
        self._memory_limit = limit
        self._apply_limits()

    def assign(self, pid: int) -> None:
        """Put process ``pid`` (and so its future children) into the job."""
        k = _k32()
        process = _check(k.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid))
        try:
            _check(k.AssignProcessToJobObject(self._handle, process))
        finally:
            k.CloseHandle(process)

    def pids(self) -> List[int]:
        """The ids of the processes in the job now (at most the first 4096)."""
        if self._handle is None:
            return []
        info = JOBOBJECT_BASIC_PROCESS_ID_LIST()
        if not _k32().QueryInformationJobObject(self._handle, JobObjectBasicProcessIdList,
                                                ctypes.byref(info), ctypes.sizeof(info), None):
            err = ctypes.get_last_error()  # type: ignore[attr-defined]
            if err != ERROR_MORE_DATA:
                raise ctypes.WinError(err)  # type: ignore[attr-defined]
        return [int(info.ProcessIdList[i]) for i in range(info.NumberOfProcessIdsInList)]

    def terminate(self, exit_code: int = 1) -> None:
        """End every process of the job; each exits with ``exit_code``."""
        if self._handle is not None:
            _check(_k32().TerminateJobObject(self._handle, exit_code))

    def close(self) -> None:
        """Close the job handle: whatever is still in the job is killed."""
        handle, self._handle = self._handle, None
        if handle is not None:
            _k32().CloseHandle(handle)


def send_signal(popen: subprocess.Popen, sig: int) -> None:
    """Windows' nearest equivalent of a POSIX signal to the task's process group.

    SIGINT and SIGBREAK become CTRL_BREAK_EVENT (CTRL_C_EVENT cannot be sent to
    a process group created with CREATE_NEW_PROCESS_GROUP); SIGTERM (and
    SIGKILL where a caller passes its number, 9) terminate the process, which
    then exits with code 1.
    """
    if sig in (signal.SIGINT, getattr(signal, "SIGBREAK", 21)):
        popen.send_signal(getattr(signal, "CTRL_BREAK_EVENT", 1))
    elif sig in (signal.SIGTERM, 9):
        popen.terminate()
    else:
        raise ConfigError("signal", sig, "cannot be sent on Windows (SIGINT, SIGBREAK, SIGTERM, SIGKILL)")
