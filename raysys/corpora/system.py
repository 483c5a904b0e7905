"""System prerequisites of the corpora: Debian packages installed on demand.

The corpora need recorded material that only the Debian archive ships here (SoundFonts,
Festival voices). `ensure_debian_packages` installs what is missing with apt-get (as root),
says so on stdout, and raises `CorpusUnavailable` with the reason when it cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path


class CorpusUnavailable(RuntimeError):
    """The corpus cannot be built on this machine (a system package cannot be had)."""


def _missing(packages: Mapping[str, str]) -> list[str]:
    return [pkg for pkg, probe in packages.items() if not Path(probe).exists()]


def ensure_debian_packages(packages: Mapping[str, str], *, corpus: str) -> None:
    """Install the Debian `packages` (name -> a file the package provides) that are missing.

    Runs `apt-get update` once, then `apt-get install -y --no-install-recommends ...`.
    Raises CorpusUnavailable naming the packages when not root, without apt-get, or when the
    install fails (e.g. no route to the mirror).
    """
    missing = _missing(packages)
    if not missing:
        return
    wanted = " ".join(missing)
    if shutil.which("apt-get") is None:
        raise CorpusUnavailable(f"corpus {corpus!r} needs the Debian packages {wanted} and "
                                "this machine has no apt-get; install them by other means")
    if os.geteuid() != 0:
        raise CorpusUnavailable(f"corpus {corpus!r} needs the Debian packages {wanted}; "
                                f"run as root or `sudo apt-get install {wanted}`")
    print(f"[corpus {corpus}] installing missing Debian packages: {wanted} "
          "(apt-get update + install, about a minute)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise CorpusUnavailable(f"corpus {corpus!r}: `{' '.join(cmd)}` failed "
                                    f"(exit {done.returncode}): {' | '.join(tail)}")
    still = _missing(packages)
    if still:
        raise CorpusUnavailable(f"corpus {corpus!r}: after apt-get install, still missing "
                                f"{[packages[p] for p in still]}")
