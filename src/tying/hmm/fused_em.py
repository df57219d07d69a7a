"""The compiled EM loop of an untied diagonal Gaussian HMM, with threads that stay in it.

The general EM loop (:meth:`BaseHMM._em`) runs every E-step through
:func:`~tying.hmm.forward_backward.forward_backward_stats`, whose work units
run on a kept thread pool, and between E-steps it runs Python: the statistics'
reduction, checks, the M-step. On two threads that loop measured 1.49-1.56x
(stop 17): about a tenth of a fit ran on one thread between the E-steps, and
the pool's thread, woken for every E-step, started 70-94 us late.

Here one compiled call (:func:`tying.hmm._numba_em.em_step`) runs a whole
iteration (E-step units, their sums in unit order, the M-step, the next
iteration's density constants), and helper threads stay inside compiled code
for the whole fit, spinning (then yielding, then sleeping: never hanging) until
the next iteration's units can be claimed. Python only sums the log-likelihood
and asks the convergence monitor, as the general loop does. Every result has
the bits of the general loop, for any number of threads: the same kernels on
the same units, sums in unit order, NumPy's own ``exp`` and ``log`` loops.

It is used when nothing needs Python inside an iteration: numba present on an
x86 CPU (the spin limits read its cycle counter), a
``"diag"`` model with no ties, K and D at most 128. Units of a few long sequences
run the rows kernel in it too (stop 24; before, they sent the fit to the general loop). When a sequence's scaling fails, the loop hands
that iteration and the rest of the fit to the general loop (whose log-space
recomputation is exact), before the M-step runs.

Example:
    >>> import numpy as np
    >>> from tying.hmm import GaussianHMM
    >>> X = np.random.default_rng(0).normal(size=(400, 2))
    >>> a = GaussianHMM(3, n_iter=5, tol=-np.inf, random_state=0, n_jobs=1).fit(X, [50] * 8)
    >>> b = GaussianHMM(3, n_iter=5, tol=-np.inf, random_state=0, n_jobs=2).fit(X, [50] * 8)
    >>> bool(np.array_equal(a.means_, b.means_)), a.history_ == b.history_
    (True, True)
"""

from __future__ import annotations

import collections
import ctypes
import logging
import platform
import threading

import numpy as np

from tying.hmm import arenas, compiled, vector_exp

__all__ = ["FusedEM"]

log = logging.getLogger(__name__)

_STATE: dict = {"fns": None}
_NPY_DOUBLE = 12  # NumPy's type number of float64
#: CPU cycles of compiled EM iterations per call (about 40 ms at 2.6 GHz): Ctrl-C is seen
#: between calls, and a call costs about 20 us of dispatch and Python
BATCH_CYCLES = 100_000_000


def _ufunc_loop(ufunc: np.ufunc) -> tuple[int, int]:
    """Address of ``ufunc``'s float64 -> float64 inner loop and of its data pointer.

    Read from the ``PyUFuncObject`` struct of NumPy's public C API (``functions``,
    ``data``, ``ntypes``, ``types``); the caller checks the loop's bits against the
    ufunc itself before using it.
    """
    P = ctypes.c_void_p
    addr = id(ufunc)
    head = object.__basicsize__  # PyObject_HEAD (larger on debug and free-threaded builds)
    nin, nout, nargs, _ = (ctypes.c_int * 4).from_address(addr + head)
    if (nin, nout, nargs) != (ufunc.nin, ufunc.nout, ufunc.nargs) or ufunc.nargs != 2:
        # checked before any pointer is followed
        raise RuntimeError(f"unexpected PyUFuncObject layout for np.{ufunc.__name__}")
    functions = P.from_address(addr + head + 16).value
    data = P.from_address(addr + head + 24).value
    ntypes = ctypes.c_int.from_address(addr + head + 32).value
    name = ctypes.c_char_p.from_address(addr + head + 40).value
    types = P.from_address(addr + head + 48).value
    if ntypes != ufunc.ntypes or name != ufunc.__name__.encode() or not functions:
        raise RuntimeError(f"unexpected PyUFuncObject layout for np.{ufunc.__name__}")
    tys = ctypes.string_at(types, ntypes * nargs)
    for i in range(ntypes):
        if tys[2 * i : 2 * i + 2] == bytes([_NPY_DOUBLE, _NPY_DOUBLE]):
            fn = P.from_address(functions + 8 * i).value
            dat = P.from_address(data + 8 * i).value if data else None
            return int(fn), int(dat or 0)
    raise RuntimeError(f"np.{ufunc.__name__} has no float64 loop")


