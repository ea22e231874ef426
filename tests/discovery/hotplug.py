"""Plug a board into a umockdev testbed while a program waits for it.

`umockdev-run` can only load devices before the program starts; plugging one in later needs
libumockdev's own API (GObject introspection: python3-gi and gir1.2-umockdev-1.0), which the
project's interpreter may not have. So this script runs under any Python that has them, inside
`umockdev-wrapper`:

    umockdev-wrapper python3 hotplug.py BOARD.umockdev -- PROGRAM [ARGS...]

It starts PROGRAM in an empty testbed, waits for PROGRAM to print a line `ready` (it is then
listening for uevents), adds the board and sends "add" for its tty, then passes PROGRAM's
remaining output through and exits with PROGRAM's exit status.
"""

import os
import subprocess
import sys

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402


def tty_syspath(board: str) -> str:
    """The sysfs path of the board's tty, the device whose appearance the program waits for."""
    for line in board.splitlines():
        if line.startswith("P: ") and "/tty/" in line:
            return "/sys" + line.removeprefix("P: ")
    raise SystemExit("hotplug.py: the board file has no tty device (no P: line with /tty/)")


def main(argv: list[str]) -> int:
    board_file, separator, *program = argv
    if separator != "--" or not program:
        raise SystemExit(__doc__)
    with open(board_file) as f:
        board = f.read()
    testbed = UMockdev.Testbed.new()
    env = dict(os.environ, UMOCKDEV_DIR=testbed.get_root_dir())
    child = subprocess.Popen(program, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    first = child.stdout.readline()
    if first.strip() != "ready":
        sys.stdout.write(first)
    else:
        testbed.add_from_string(board)
        testbed.uevent(tty_syspath(board), "add")
    sys.stdout.write(child.stdout.read())
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
