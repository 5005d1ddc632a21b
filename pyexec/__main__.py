"""``python -m pyexec`` is the ``pyexec`` command."""
import sys

from .cli import main

sys.exit(main())