def _fns(kernels) -> np.ndarray | None:
    """The addresses the compiled loop calls (NumPy's exp and log loops, libc's
    ``sched_yield`` and ``usleep``), checked once: each loop must give its ufunc's
    bits on awkward values. None (and one INFO message) when anything is off."""
    if _STATE["fns"] is None:
        try:
            if not kernels._X86:
                # llvm.readcyclecounter (the spin limits' clock) reads PMCCNTR_EL0 on
                # AArch64, which user space may not read (SIGILL): x86 only, for now
                raise RuntimeError(f"not an x86 CPU ({platform.machine()})")
            libc = ctypes.CDLL(None)
            exp, exp_data = _ufunc_loop(np.exp)
            lg, log_data = _ufunc_loop(np.log)
            fns = np.array(
                [exp, exp_data, lg, log_data,
                 ctypes.cast(libc.sched_yield, ctypes.c_void_p).value,
                 ctypes.cast(libc.usleep, ctypes.c_void_p).value],
                dtype=np.int64,
            )  # fmt: skip
            rng = np.random.default_rng(0)
            special = [0.0, -0.0, -1e-300, -745.2, -746.0, -np.inf, np.nan, 1e-320]
            x = np.concatenate([rng.uniform(-800, 0, 4099), special])
            y = x.copy()
            kernels.ufunc_in_place(fns[0], fns[1], y)
            with np.errstate(all="ignore"):
                ok = np.array_equal(y, np.exp(x), equal_nan=True)
                p = np.concatenate([np.exp(rng.uniform(-700, 700, 4099)), [1e-320, 1.0, 0.5]])
                q = p.copy()
                kernels.ufunc_in_place(fns[2], fns[3], q)
                ok = ok and np.array_equal(q, np.log(p))
            if not ok:
                raise RuntimeError("NumPy's exp/log loops called directly gave other bits")
        except (OSError, AttributeError, RuntimeError, ValueError) as err:
            _STATE["fns"] = False
            log.info("tying.hmm: the compiled EM loop is off (%s); EM runs the general loop", err)
        else:
            _STATE["fns"] = _with_vector_exp(fns)
    return _STATE["fns"] if _STATE["fns"] is not False else None


def _with_vector_exp(fns: np.ndarray) -> np.ndarray:
    """``fns`` with NumPy's exp loop replaced by the vectorised copy of glibc's ``exp``
    where :func:`tying.hmm.vector_exp.loop` allows it (the same bits, checked)."""
    found = vector_exp.loop()
    if found is None:
        return fns
    out = fns.copy()
    out[0], out[1] = found[0], found[1].ctypes.data
    return out


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _offset_columns(kernels) -> list[int]:
    """The unit table's offset columns, in the order :func:`_unit_offsets` gives them."""
    return [kernels.U_XL, kernels.U_XCL, kernels.U_IC, kernels.U_M, kernels.U_B, kernels.U_ALPHA,
            kernels.U_WXL, kernels.U_WXCL, kernels.U_WIC, kernels.U_WM, kernels.U_WB,
            kernels.U_WALPHA]  # fmt: skip


# then a rows unit's windows layout (stop 26); a unit without one points these columns at
# its own arrays (``_NO_WINDOWS``: valid offsets, never read: its U_WN is 0)
_ON_BLOCK = (("XL", 0), ("XcL", 0), ("ic", 0), ("m", 0), ("b", 1), ("alpha", 1),
             ("XLw", 0), ("XcLw", 0), ("icw", 0), ("mw", 0), ("bw", 1), ("alphaw", 1))  # fmt: skip
