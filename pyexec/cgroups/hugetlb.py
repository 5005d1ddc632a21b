"""The hugetlb controller: a limit per huge page size (Resources.hugetlb).

v1: hugetlb.<size>.limit_in_bytes (-1 for unlimited), in the hugetlb
hierarchy, which a v1 task joins only when the field is set. v2:
hugetlb.<size>.max ("max" for unlimited). The sizes are the kernel's own
spelling ("2MB", "1GB"); one the kernel lacks (no such file) is a
ConfigError naming the size.
"""
from __future__ import annotations

import os

from ..config import Resources
from .fscommon import require_file, write_value

__all__ = ["check_hugetlb_v1", "set_hugetlb_v1", "check_hugetlb_v2", "set_hugetlb_v2"]

_HINT = "no huge pages of that size on this host: see /sys/kernel/mm/hugepages"


def _check(path: str, res: Resources, suffix: str) -> None:
    for size, limit in (res.hugetlb or {}).items():
        require_file(path, f"hugetlb.{size}.{suffix}", f"hugetlb[{size}]", limit, "hugetlb", _HINT)


def check_hugetlb_v1(path: str, res: Resources) -> None:
    """Raise ConfigError for a page size whose v1 limit file is missing."""
    _check(path, res, "limit_in_bytes")


def set_hugetlb_v1(path: str, res: Resources) -> None:
    """Write hugetlb.<size>.limit_in_bytes for every size in ``res.hugetlb``."""
    for size, limit in (res.hugetlb or {}).items():
        write_value(os.path.join(path, f"hugetlb.{size}.limit_in_bytes"), limit, f"hugetlb[{size}]", limit)


def check_hugetlb_v2(path: str, res: Resources) -> None:
    """Raise ConfigError for a page size whose v2 limit file is missing."""
    _check(path, res, "max")


def set_hugetlb_v2(path: str, res: Resources) -> None:
    """Write hugetlb.<size>.max for every size in ``res.hugetlb``."""
    for size, limit in (res.hugetlb or {}).items():
        text = "max" if limit == -1 else str(limit)
        write_value(os.path.join(path, f"hugetlb.{size}.max"), text, f"hugetlb[{size}]", limit)
