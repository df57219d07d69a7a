"""``python -m tying``: the same as the ``tying`` command."""

from tying.cli import main

raise SystemExit(main())
