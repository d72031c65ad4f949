"""Sub-commands of ``crl-uiqa``; each module defines ``register(subparsers)``.

Modules are discovered automatically by :mod:`crl_uiqa.cli`: adding a command
means adding one file here. Commands import heavy modules lazily inside their
handler so that ``crl-uiqa --help`` stays fast.
"""
