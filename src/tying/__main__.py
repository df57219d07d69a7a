"""``python -m tying``: the same as the ``tying`` command."""

from tying.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
