"""``python -m pyexec.oci``: the same as the ``pyexec-oci`` command."""
import sys

from .cli import main

sys.exit(main())
