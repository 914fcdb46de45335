"""``python -m framebus``: the same as the ``framebus`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m framebus"))
