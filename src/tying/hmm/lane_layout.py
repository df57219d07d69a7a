"""The fused E-step's lane layout: a batch's observations cut into work units.

:class:`LaneLayout` is built once per fit (the data do not change between EM
iterations) and read by :func:`~tying.hmm.forward_backward.forward_backward_stats`
and the compiled EM loop (:mod:`tying.hmm.fused_em`). The units and their arrays'
shapes depend on the sequence lengths, ``K``, ``D`` and the covariance type only,
so their plans (:func:`_unit_plans`) are kept for the last few layouts.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

from tying.hmm import arenas, compiled, windows
from tying.hmm.sequences import SequenceBatch

__all__ = ["LaneLayout"]


class LaneLayout:
    """The observations of a batch cut into work units, in the fused E-step's lane layout.

    Built once per fit (the data do not change between EM iterations). Unit
    ``u`` holds sequences ``edges[u]..edges[u+1]-1``. A unit of four or more
    (``kind="lanes"``) has them sorted longest first into lanes: ``XL (T, D, S)``
    the raw rows, ``XcL`` the same minus ``center``, ``n_act[t]`` the lanes
    still running at step t. A unit of fewer (a few long sequences; lanes would
    be mostly padding) is ``kind="rows"``: rows ``r0..r1-1`` of ``X``, run one
    sequence at a time; for the density their rows are dealt out over S lanes
    in turn (row ``r0 + t S + s`` at ``[t, :, s]``), in the same arrays ``XL``,
    ``XcL``, ``n_act``, so a step of the recursion reads a row's K values from
    the cache line its neighbours use. A rows unit of at least
    ``windows.MIN_ROWS`` rows (``windows.MIN_ROWS_DIAG`` for a diag model) also has
    its overlapping windows (``win``, and the lane arrays ``XLw``, ``XcLw``, ``mw``, ``icw``, after :meth:`prepare` ``bw``,
    ``alphaw``), which the compiled diag loop fills once and runs at each E-step.

    Args:
        X: ``(n_samples, D)`` observations.
        center: ``(D,)`` centre of the statistics.
        batch: the sequences of ``X``.
        n_jobs: threads that copy the units' lanes (None: the module default).
        K: states of the model the units are sized for (their count follows the
            E-step's estimated work, :func:`~tying.hmm.compiled.units`); any K runs.
        covariance_type: the model's covariance type, for the same estimate.
        fill: copy the rows into the lanes now; with False the lanes are copied by
            :meth:`fill` (which
            :func:`~tying.hmm.forward_backward.forward_backward_stats` calls), or by the
            compiled EM loop's threads, each copying the units it computes first.
        copy: keep a read-only copy of ``X`` (the lanes copied late then hold the
            values ``X`` had here, whatever the caller does to it). False (a fit, whose
            ``X`` does not change while it runs): a read-only view of ``X`` itself, when
            it is float64 and C-contiguous already.

    Example:
        >>> from tying.hmm import compiled
        >>> if compiled.available():
        ...     lay = LaneLayout(np.arange(7.0)[:, None], np.zeros(1),
        ...                      SequenceBatch.from_lengths([2, 3, 1, 1]))
        ...     u = lay.units[0]
        ...     print(u["kind"], u["seqs"].tolist(), u["XL"][:, 0, :4].tolist())
        ... else:
        ...     print("lanes [1, 0, 2, 3] [[2.0, 0.0, 5.0, 6.0], [3.0, 1.0, 0.0, 0.0], "
        ...           "[4.0, 0.0, 0.0, 0.0]]")
        lanes [1, 0, 2, 3] [[2.0, 0.0, 5.0, 6.0], [3.0, 1.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]]
    """

    def __init__(
        self,
        X: np.ndarray,
        center: np.ndarray,
        batch: SequenceBatch,
        n_jobs: int | None = None,
        *,
        K: int = 8,
        covariance_type: str = "diag",
        fill: bool = True,
        copy: bool = True,
    ):
        kernels = compiled._kernels()
        if kernels is None:
            raise RuntimeError("LaneLayout needs the compiled kernels (numba)")
        X = np.ascontiguousarray(X, dtype=np.float64)
        center = np.ascontiguousarray(center, dtype=np.float64)
        # read-only copies, checked on every use: the caller's arrays edited in place
        # after this would otherwise pass the check (a reference compares equal to itself)
        self.center, self.lengths, self.X = (
            _frozen_copy(center),
            batch.lengths.copy(),
            _frozen_copy(X) if copy else _read_only_view(X),
        )
        #: what the units depend on (the lengths' values, K, D, the covariance type, the
        #: unit constants): a key for what is planned from them, never from the data
        self.plan_key, self.edges, plans = _unit_plans(
            batch, X.shape[1], kernels.LANE_BLOCK, K, covariance_type
        )
        self.units = []
        #: ``(u, name) -> (array, block, offset)``: where :func:`arenas.carve` put each
        #: unit array, so the compiled loop's plan reads a unit table's offsets from here
        #: for an array that is still the one carved (``fused_em._unit_offsets``)
        self.carved: dict = {}
        at: list = []
        carved = arenas.carve([a for _, a in plans], offsets=at)
        for (static, _), arrays in zip(plans, carved, strict=True):
            # the plan is shared by every layout of these lengths: each gets its own
            # copies of its arrays (a few KB), so nothing a fit writes reaches the next
            own = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in static.items()}
            self.units.append(own | arrays)
        self._record(carved, at)

        # a unit's work: its lane-steps (padding lanes included: the loops run over them)
        self.cost = [u["XL"].shape[0] * u["XL"].shape[2] for u in self.units]
        self._K = None
        #: per unit: its lanes not copied yet (0), being copied (1), copied (2); the last
        #: entry is set when a thread died while copying (``_numba_em.copy_unit``)
        self.fill_state = np.zeros(len(self.units) + 1, dtype=np.int64)
        self.filled = False
        self._copy = None  # the copy started on a helper thread (:meth:`start_fill`)
        if fill:
            self.fill(n_jobs)

    def start_fill(self, n_jobs: int | None = None) -> None:
        """Start copying the lanes on a helper thread while the calling thread goes on.

        The copy is shared out by unit: whichever thread needs a unit's lanes first
        (this helper, :meth:`fill`, or the compiled EM loop's E-step) claims that
        unit's copy; a thread that finds it claimed waits for it. Nothing happens for
        one thread, units of few long sequences, or when the compiled EM loop cannot
        run here (its waits are its own).

        Args:
            n_jobs: the fit's threads (None: the module default).

        Example:
            >>> from tying.hmm import compiled
            >>> if compiled.available():
            ...     lay = LaneLayout(np.arange(40.0)[:, None], np.zeros(1),
            ...                      SequenceBatch.from_lengths([1] * 40), fill=False)
            ...     lay.start_fill(2)  # one unit of 40 lanes: nothing to share, no helper
            ...     lay.fill()  # copies here (or waits for what a helper holds)
            ...     print(lay.filled, lay.units[0]["XL"][0, 0, :3].tolist())
            ... else:
            ...     print(True, [0.0, 1.0, 2.0])
            True [0.0, 1.0, 2.0]
        """
        n_jobs = compiled.resolve_n_jobs(n_jobs)
        n_help = min(n_jobs, len(self.units)) - 1
        if self.filled or self._copy is not None or n_help < 1:
            return
        if any(unit["kind"] != "lanes" for unit in self.units):
            return
        from tying.hmm import _numba_em, fused_em

        fns = fused_em._fns(_numba_em)
        if fns is None:
            return
        # the helper copies the cheapest units first: the calling thread's E-step takes
        # the costliest first, and copies it itself if the helper has not reached it
        order = np.argsort(np.asarray(self.cost), kind="stable")
        self._copy = {"kernels": _numba_em, "fns": fns}
        pool = compiled._pool(n_help, "tying-hmm-em")  # the compiled EM loop's helpers
        self._copy["future"] = pool.submit(self._copy_units, order)

    def _copy_units(self, order) -> None:
        """Claim and copy each unit of ``order`` not claimed yet; wait for the others."""
        kernels, fns = self._copy["kernels"], self._copy["fns"]
        try:
            for u in order:
                unit = self.units[int(u)]
                kernels.copy_unit(
                    self.fill_state, int(u), self.X, self.center, unit["start"],
                    unit["n_act"], unit["XL"], unit["XcL"], fns,
                )  # fmt: skip
        except BaseException:
            self.fill_state[-1] = 1  # a thread waiting for a unit this one held copies it
            raise

    def stop_fill(self) -> None:
        """Cancel the helper's copy if its thread has not started it (it would only find
        the units copied)."""
        if self._copy is not None:
            self._copy["future"].cancel()

    def fill(self, n_jobs: int | None = None) -> None:
        """Copy the rows of ``X`` into every unit's lanes (a no-op once they hold them).

        Args:
            n_jobs: threads that copy (None: the module default); each unit writes
                only its own lanes.
        """
        if self.filled:
            return
        if self._copy is not None:  # shared with the helper of start_fill, by unit
            self.stop_fill()
            self._copy_units(np.argsort(-np.asarray(self.cost), kind="stable"))
            self.filled = True
            return
        kernels = compiled._kernels()
        X, center = self.X, self.center

        def fill(u):  # each unit writes only its own lanes
            unit = self.units[u]
            if unit["kind"] == "lanes":
                kernels.to_lanes(X, center, unit["start"], unit["n_act"], unit["XL"], unit["XcL"])
            else:
                _deal_rows(X[unit["r0"] : unit["r1"]], unit["XL"])
                _deal_rows(X[unit["r0"] : unit["r1"]] - center, unit["XcL"])
                if "win" in unit:  # its windows too (the compiled loop's, see _windows)
                    win = unit["win"]
                    kernels.to_lanes(X, center, win["start"], win["n_act"], unit["XLw"],
                                     unit["XcLw"])  # fmt: skip

        compiled._run_units(fill, len(self.units), compiled.resolve_n_jobs(n_jobs), self.cost)
        self.fill_state[:-1] = 2
        self.filled = True

    def scratch(self, u: int, K: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit ``u``'s ``(T, K, S)`` buffers for the emissions and the forward pass.

        Kept between EM iterations: fresh arrays of this size cost a page fault
        per 4 KiB on every call (as much as the ``exp`` itself). Call
        :meth:`prepare` first from one thread; this only reads what it made.
        """
        unit = self.units[u]
        if self._K != K:
            raise RuntimeError(f"LaneLayout.scratch({u}, K={K}): call prepare(K={K}) first")
        return unit["b"], unit["alpha"]

    def prepare(self, K: int) -> None:
        """Make every unit's emission and forward buffers for ``K`` states (a no-op when
        they exist), in one allocation with the others' (see :func:`~tying.hmm.arenas.carve`).

        Example:
            >>> from tying.hmm import compiled
            >>> if compiled.available():
            ...     lay = LaneLayout(np.zeros((5, 1)), np.zeros(1), SequenceBatch.from_lengths([5]))
            ...     lay.prepare(3)
            ...     print(lay.scratch(0, 3)[0].shape)  # (T, K, S): 5 rows dealt over 8 lanes
            ... else:
            ...     print((1, 3, 8))
            (1, 3, 8)
        """
        if self._K == K:
            return
        shapes = []
        for unit in self.units:
            T, _, S = unit["XL"].shape
            if unit["kind"] == "rows":  # the recursion's own scratch, in row order
                R = unit["r1"] - unit["r0"]
                shapes.append({"b": (T, K, S), "alpha": (R, K), "inv_c": (R,)})
                if "win" in unit:  # and its windows' (their ic is on the data block)
                    Tw, _, Sw = unit["XLw"].shape
                    shapes[-1] |= {"bw": (Tw, K, Sw), "alphaw": (Tw, K, Sw)}
            else:
                shapes.append({"b": (T, K, S), "alpha": (T, K, S)})
        at: list = []
        carved = arenas.carve(shapes, offsets=at)
        for unit, arrays in zip(self.units, carved, strict=True):
            unit["b"], unit["alpha"] = arrays["b"], arrays["alpha"]
            for name in ("inv_c", "bw", "alphaw"):
                if name in arrays:
                    unit[name] = arrays[name]
        self._record(carved, at)
        self._K = K

    def _record(self, carved: list, at: list) -> None:
        """Keep where :func:`arenas.carve` put the arrays it gave (see :attr:`carved`)."""
        for u, (arrays, (block, offsets)) in enumerate(zip(carved, at, strict=True)):
            for name, a in arrays.items():
                self.carved[u, name] = (a, block, offsets[name])


#: the unit plans of the last few sequence layouts (see :func:`_unit_plans`)
_PLANS: collections.OrderedDict = collections.OrderedDict()
_PLANS_KEPT = 8
_PLANS_LOCK = threading.Lock()


def _unit_plans(
    batch: SequenceBatch, D: int, LANE_BLOCK: int, K: int = 8, covariance_type: str = "diag"
) -> tuple[tuple, np.ndarray, list]:
    """The work units of ``batch`` and each one's lane arrays' shapes, before anything is
    allocated: ``(key, edges, [(unit, shapes), ...])``.

    They depend on the sequence lengths, ``K``, ``D``, the covariance type and the
    unit constants of :mod:`~tying.hmm.compiled` only (never on the data), so the plans of the last
    few keys are kept, keyed by the lengths' values (not an array's identity): a
    refit of the same sequences skips the planning (0.2-0.4 ms at 150 x 400, run
    cold after the previous fit). Callers must not write into the plans' arrays.
    """
    key = (
        batch.lengths.dtype.str, batch.lengths.tobytes(), D, LANE_BLOCK, K, covariance_type,
        compiled.UNITS, compiled.SPLIT_ROWS, compiled.FOUR_ROWS, compiled.MAX_LANES,
        compiled.MIN_GAIN, compiled.MAX_COST, compiled.STEP_LANES, compiled.ROW_LANE_STEPS,
        compiled.row_cost(K, D, covariance_type),  # (a ValueError names a bad type)
        windows.MIN_ROWS, windows.MIN_ROWS_DIAG,
    )  # fmt: skip
    with _PLANS_LOCK:
        hit = _PLANS.get(key)
        if hit is not None:
            _PLANS.move_to_end(key)
            return (key, *hit)
    edges = compiled.units(batch.lengths, K, D, covariance_type)
    # the diag loop's windows layout pays from fewer rows than the others' drop-in
    min_rows = windows.MIN_ROWS_DIAG if covariance_type == "diag" else windows.MIN_ROWS
    plans = []  # (unit, its lane arrays' shapes) before anything is allocated
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi - lo < LANE_BLOCK // 2:  # few (long) sequences: lanes would be mostly empty
            r0, r1 = int(batch.starts[lo]), int(batch.starts[hi - 1] + batch.lengths[hi - 1])
            # the density has no recursion: it runs on the rows dealt out over 64
            # lanes (8 for short units), which the lane kernels vectorise
            R = r1 - r0
            S = LANE_BLOCK * (8 if R >= 4096 else 1)
            Tp = -(-R // S)
            n_act = np.full(Tp, S, dtype=np.int64)
            n_act[-1] = R - (Tp - 1) * S
            unit = {"kind": "rows", "lo": int(lo), "hi": int(hi), "r0": r0, "r1": r1,
                    "seqs": np.arange(lo, hi), "n_act": n_act}  # fmt: skip
            shapes = {"XL": (Tp, D, S), "XcL": (Tp, D, S), "m": (Tp, S)}
            if R >= min_rows:  # and its overlapping windows (stop 26), see _windows
                win = _windows(batch.lengths[lo:hi], r0, LANE_BLOCK)
                unit["win"] = win
                Tw, Sw = len(win["n_act"]), len(win["start"])
                shapes |= {"XLw": (Tw, D, Sw), "XcLw": (Tw, D, Sw), "mw": (Tw, Sw), "icw": (Tw, Sw)}
            plans.append((unit, shapes))
            continue
        seqs = lo + np.argsort(-batch.lengths[lo:hi], kind="stable")
        lens = batch.lengths[seqs]
        T = int(lens[0])
        S = -(-len(seqs) // LANE_BLOCK) * LANE_BLOCK  # whole lane blocks (padding lanes)
        n_act = np.searchsorted(-lens, -np.arange(T), side="left").astype(np.int64)
        lane_start = np.zeros(S, dtype=np.int64)
        lane_start[: len(seqs)] = batch.starts[seqs]
        unit = {"kind": "lanes", "seqs": seqs, "lens": lens, "n_act": n_act,
                "start": lane_start}  # fmt: skip
        plans.append((unit, {"XL": (T, D, S), "XcL": (T, D, S), "ic": (T, S), "m": (T, S)}))
    for unit, _ in plans:
        for a in [*unit.values(), *unit.get("win", {}).values()]:
            if isinstance(a, np.ndarray):
                a.flags.writeable = False  # kept for later layouts: never written
    with _PLANS_LOCK:
        _PLANS[key] = (edges, plans)
        while len(_PLANS) > _PLANS_KEPT:
            _PLANS.popitem(last=False)
    return key, edges, plans


def _windows(lengths: np.ndarray, r0: int, LANE_BLOCK: int) -> dict:
    """The overlapping windows of a rows unit of sequences of ``lengths`` from row ``r0``
    (:func:`~tying.hmm._numba_windows.plan_rows`, the drop-in's own windows), for the
    windows layout the compiled diag loop fills once per fit and runs at every E-step
    (stop 26): ``start`` (the lanes' first rows of ``X``, padded to whole lane blocks),
    ``wstart``, ``wlen``, ``core_lo``, ``core_hi``, ``lane_seq``, ``prev_lane``,
    ``next_lane`` (per real lane) and ``n_act`` (per step)."""
    from tying.hmm._numba_windows import plan_rows

    lens = np.ascontiguousarray(lengths, dtype=np.int64)
    starts = np.cumsum(lens) - lens
    ws, wl, clo, chi, seq, prev, nxt, n_act = plan_rows(starts, lens, 0, len(lens), 0)
    S = -(-len(ws) // LANE_BLOCK) * LANE_BLOCK
    start = np.zeros(S, dtype=np.int64)
    start[: len(ws)] = r0 + ws
    return {"start": start, "wstart": ws, "wlen": wl, "core_lo": clo, "core_hi": chi,
            "lane_seq": seq, "prev_lane": prev, "next_lane": nxt, "n_act": n_act}  # fmt: skip


def _deal_rows(rows: np.ndarray, out: np.ndarray) -> None:
    """``out[t, :, s] = rows[t S + s]`` for ``out (Tp, width, S)``; 0 past the last row."""
    Tp, width, S = out.shape
    full = (Tp - 1) * S
    out[:-1] = rows[:full].reshape(Tp - 1, S, width).transpose(0, 2, 1)
    tail = np.zeros((S, width))
    tail[: len(rows) - full] = rows[full:]
    out[-1] = tail.T


def _read_only_view(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the layout never writes into its ``X``)."""
    out = a.view()
    out.flags.writeable = False
    return out


def _frozen_copy(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous float64 copy of ``a``."""
    out = np.array(a, dtype=np.float64, order="C")
    out.flags.writeable = False
    return out
