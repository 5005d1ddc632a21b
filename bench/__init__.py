"""pyexec's benchmark against runc, crun, bubblewrap, unshare and bare subprocess.

Run ``bench/run`` (or ``python -m bench``) from the repository root as root;
see bench/README.md.
"""
