"""`hil crypto encrypt|decrypt TEXT`: the echo cipher by hand (what the seed did with CyberChef)."""

from __future__ import annotations

import argparse
import sys

from hil.rig import load_rig
from hil.schema import ConfigError


def crypto(args: argparse.Namespace, extra: list[str]) -> int:
    from hil.protocol.crypto import DecryptError

    try:
        cipher = load_rig(args.rig).profile.crypto.cipher() if args.rig else _reference_cipher()
    except ConfigError as exc:
        print(f"hil crypto: {exc}", file=sys.stderr)
        return 2
    if args.action == "encrypt":
        print(cipher.encrypt(args.text))
        return 0
    try:
        print(cipher.decrypt(args.text).decode("utf-8", "backslashreplace"))
    except DecryptError as exc:
        print(f"hil crypto: cannot decrypt: {exc}", file=sys.stderr)
        return 1
    return 0


def _reference_cipher():
    from hil.profile import load_profile

    return load_profile().crypto.cipher()
