"""``python -m crl_uiqa``: the ``crl-uiqa`` command, for when pip's scripts folder is not on PATH."""
import sys

from .cli import main

if __name__ == "__main__":  # pragma: no cover - run as a module
    sys.exit(main())
