"""Resource-usage records (``ResourceUsage`` and its parts) shared by every
executor and by the cgroup manager."""
from .pidtree import PidCollector
from .usage import CpuUsage, IoUsage, MemoryUsage, PidsUsage, ProcessUsage, ResourceUsage

__all__ = ["CpuUsage", "IoUsage", "MemoryUsage", "PidCollector", "PidsUsage", "ProcessUsage", "ResourceUsage"]
