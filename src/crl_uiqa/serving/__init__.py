"""``crl-uiqa serve``: a local web page where a sonographer drops a scan and gets its best frames.

* :mod:`.app` — :func:`create_app`, the FastAPI application (page + JSON API);
* :mod:`.jobs` — the bounded queue and the one background worker;
* :mod:`.engine` — a job's work: :func:`crl_uiqa.video.select.select_frames` and
  :func:`~crl_uiqa.video.select.write_selection`, the same engine as ``select``;
* :mod:`.models` — the models menu and the plane check;
* :mod:`crl_uiqa.sniff` (core) — what an upload is, from its bytes;
* :mod:`.settings` — limits and per-upload options;
* ``static/`` — the page (plain HTML, CSS and JavaScript, no external asset).

FastAPI, uvicorn and python-multipart come with ``pip install 'crl-uiqa[serve]'``.
"""
from __future__ import annotations

from .settings import ScanOptions, ServeSettings

__all__ = ["create_app", "ServeSettings", "ScanOptions"]


def create_app(*args, **kwargs):
    """See :func:`crl_uiqa.serving.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
