"""Realistic benchmark corpora built from real recorded material installed on this machine.

    raysys make-corpus music OUT [--entities N] [--seed S] [--missing-fraction F]
    raysys make-corpus speech OUT ...

Each builder writes a raysys archive (manifest, media files, logs.parquet, relevance.parquet)
that is deterministic for a seed. The recorded material comes from Debian packages (SoundFont
instruments rendered with FluidSynth, Festival's recorded voices) that the builder installs
when they are missing; see docs/corpora.md. `CorpusUnavailable` says why a corpus can't be
built here (no root, no apt, no network to the Debian mirror).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from raysys.corpora.common import CorpusSummary
from raysys.corpora.system import CorpusUnavailable

# name -> "module:function"; imported on use so that `raysys --help` stays fast.
BUILDERS: dict[str, str] = {
    "music": "raysys.corpora.music:make_music_corpus",
    "speech": "raysys.corpora.speech:make_speech_corpus",
}


def builder(name: str) -> Callable[..., CorpusSummary]:
    if name not in BUILDERS:
        raise ValueError(f"unknown corpus {name!r}; choose one of {sorted(BUILDERS)}")
    module, func = BUILDERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def make_corpus(name: str, out: str, **kwargs) -> CorpusSummary:
    """Build corpus `name` into `out` (see each builder for its keyword arguments)."""
    return builder(name)(out, **kwargs)


__all__ = ["BUILDERS", "CorpusSummary", "CorpusUnavailable", "builder", "make_corpus"]