_NO_WINDOWS = {"XLw": "XL", "XcLw": "XcL", "icw": "m", "mw": "m", "bw": "b", "alphaw": "alpha"}
#: the block (0: data, 1: recursion) of each offset column
_BLOCK_OF = np.array([k for _, k in _ON_BLOCK], dtype=np.int64)
#: the column whose block depends on the unit: a rows unit keeps ``inv_c`` there, on the
#: recursion's block (see :func:`_unit_offsets`)
_IC_COLUMN = [name for name, _ in _ON_BLOCK].index("ic")


def _unit_blocks(layout) -> np.ndarray:
    """``(units, 12)``: the block each offset of :func:`_unit_offsets` is measured in.

    A rows unit's ``ic`` column is on the recursion's block. Reading it against the data
    block (as every unit was read until 2026-12-05) made a kept table of a rows unit
    match only when the two arenas happened to share their alignment, so fits of a few
    long sequences rebuilt their table on every fit (83 us of a 1.2 ms fit of one
    sequence of 1,000 steps); the rebuilt table was right, only the keeping was lost.
    """
    blocks = np.repeat(_BLOCK_OF[None], len(layout.units), axis=0)
    for u, unit in enumerate(layout.units):
        if unit["kind"] == "rows":
            blocks[u, _IC_COLUMN] = 1
    return blocks


