"""A delivery program for :class:`magicwan.delivery.Command`: one PSK into strongSwan.

magicwan runs it once per tunnel, the new PSK on standard input and the tunnel's facts in
``MAGICWAN_*`` variables (``MAGICWAN_TUNNEL_ID``, ``MAGICWAN_IPSEC_ID``,
``MAGICWAN_CLOUDFLARE_ENDPOINT``, ...). It writes the PSK as a swanctl secret, in a file of
its own that the default ``swanctl.conf`` includes (``conf.d/*.conf``), replacing it
atomically, mode 0600::

    secrets {
        ike-magicwan-<tunnel id> {
            id-router = "<MAGICWAN_IPSEC_ID>"
            id-cloudflare = "<MAGICWAN_CLOUDFLARE_ENDPOINT>"
            secret = 0s<the PSK, base64>
        }
    }

then runs ``swanctl --load-creds`` so that charon uses it (``--no-load`` skips that, for a
machine without charon). Unlike a key loaded over VICI (``magicwan.delivery.StrongSwan``),
this one survives a restart of charon. Running it twice with the same PSK is harmless.

Exit status 0: delivered. 78 (``EX_CONFIG``): a fact is missing or unusable, which trying
again cannot fix. 1: anything else (charon did not take it), which a retry may fix. Under
``MAGICWAN_CHECK=1`` (``Command(..., run_check=True)``) it only checks that it could
deliver: the facts, the directory, and that charon answers ``swanctl --stats``. It never
prints the PSK. Python standard library only, so it runs on any router with Python. See
``rotate_to_strongswan.py``.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EX_CONFIG = 78
#: What may go in a swanctl identity here: no quote, backslash, brace or line break.
_IDENTITY = re.compile(r"[A-Za-z0-9.:@_\-=,/ ]{1,255}")
_TUNNEL_ID = re.compile(r"[0-9a-f]{32}")


class Misconfigured(Exception):
    """Something trying again cannot fix: exit 78."""


def facts() -> tuple[str, str, str]:
    """The tunnel id, the router's identity and Cloudflare's, from the environment."""
    tunnel_id = os.environ.get("MAGICWAN_TUNNEL_ID", "").lower()
    router = os.environ.get("MAGICWAN_IPSEC_ID", "")
    cloudflare = os.environ.get("MAGICWAN_CLOUDFLARE_ENDPOINT", "")
    if not _TUNNEL_ID.fullmatch(tunnel_id):
        raise Misconfigured("MAGICWAN_TUNNEL_ID is not a tunnel id")
    for name, value in (
        ("MAGICWAN_IPSEC_ID", router),
        ("MAGICWAN_CLOUDFLARE_ENDPOINT", cloudflare),
    ):
        if not _IDENTITY.fullmatch(value):
            raise Misconfigured(f"{name} is empty or not usable as a swanctl identity")
    return tunnel_id, router, cloudflare


def secrets_section(tunnel_id: str, router: str, cloudflare: str, psk: str) -> str:
    encoded = base64.b64encode(psk.encode()).decode("ascii")  # any PSK, no quoting
    return (
        "# written by magicwan's swanctl_psk_hook.py: the tunnel's current PSK\n"
        "secrets {\n"
        f"    ike-magicwan-{tunnel_id} {{\n"
        f'        id-router = "{router}"\n'
        f'        id-cloudflare = "{cloudflare}"\n'
        f"        secret = 0s{encoded}\n"
        "    }\n"
        "}\n"
    )


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a crash leaves the old file or the new one)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:  # mkstemp: mode 0600
            file.write(text)
            file.flush()
            os.fsync(fd)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def swanctl_run(swanctl: str, *arguments: str) -> None:
    """Run swanctl (never with the PSK in its arguments); raise if it fails."""
    done = subprocess.run(  # noqa: S603 - the operator's swanctl
        [swanctl, *arguments],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if done.returncode != 0:
        # What went wrong, without the plugin warnings and usage swanctl adds around it.
        said = [line for line in done.stderr.splitlines() if not line.startswith("plugin ")]
        sys.stderr.write("\n".join(said[:2]) + "\n")
        raise RuntimeError(f"swanctl {' '.join(arguments)} exited {done.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Put a tunnel's new PSK into strongSwan.")
    parser.add_argument("--conf-dir", type=Path, default=Path("/etc/swanctl/conf.d"))
    parser.add_argument("--swanctl", default="swanctl", help="the swanctl program")
    parser.add_argument("--no-load", action="store_true", help="write the file only")
    args = parser.parse_args()
    try:
        tunnel_id, router, cloudflare = facts()
        if not (args.conf_dir.is_dir() and os.access(args.conf_dir, os.W_OK)):
            raise Misconfigured(f"{args.conf_dir} is not a directory this user may write")
        swanctl = None if args.no_load else shutil.which(args.swanctl)
        if not args.no_load and swanctl is None:
            raise Misconfigured(f"{args.swanctl} is not installed")
        if os.environ.get("MAGICWAN_CHECK") == "1":  # a check changes nothing
            if swanctl is not None:
                swanctl_run(swanctl, "--stats")  # charon answers
            return 0
        psk = sys.stdin.readline().rstrip("\n")
        if not psk:
            raise Misconfigured("no PSK on standard input")
        path = args.conf_dir / f"magicwan-{tunnel_id}.conf"
        replace_file(path, secrets_section(tunnel_id, router, cloudflare, psk))
        if swanctl is not None:
            swanctl_run(swanctl, "--load-creds", "--noprompt")
    except Misconfigured as exc:
        print(f"swanctl_psk_hook: {exc}", file=sys.stderr)
        return EX_CONFIG
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"swanctl_psk_hook: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
