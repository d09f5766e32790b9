"""What the machine needs for the IKE lab: :func:`ike_missing` says what it lacks, if anything."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from magicwan.ikelab.errors import IKELabError

__all__ = ["CHARON", "LIBIPSEC", "ike_missing", "import_vici", "tool"]

CHARON = Path("/usr/lib/ipsec/charon")
LIBIPSEC = Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
_INSTALL_VICI = "the vici package (pip install 'magicwan[strongswan]')"


def tool(name: str) -> str:
    """The path of the command-line tool ``name`` (its bare name if it is not on PATH)."""
    return shutil.which(name) or name


@functools.cache
def _namespaces_usable() -> str | None:
    try:
        subprocess.run(  # noqa: S603 - a fixed command line
            [tool("unshare"), "-n", "-m", "--", "true"],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create network and mount namespaces (unshare -n -m: {exc})"
    return None


def ike_missing(*, child_sas: bool = False) -> str | None:
    """Why the lab cannot run here (``"needs root ..."``), or None when it can.

    The reason is a phrase that completes "this machine ..." and names the package to
    install.
    """
    if not sys.platform.startswith("linux"):
        return "needs Linux (network and mount namespaces)"
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    for name, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("ip", "iproute2")):
        if shutil.which(name) is None:
            return f"needs {name} (apt-get install {package})"
    if not os.access(CHARON, os.X_OK):
        return f"needs charon at {CHARON} (apt-get install strongswan-charon)"
    if importlib.util.find_spec("vici") is None:
        return f"needs {_INSTALL_VICI}"
    if child_sas and not LIBIPSEC.exists():
        return f"needs {LIBIPSEC.name} (apt-get install libcharon-extra-plugins)"
    if child_sas and not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun (kernel-libipsec)"
    return _namespaces_usable()


def import_vici() -> ModuleType:
    """The ``vici`` package, or :class:`IKELabError` naming how to install it."""
    try:
        import vici  # type: ignore[import-untyped]
    except ImportError:
        raise IKELabError(f"the IKE lab needs {_INSTALL_VICI}") from None
    return vici  # type: ignore[no-any-return]
