"""Machinery the tests share, kept out of conftest.py and the test files.

* ``support.leaks``: host snapshots (processes, mounts, state dirs, cgroups)
  and what a test left behind, for conftest's ``no_leaks`` fixture;
* ``support.bpf``: a classic-BPF interpreter for seccomp filters;
* ``support.imports``: the import graph of a package's source and the
  private names its modules reach into.

pytest puts tests/ on sys.path (conftest.py sits there and tests/ is not a
package), so tests and conftest import these as ``support.<module>``.
"""
