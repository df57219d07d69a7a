"""What the fork server of the experiment workers imports once (see ``runner._mp_context``).

Each worker process used to import torch, SciPy, matplotlib and every experiment module
itself (about 4.5 s of CPU apiece, and again for each fresh pool after a timeout); forked
from a server that imported them once, it starts with them in a fraction of a second.
The worker's initializer still runs as before (``load_all`` is then a no-op), so a
worker computes exactly what it computed before. The server is a fresh interpreter: it
holds none of the caller's runtime registrations or settings.
"""

import matplotlib

matplotlib.use("Agg")

from tying.experiments import load_all  # noqa: E402  (after the backend is chosen)

load_all()