def _unit_offsets(layout, block_a, block_b, base_a, base_b) -> np.ndarray:
    """``(units, 12)``: each unit's lane arrays (XL, XcL, ic, m on the data block ``a``; b,
    alpha on the recursion's block ``b``; then the same of its windows layout, see
    ``_ON_BLOCK``) as offsets from their block's first array.

    Each array must be a C-contiguous view whose root (``.base`` followed to the end) is
    its block; its offset is its address's distance from the block's, in float64s. One
    loop with the helpers inline: three calls per array were half a plan's cost (16 of
    32 us at 150 x 400, hot; 7.6 us now, 2026-12-02).

    Raises:
        ValueError: a unit's array is not carved from its block.
    """
    blocks = (block_a, block_b)
    at = (arenas.address(block_a), arenas.address(block_b))
    bases = (base_a, base_b)
    out = []
    view, address_of = ctypes.c_char.from_buffer, ctypes.addressof
    # where carve put each array (LaneLayout.carved): read there while the unit holds
    # that very array, on that block, C-contiguous (a view's data pointer never moves);
    # its address is read otherwise (24 reads were 20-40 us of a small fit, 2026-12-07)
    carved = getattr(layout, "carved", None) or {}
    for u, unit in enumerate(layout.units):
        rows = unit["kind"] == "rows"
        win = "win" in unit
        for name, k in _ON_BLOCK:
            if not win and name in _NO_WINDOWS:
                name = _NO_WINDOWS[name]
            if rows and name == "ic":  # the rows kernel's inv_c (R,), on the recursion's block
                name, k = "inv_c", 1
            a = root = unit[name]
            kept = carved.get((u, name))
            if kept is not None and kept[0] is a and kept[1] is blocks[k] and a.flags.c_contiguous:
                out.append(kept[2] - bases[k])
                continue
            while isinstance(root.base, np.ndarray):  # _root, inline
                root = root.base
            if root is not blocks[k] or not a.flags.c_contiguous:
                raise ValueError("not carved from the block")
            try:  # arenas.address, inline
                where = address_of(view(a))
            except (TypeError, ValueError, BufferError):  # read-only, or empty
                where = a.ctypes.data
            out.append((where - at[k]) // 8 - bases[k])
    return np.array(out, dtype=np.int64).reshape(-1, len(_ON_BLOCK))


def _offsets_hold(rel_ut: np.ndarray, layout, block_a, block_b, base_a, base_b) -> bool:
    """Whether a kept unit table's offsets are where this layout's arrays are, for every
    unit and array (not only the first unit's, whose place gives the bases).

    The compiled loop reads and writes every unit's arrays at these offsets with no
    bounds check, so a table kept from a layout carved another way would touch other
    arrays' memory without an error: the offsets are checked before a kept table is
    used (a few microseconds a fit).
    """
    if rel_ut.shape[0] != len(layout.units):
        return False
    try:
        now = _unit_offsets(layout, block_a, block_b, base_a, base_b)
    except ValueError:  # not carved from the blocks
        return False
    return _table_holds(rel_ut, now)


def _table_holds(rel_ut: np.ndarray, rel: np.ndarray) -> bool:
    """:func:`_offsets_hold` on offsets read already: ``rel`` ``(units, 6)``, each unit
    array's offset from its block's first array (:func:`_unit_offsets`)."""
    from tying.hmm import _numba_em

    # shapes first, then one comparison (np.array_equal's own checks cost more)
    if rel_ut.ndim != 2 or rel.shape != (rel_ut.shape[0], len(_ON_BLOCK)):
        return False
    return bool((rel_ut[:, _offset_columns(_numba_em)] == rel).all())


#: the unit tables of the last few (lane layout, K): they depend on the lengths, D, K
#: and the unit constants only (``LaneLayout.plan_key``), never on the data
_TABLES: collections.OrderedDict = collections.OrderedDict()
_TABLES_KEPT = 8
_TABLES_LOCK = threading.Lock()


#: the densities' (and their exp's) share of a lane unit's E-step, measured at K=8, D=4:
#: sizes the tail item for the first iteration; the compiled loop then resizes it from
#: the items' measured times (``_numba_em._rebalance``)
DENSITY_SHARE = 1 / 3


def _unit_tables(layout, block_a, block_b, base_a, base_b, balance):
    """The compiled loop's unit table (offsets relative to the arenas' first arrays), the
    units' integer arrays, each real lane's sequence, and the items threads claim (the
    units, costliest first; with ``balance`` and two units of unequal cost, first a tail
    item: see ``_numba_em``); None when a unit's arrays are not carved from the arenas.

    The tail item moves the densities of the costlier unit's last steps to the thread
    of the cheaper one, about half their difference: two units of 80 and 72 lanes (150
    sequences of 400 steps; lanes come in blocks of 8) scale at most 152/80 = 1.9x on
    two threads, about 1.95x with it. Densities are elementwise, so the bits do not change.
    """
    from tying.hmm import _numba_em

    U = len(layout.units)
    ut = np.zeros((U, _numba_em.U_COLS), dtype=np.int64)
    ints, slot_seq = [], []
    n_int = slot = 0
    try:
        ut[:, _offset_columns(_numba_em)] = _unit_offsets(layout, block_a, block_b, base_a, base_b)
    except ValueError:  # a layout not carved from one block per kind
        return None
    for u, unit in enumerate(layout.units):
        T, _, S = unit["XL"].shape
        n_real = len(unit["seqs"])
        ut[u, :3] = T, S, n_real
        ut[u, _numba_em.U_NACT] = n_int
        ut[u, _numba_em.U_LENS] = n_int + T
        ut[u, _numba_em.U_SLOT] = slot
        ut[u, _numba_em.U_START] = n_int + T + n_real
        ut[u, _numba_em.U_TAIL] = T
        if unit["kind"] == "rows":  # its sequences' lengths and starts from its first row
            lens = layout.lengths[unit["lo"] : unit["hi"]].astype(np.int64)
            ut[u, _numba_em.U_ROWS] = unit["r1"] - unit["r0"]
            ut[u, _numba_em.U_R0] = unit["r0"]
            ints += [unit["n_act"], lens, np.cumsum(lens) - lens]
            n_int += T + 2 * n_real
            if "win" in unit:  # its windows: n_act, the lanes' first rows of X, the plan
                win = unit["win"]
                Tw, Sw, nw = len(win["n_act"]), len(win["start"]), len(win["wlen"])
                ut[u, [_numba_em.U_WT, _numba_em.U_WS, _numba_em.U_WN]] = Tw, Sw, nw
                ut[u, _numba_em.U_WINTS] = n_int
                ints += [win["n_act"], win["start"]]
                ints += [win[k] for k in _numba_em.WIN_INTS]
                n_int += Tw + Sw + len(_numba_em.WIN_INTS) * nw
            slot_seq.append(unit["seqs"])
            slot += n_real
            continue
        ints += [unit["n_act"], unit["lens"], unit["start"]]
        n_int += T + n_real + S
        slot_seq.append(unit["seqs"])
        slot += n_real
    ints = np.ascontiguousarray(np.concatenate(ints), dtype=np.int64)
    slot_seq = np.ascontiguousarray(np.concatenate(slot_seq), dtype=np.int64)
    order = np.argsort(-np.asarray(layout.cost), kind="stable").astype(np.int64)
    # no tail item for a unit with windows: its E-step does not read the dealt densities
    if balance and U == 2 and ut[int(order[0]), _numba_em.U_WN] == 0:
        big, small = (int(u) for u in order)
        gap = layout.cost[big] - layout.cost[small]  # lane-steps
        T, S = int(ut[big, _numba_em.U_T]), int(ut[big, _numba_em.U_S])
        steps = min(T // 2, int(gap / (2 * S * DENSITY_SHARE)))
        if steps > 0:
            ut[big, _numba_em.U_TAIL] = T - steps
            order = np.concatenate([[-1 - big], order]).astype(np.int64)
    for a in (ut, ints, slot_seq, order):
        a.flags.writeable = False  # shared by every fit of this key
    return ut, ints, slot_seq, order


class FusedEM:
    """One restart's EM iterations in compiled code (see the module docstring).

    Use :meth:`for_model`; then ``with fused: history, failed = fused.run(...)``. Not public: :class:`~tying.hmm.GaussianHMM` uses it by itself.

    Args:
        model: the :class:`~tying.hmm.GaussianHMM` being fitted (its parameter
            arrays are updated in place).
        plan: what :meth:`_plan` made for this fit's data.
        fast: the compiled M-step's fixed arguments (``GaussianHMM._mstep_fast``).
    """

    def __init__(self, model, plan: dict, fast: tuple):
        kernels, K, D = self._adopt(model, plan)
        self.prec, self.const, self.logp = np.empty((K, D)), np.empty(K), np.empty((K, D))
        kernels.density_constants(
            model._covars, self.prec, self.const, self.logp, plan["fns"], plan["log2pi"]
        )
        learn, sp_prior, tp_prior, w, mu0, cp, cw = fast
        self._set_args(
            (self.prec, self.const),
            (learn, sp_prior, tp_prior, w, mu0, plan["center"], model._covars, cp, cw,
             float(model.min_covar), plan["empty"], plan["log2pi"], self.logp),
        )  # fmt: skip

    def _adopt(self, model, plan: dict) -> tuple:
        """Keep ``model`` and ``plan``; make the parameters the compiled loop updates in
        place C-contiguous float64 arrays of the model's own. Returns (kernels, K, D)."""
        self.model, self.plan = model, plan
        self._futures: list = []
        self._errors: list = []
        self._history = np.empty(0)
        for name in ("_startprob", "_transitions", "_means", "_covars"):
            setattr(model, name, np.array(getattr(model, name), dtype=np.float64, order="C"))
        return plan["kernels"], model.n_components, model.n_features_

    def _set_args(self, density: tuple, mstep: tuple) -> None:
        """The control array, and the compiled calls' arguments: a worker's (the units'
        data, the parameters and ``density``, the density's arrays) and an iteration's
        (those, the sums, and ``mstep``, the M-step's settings and outputs)."""
        plan, model = self.plan, self.model
        kernels = plan["kernels"]
        self.ctl = np.zeros(kernels.CTL_SIZE + len(plan["order"]), dtype=np.int64)
        self.ctl[kernels.CLAIM] = len(plan["order"])  # nothing to claim yet
        self.layout = plan["layout"]
        # lanes not copied yet are copied by the thread whose E-step needs them first
        self._worker_args = (
            self.ctl, plan["order"], self.layout.fill_state, self.layout.X, self.layout.center,
            plan["ut"], plan["block_a"], plan["block_b"], plan["ints"],
            model._startprob, model._transitions, model._means, *density,
            plan["fns"], plan["ll_u"], plan["bad_u"], plan["xi_u"], plan["first_u"],
            plan["n_u"], plan["sx_u"], plan["sxx_u"],
        )  # fmt: skip
        self._step_args = self._worker_args + (
            plan["slot_seq"], plan["ll"], plan["xi"], plan["first"], plan["nsum"],
            plan["sx"], plan["sxx"], *mstep,
        )  # fmt: skip

    #: where a fit's context keeps this loop's plan (False: the loop cannot run this fit)
    _PLAN_KEY = "fused_plan"
    #: False when the start parameters cannot seed this loop (the general loop then runs)
    ready = True

    @classmethod
    def for_model(cls, model, context, fast) -> FusedEM | None:
        """The compiled loop for this restart of ``model``, or None when the general
        loop must run (see the module docstring for when)."""
        kernels = compiled._kernels()
        if kernels is None or fast is None or "layout" not in context:
            return None
        plan = context.get(cls._PLAN_KEY)
        if plan is None:
            plan = context[cls._PLAN_KEY] = cls._plan(model, context, kernels) or False
        if plan is False:
            return None
        fused = cls(model, plan, fast)
        return fused if fused.ready else None

    @staticmethod
    def _plan(model, context, kernels) -> dict | None:
        """The fit's unit table and per-unit outputs (data-dependent only: once per fit)."""
        from tying.hmm import _numba_em
        from tying.hmm.gaussian import _EMPTY, _LOG_2PI

        fns = _fns(_numba_em)
        layout = context["layout"]
        K, D = model.n_components, model.n_features_
        if fns is None or K > 128 or D > 128:
            return None
        layout.prepare(K)
        block_a = _root(layout.units[0]["XL"])
        block_b = _root(layout.units[0]["b"])
        try:  # every unit array's place in its block, read once (each read is about 1.5 us)
            now = _unit_offsets(layout, block_a, block_b, 0, 0)
        except ValueError:  # a layout not carved from one block per kind
            return None
        # where the arenas' first arrays start (their alignment differs per allocation)
        base_a, base_b = int(now[0, 0]), int(now[0, 4])
        rel = now - np.where(_unit_blocks(layout) == 0, base_a, base_b)
        cols = _offset_columns(_numba_em)
        # the tail item only where a second thread can take it (it adds a few loop
        # starts: one thread runs without it)
        balance = compiled.resolve_n_jobs(model.n_jobs) > 1
        key = (layout.plan_key, K, balance)
        with _TABLES_LOCK:
            tables = _TABLES.get(key)
            if tables is not None:
                _TABLES.move_to_end(key)
        # a kept table is read by its offsets only where they are this layout's, for every
        # unit and array (see _offsets_hold)
        if tables is not None and not _table_holds(tables[0], rel):
            tables = None  # carved otherwise than when it was kept: never read by its offsets
        if tables is None:
            tables = _unit_tables(layout, block_a, block_b, base_a, base_b, balance)
            if tables is None:
                return None
            with _TABLES_LOCK:
                _TABLES[key] = tables
                while len(_TABLES) > _TABLES_KEPT:
                    _TABLES.popitem(last=False)
        rel_ut, ints, slot_seq, order = tables
        ut = rel_ut.copy()
        ut[:, cols] = now  # the same as the kept offsets plus the bases
        U = len(layout.units)
        n_seq = len(layout.lengths)
        return {
            "kernels": _numba_em, "fns": fns, "ut": ut, "layout": layout,
            "block_a": block_a, "block_b": block_b,
            "ints": ints, "slot_seq": slot_seq, "order": order,
            "ll_u": np.empty(n_seq), "bad_u": np.zeros(n_seq, dtype=np.bool_),
            "xi_u": np.empty((U, K, K)), "first_u": np.empty((U, K)), "n_u": np.empty((U, K)),
            "sx_u": np.empty((U, D, K)), "sxx_u": np.empty((U, D, 1, K)),
            "ll": np.empty(n_seq), "xi": np.empty((K, K)), "first": np.empty(K),
            "nsum": np.empty(K), "sx": np.empty((K, D)), "sxx": np.empty((K, D)),
            "center": np.ascontiguousarray(context["center"], dtype=np.float64),
            "empty": float(_EMPTY), "log2pi": float(_LOG_2PI),
            "n_jobs": compiled.resolve_n_jobs(model.n_jobs),
        }  # fmt: skip

    # ------------------------------------------------------------ threads
    def _work(self) -> None:
        try:
            self.plan["kernels"].worker(*self._worker_args)
        except BaseException as err:  # the caller re-raises it
            self._errors.append(err)
            self.ctl[self.plan["kernels"].DEAD] = 1
            self.layout.fill_state[-1] = 1  # no thread waits for a copy this one held
            raise

    def __enter__(self) -> FusedEM:
        kernels = self.plan["kernels"]
        compiled.notice_cold_compile(kernels.em_run, f"the EM loop ({kernels.__name__})")
        n_help = min(self.plan["n_jobs"], len(self.plan["ut"])) - 1  # units, not items
        if n_help > 0:
            # the helper copies the lanes of the units this thread takes last, then joins
            # the loop (one pool, first in, first out). Started here, not while the fit
            # sets up: a pool thread needs the GIL to start, and it took it from the
            # fitting thread at its first release mid-setup (a compiled call), 30-50 us
            # a fit, while the copy itself began as the loop did either way (stop 22)
            self.layout.start_fill(self.plan["n_jobs"])
            pool = compiled._pool(n_help, "tying-hmm-em")
            self._futures = [pool.submit(self._work) for _ in range(n_help)]
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.ctl[self.plan["kernels"].STOP] = 1
        self.layout.stop_fill()  # a copy queued behind busy pool threads: never needed now
        # a helper that never started (its pool busy) is cancelled, not waited for (a
        # cancelled future counts as done only once a pool thread has dequeued it)
        running = [f for f in self._futures if not f.cancel()]
        # they leave their compiled loop at their next check of ctl; waiting for that in
        # compiled code is quicker than for the futures (0.36 ms per fit, a thread wake-up)
        if running:  # (none: nothing to wait for, and no compiled call's dispatch)
            self.plan["kernels"].wait_left(self.ctl, len(running), self.plan["fns"])
        self._futures = []
        if exc_type is None:
            self._raise_helper_error()

    def _raise_helper_error(self) -> None:
        if self._errors or self.ctl[self.plan["kernels"].DEAD]:
            err = self._errors[0] if self._errors else RuntimeError("an EM helper thread died")
            raise err

    def run(self, n_max: int, tol: float, prev: float) -> tuple[list[float], bool]:
        """Up to ``n_max`` EM iterations in one compiled call, until the gain of the
        total log-likelihood over the one before (``prev``, NaN: none) falls below
        ``tol``, or for about ``BATCH_CYCLES`` CPU cycles (so Ctrl-C is seen between
        calls).

        Returns:
            Each iteration's total log-likelihood (its M-step has run), and whether the
            rest of the fit must run on the general loop: a sequence's scaling failed
            (nothing of that iteration changed the model), or (full and tied loop) the
            last M-step left a covariance with no Cholesky factor.

        Raises:
            Exception: whatever a helper thread raised (the parameters may then be
                half-updated: ``fit`` puts the model back).
        """
        history = self._history
        if len(history) < n_max:
            history = self._history = np.empty(n_max)
        count, status = self.plan["kernels"].em_run(
            n_max, float(tol), float(prev), BATCH_CYCLES, history, *self._step_args
        )
        self._raise_helper_error()  # also when the caller finished every unit itself
        if not self.layout.filled and (self.layout.fill_state[:-1] == 2).all():
            self.layout.filled = True  # an E-step ran: every unit's lanes were copied
        # a helper's death (status -1) has raised above: any other code hands over
        return history[:count].tolist(), status != 0
