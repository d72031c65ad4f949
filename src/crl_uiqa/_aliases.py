"""Old import paths of modules that moved into ``video/`` and ``reporting/`` (and out of ``serving/``).

``import crl_uiqa.select`` (the path of the first release, still in users' scripts) returns the
module object of :mod:`crl_uiqa.video.select` itself, so attributes, monkeypatching and ``isinstance``
checks behave exactly as with the new path. The finder is lazy: nothing moved is imported until
somebody asks for it by its old name.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module name -> new module name
MOVED = {
    "crl_uiqa.scan": "crl_uiqa.video.scan",
    "crl_uiqa.region": "crl_uiqa.video.region",
    "crl_uiqa.select": "crl_uiqa.video.select",
    "crl_uiqa.live": "crl_uiqa.video.live",
    "crl_uiqa.report": "crl_uiqa.reporting.html",
    "crl_uiqa.figures": "crl_uiqa.reporting.figures",
    "crl_uiqa.report_scores": "crl_uiqa.reporting.scores",
    "crl_uiqa.serving.sniff": "crl_uiqa.sniff",  # the format of a file is the core's, used by video/ too
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # noqa: ANN001 - importlib protocol
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # noqa: ANN001 - already executed under its new name
        return None


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib protocol
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
