"""What the option words of a config.json mount mean: mount(2) flags, propagation changes, file-system data.

runtime-spec config.md's Linux mount options, read as mount(8) reads them:
words are applied in order (``ro`` then ``rw`` leaves the mount writable),
``bind``/``rbind`` make a bind mount, the propagation words (``shared``,
``rslave``...) become changes made after the mount, and any other word is
the file system's own (``mode=755``, ``size=65536k``, ``newinstance``),
passed to mount(2) as its data.

A bind mount takes only the flags a bind remount can change (ro, nosuid,
nodev, noexec, the atime ones, nosymfollow): the rest (sync, dirsync, mand,
silent, lazytime, iversion, remount) belong to a file system, which a bind
does not mount, so they are errors there. Other words go into a bind's data
too, as runtime-spec says unknown options go, where mount(2) ignores them
for a bind, as it does for runc (runtime-tools' mounts test gives binds
``mode=755,size=1k``). Refused everywhere: the recursive attributes (``rro``, ``rnosuid``...,
mount_setattr(2) with AT_RECURSIVE, which the shim does not do), ``idmap``
and ``ridmap`` (idmapped mounts) and ``tmpcopyup`` (copying the directory's
contents into a new tmpfs). The flag values come from the system headers
through the cffi module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..native import lib
from .jsonpath import item

__all__ = ["MountOptions", "parse_mount_options", "BIND_FLAGS", "PROPAGATION_FLAGS"]

# word -> (flags it sets, flags it clears)
_FLAG_WORDS: Dict[str, Tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (lib.MS_RDONLY, 0), "rw": (0, lib.MS_RDONLY),
    "nosuid": (lib.MS_NOSUID, 0), "suid": (0, lib.MS_NOSUID),
    "nodev": (lib.MS_NODEV, 0), "dev": (0, lib.MS_NODEV),
    "noexec": (lib.MS_NOEXEC, 0), "exec": (0, lib.MS_NOEXEC),
    "noatime": (lib.MS_NOATIME, 0), "atime": (0, lib.MS_NOATIME),
    "nodiratime": (lib.MS_NODIRATIME, 0), "diratime": (0, lib.MS_NODIRATIME),
    "relatime": (lib.MS_RELATIME, 0), "norelatime": (0, lib.MS_RELATIME),
    "strictatime": (lib.MS_STRICTATIME, 0), "nostrictatime": (0, lib.MS_STRICTATIME),
    "nosymfollow": (lib.MS_NOSYMFOLLOW, 0), "symfollow": (0, lib.MS_NOSYMFOLLOW),
    "sync": (lib.MS_SYNCHRONOUS, 0), "async": (0, lib.MS_SYNCHRONOUS),
    "dirsync": (lib.MS_DIRSYNC, 0),
    "mand": (lib.MS_MANDLOCK, 0), "nomand": (0, lib.MS_MANDLOCK),
    "silent": (lib.MS_SILENT, 0), "loud": (0, lib.MS_SILENT),
    "lazytime": (lib.MS_LAZYTIME, 0), "nolazytime": (0, lib.MS_LAZYTIME),
    "iversion": (lib.MS_I_VERSION, 0), "noiversion": (0, lib.MS_I_VERSION),
    "remount": (lib.MS_REMOUNT, 0),
}

#: The flags a bind remount applies to one mount (the rest are a file system's).
BIND_FLAGS = (lib.MS_RDONLY | lib.MS_NOSUID | lib.MS_NODEV | lib.MS_NOEXEC | lib.MS_NOATIME | lib.MS_NODIRATIME
              | lib.MS_RELATIME | lib.MS_STRICTATIME | lib.MS_NOSYMFOLLOW)

#: Propagation words -> the mount(2) flags of the change (MS_REC: the whole tree below too).
PROPAGATION_FLAGS: Dict[str, int] = {
    "private": lib.MS_PRIVATE, "rprivate": lib.MS_PRIVATE | lib.MS_REC,
    "shared": lib.MS_SHARED, "rshared": lib.MS_SHARED | lib.MS_REC,
    "slave": lib.MS_SLAVE, "rslave": lib.MS_SLAVE | lib.MS_REC,
    "unbindable": lib.MS_UNBINDABLE, "runbindable": lib.MS_UNBINDABLE | lib.MS_REC,
}

_RECURSIVE_ATTRS = frozenset({
    "rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rnodiratime", "rdiratime",
    "rrelatime", "rnorelatime", "rnoatime", "ratime", "rstrictatime", "rnostrictatime", "rnosymfollow",
    "rsymfollow",
})
_UNSUPPORTED = {
    **{word: "is not supported (recursive mount attributes need mount_setattr(2), which pyexec does not use)"
       for word in _RECURSIVE_ATTRS},
    "idmap": "is not supported (idmapped mounts)",
    "ridmap": "is not supported (idmapped mounts)",
    "tmpcopyup": "is not supported (copying a directory's contents into the new tmpfs)",
}


@dataclass(frozen=True)
class MountOptions:
    """A mount's options, read.

    ``flags``: the MS_* flags of mount(2) (for a bind mount, those its bind
    remount applies; ``recursive`` says rbind). ``propagation``: the
    propagation changes to make after the mount, in order. ``data``: the
    file system's own options, comma-joined, or None.
    """

    flags: int = 0
    propagation: Tuple[int, ...] = ()
    data: Optional[str] = None
    recursive: bool = False

    @property
    def readonly(self) -> bool:
        return bool(self.flags & lib.MS_RDONLY)


def parse_mount_options(options: Sequence[str], bind: bool, path: str) -> MountOptions:
    """Read ``options`` (the strings of ``<path>``, e.g. ``mounts[2].options``) of a bind or other mount."""
    flags = 0
    propagation: List[int] = []
    data: List[str] = []
    recursive = False
    for index, word in enumerate(options):
        where = item(path, index)
        if word in _UNSUPPORTED:
            raise ConfigError(where, word, _UNSUPPORTED[word])
        if word in ("bind", "rbind"):  # the caller has seen them: ``bind`` is true
            recursive = recursive or word == "rbind"
        elif word in PROPAGATION_FLAGS:
            propagation.append(PROPAGATION_FLAGS[word])
        elif word in _FLAG_WORDS:
            set_flags, clear_flags = _FLAG_WORDS[word]
            if bind and set_flags & ~BIND_FLAGS:
                raise ConfigError(where, word, "is a file system's option, which a bind mount cannot take")
            flags = (flags | set_flags) & ~clear_flags
        elif not word or "," in word:
            raise ConfigError(where, word, "is not one mount option")
        else:
            data.append(word)
    return MountOptions(flags, tuple(propagation), ",".join(data) or None, recursive)
