"""``python -m magicwan``: the command line (see :mod:`magicwan.cli`)."""

from magicwan.cli import console_main

if __name__ == "__main__":
    console_main()
