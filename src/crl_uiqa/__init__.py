"""crl-uiqa: unsupervised ultrasound image quality assessment (CRL-UIQA)."""
from __future__ import annotations

__version__ = "0.1.0"
