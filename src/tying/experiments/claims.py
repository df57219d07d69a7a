"""Every claim of CLAIMS.md in one table: the registry reads each experiment's text from here.

This is the one place a claim's words live in the code. ``@experiment("param-counts")``
takes the id only; its title, claim sentence, what the check shows, and the seed
chapter that states it all come from the row below. ``CLAIMS.md`` lives in
``../shared``, which a clean checkout may not have, so the table is a copy of it;
``tests/experiments/test_claims.py`` fails on any difference of wording (whenever
CLAIMS.md is present) and on any registered experiment without a row here.

A *chapter* is one of the five seed documents (``000`` … ``004``) that state the
claims; it is never called a "seed" here, because a seed is an RNG seed.
"""

from __future__ import annotations

import dataclasses

__all__ = ["CHAPTER_FILES", "CLAIMS", "EXTRA_CLAIMS", "Claim", "claim_for", "in_claim_order"]

#: Chapter code -> file name in ``../shared/seeds/``.
CHAPTER_FILES: dict[str, str] = {
    "000": "000_524455eee584ad55.txt",
    "001": "001_ecb5d284961b3c6e.txt",
    "002": "002_4e1b3c27574a213d.txt",
    "003": "003_b6d2e640cf93b843.txt",
    "004": "004_5ae1fe8539be42b0.txt",
}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of CLAIMS.md, plus the title and chapter its experiment is shown with.

    Attributes:
        code: the claim's number, e.g. ``"A1"``.
        id: the stable experiment id, e.g. ``"param-counts"``.
        section: the CLAIMS.md section, e.g. ``"A. Principles"``.
        chapters: the chapter codes CLAIMS.md gives for the section.
        chapter: the one chapter that states this claim (one of ``chapters``).
        title: a short title for the report and ``tying list``.
        claim: the claim, word for word as CLAIMS.md states it.
        shows: what the experiment's check asserts, word for word from CLAIMS.md.
    """

    code: str
    id: str
    section: str
    chapters: tuple[str, ...]
    chapter: str
    title: str
    claim: str
    shows: str


CLAIMS: tuple[Claim, ...] = (
    Claim(
        code="A1",
        id="param-counts",
        section="A. Principles",
        chapters=("003",),
        chapter="003",
        title="What sharing saves: parameter counts",
        claim="A fully connected layer from a 32×32×3 input to a same-size output needs (32·32·3)² ≈ 9.4 M weights, i.e. H²W²cc'; a locally connected 3×3 layer needs one filter per position; a 3×3 conv 3→16 needs 16·(3·3·3+1) = 448.",
        shows="exact counts from the real layers, matching the formulas",
    ),
    Claim(
        code="A2",
        id="conv-is-tied-lc",
        section="A. Principles",
        chapters=("003",),
        chapter="003",
        title="A conv layer is a tied locally connected layer",
        claim="A conv layer is a locally connected layer with all per-position filters tied.",
        shows="tying an `LocallyConnected2d`'s filters gives the same outputs and gradients as `Conv2d` with that filter",
    ),
    Claim(
        code="A3",
        id="sample-efficiency",
        section="A. Principles",
        chapters=("003",),
        chapter="003",
        title="Sharing pools evidence: images needed, shared vs unshared",
        claim="Sharing pools every position's evidence: in the seed's thought experiment the unshared layer needs ~7,600 images where the shared one needs ~10 for the same filter error.",
        shows="filter-estimation error vs number of images for both; ratio of images needed ≈ number of positions",
    ),
    Claim(
        code="A4",
        id="motif-scan",
        section="A. Principles",
        chapters=("003",),
        chapter="003",
        title="A conv + global max pool finds a motif anywhere",
        claim="A 1-D conv + global max pool finds a DNA motif (e.g. GATTACA) wherever it sits (translation invariance).",
        shows="high accuracy on held-out positions never seen in training",
    ),
    Claim(
        code="A5",
        id="rnn-unrolled",
        section="A. Principles",
        chapters=("003",),
        chapter="003",
        title="An RNN is a deep net with one shared weight set",
        claim="An RNN unrolled in time is a deep feed-forward net whose layers share one weight set.",
        shows="an unrolled tied MLP equals the RNN output exactly",
    ),
    Claim(
        code="A6",
        id="landscape-symmetry",
        section="A. Principles",
        chapters=("003",),
        chapter="003",
        title="Sharing prunes the symmetries of the loss landscape",
        claim="A hidden layer of K neurons has K! equivalent minima (48! for 48); a conv layer's symmetry unit is the filter: F! (3! = 6); sharing also removes continuous flat directions.",
        shows="count and verify the permutation symmetries; Hessian null-space dimension with and without sharing",
    ),
    Claim(
        code="B1",
        id="translation-equivariance",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="000",
        title="Conv layers commute with shifts",
        claim="Conv layers are translation equivariant: shifting the input shifts the output.",
        shows="exact equivariance error ≈ 0 (circular padding)",
    ),
    Claim(
        code="B2",
        id="c4-equivariance",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="000",
        title="Rotated copies of one kernel make a rotation-equivariant conv",
        claim="A group conv whose 4 kernels are rotated copies of one learned kernel (C4) is rotation equivariant: rotating the input rotates and cyclically permutes the orientation channels; independent kernels lose this.",
        shows="equivariance error ≈ 0 for tied, large for untied",
    ),
    Claim(
        code="B3",
        id="c4-sample-efficiency",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="001",
        title="Rotation tying saves samples on rotation-symmetric data",
        claim="On rotation-symmetric data a C4-tied model learns with far fewer samples than an unconstrained one.",
        shows="accuracy vs training-set size, both models",
    ),
    Claim(
        code="B4",
        id="symmetric-filter",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="001",
        title="A palindromic filter is deaf to antisymmetric noise",
        claim="A palindromic 1-D filter (w[i] = w[-i]) passes symmetric signals and is deaf to antisymmetric noise.",
        shows="response to antisymmetric noise = 0; denoising error vs an untied filter",
    ),
    Claim(
        code="B5",
        id="bptt-sum",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="001",
        title="The gradient of a shared weight is the sum over its uses",
        claim="The gradient of a weight shared over time (or over Siamese towers, or layers) is the sum of its per-use gradients.",
        shows="autograd gradient == sum of per-use gradients, for RNN, Siamese and cross-layer tying",
    ),
    Claim(
        code="B6",
        id="rnn-identifiability",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="002",
        title="One tied W is identified; a W per step is not",
        claim="Linear system x[t+1] = W x[t] + U u[t]: a separate W_t per step is underdetermined; one tied W is identified exactly when the state matrix has full rank.",
        shows="least-squares recovers W (error ≈ 0); untied problem's rank deficit",
    ),
    Claim(
        code="B7",
        id="siamese",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="000",
        title="Siamese towers: one function for both inputs",
        claim="Two towers with tied parameters map both inputs into one space, so distances compare like with like (signature-style verification).",
        shows="verification accuracy; gradients of both towers land in one tensor",
    ),
    Claim(
        code="B8",
        id="cross-layer-sharing",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="001",
        title="Tied layers: a wider layer for the same budget, and an ODE in the limit",
        claim="Tying all layers (ALBERT-style) lets the same parameter budget buy a wider layer; in the limit of many tiny shared steps the net is a neural ODE whose vector field is the shared layer.",
        shows="params at equal width; accuracy at equal budget; tied residual net converges to ODE solution as depth grows",
    ),
    Claim(
        code="B9",
        id="kv-sharing",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="002",
        title="K/V sharing across heads: parameters and reachable outputs",
        claim="Sharing W_V across heads (and K/V across heads: MQA/GQA) cuts parameters; the rank of the map from parameters to outputs measures what expressiveness is lost.",
        shows="parameter counts; rank analysis of the reachable output space",
    ),
    Claim(
        code="B10",
        id="encdec-kv-sharing",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="000",
        title="One K/V geometry for encoder, decoder and cross-attention: parameters, cost, copying",
        claim='Sharing W_K, W_V across encoder self-attention, decoder self-attention and cross-attention removes two thirds of those projections and forces one feature geometry. The seeds present it as a trade-off with "no simple answer" (seed 000): the shared geometry is said to help alignment and copying (names, dates), at a cost in expressiveness where the attentions need different geometries.',
        shows='(1) parameters removed, exact; (2) the cost: on a task where encoder self-attention and cross-attention need different geometries, shared K/V is worse than separate by more than 2 paired standard errors; (3) copying at small data: the paired-seed difference shared − separate with its ±2 s.e. interval, resolved to a half-width ≤ 0.05; the report says in words whether "helps copying" is reproduced (interval above 0), contradicted (below 0) or neither. The check is (1) and (2) and (3) resolved — a measured contradiction is reported as one, never tuned away.',
    ),
    Claim(
        code="B11",
        id="lstm-tied-gates",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="002",
        title="LSTM with W_f = W_i = W_o",
        claim="Tying the input weights of the forget, input and output gates (W_f = W_i = W_o) is a regulariser that costs expressiveness.",
        shows="params; train/test gap vs an untied LSTM",
    ),
    Claim(
        code="B12",
        id="gnn-hops",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="001",
        title="One transform for every hop",
        claim="A multi-hop GNN can use one shared transform with a learned scalar per hop instead of one module per hop.",
        shows="params; accuracy on a graph task vs per-hop modules",
    ),
    Claim(
        code="B13",
        id="tied-unet",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="001",
        title="A U-Net with decoder filters tied to the encoder's",
        claim="A U-Net whose decoder filters are tied to the encoder's (transposed) keeps segmentation quality with fewer parameters.",
        shows="params; soft-IoU on a synthetic segmentation task",
    ),
    Claim(
        code="B14",
        id="pinn-periodic",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="000",
        title="Periodic PINN: hard features vs a shared boundary network",
        claim="A PINN fed sin(2πx/L), cos(2πx/L) is exactly periodic (hard constraint); a shared boundary sub-network enforces it softly.",
        shows="boundary mismatch: 0 (to float precision) for hard, small for soft; PDE residual",
    ),
    Claim(
        code="B15",
        id="tied-init",
        section="B. Sharing in neural architectures",
        chapters=("000", "001", "002"),
        chapter="002",
        title="Initialising shared weights: fan-in is per output unit",
        claim="Xavier/He fan_in counts the inputs of ONE output unit (kernel area × in-channels; input + hidden for an RNN) and is not multiplied by how often a weight is reused.",
        shows="the library's fan_in for shared layers; activation variance stays ≈ 1 through depth",
    ),
    Claim(
        code="C1",
        id="cnn-as-pgm",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="A trained conv filter is the least-squares filter over all patches",
        claim="A conv layer is a PGM whose local factors share w; under a linear-Gaussian model the ML estimate of w is least squares over all patches.",
        shows="learned conv filter == closed-form least-squares filter",
    ),
    Claim(
        code="C2",
        id="tied-autoencoder-pca",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="A tied linear autoencoder is PCA",
        claim="A linear autoencoder with W_dec = W_encᵀ learns the top-k principal subspace; with isotropic noise its best error equals the untied one.",
        shows="subspace angle to PCA ≈ 0; equal reconstruction error",
    ),
    Claim(
        code="C3",
        id="hmm-tied-emissions",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="Tied HMM emissions pool Baum-Welch statistics",
        claim="Tying emission parameters of HMM states that behave alike (allophones; coding-region states) pools their Baum-Welch statistics; transition updates are unchanged.",
        shows="tied fit recovers shared means with lower error than untied at small data; EM log-likelihood never decreases",
    ),
    Claim(
        code="C4",
        id="pair-hmm-symmetry",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="001",
        title="A pair HMM with tied insert states is symmetric in x and y",
        claim="A pair HMM with tied insert-X / insert-Y states scores an alignment of (x, y) the same as of (y, x).",
        shows="forward log-likelihood symmetric to float precision; Viterbi alignments mirror",
    ),
    Claim(
        code="C5",
        id="joint-refinement",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="000",
        title="Joint refinement of two diffraction patterns (Rietveld)",
        claim="Refining two diffraction data sets from two instruments jointly, with the crystal's parameters tied and each instrument's own (zero shift, peak width) free, is the physically right fit (Rietveld).",
        shows="recovered shared parameters with smaller error than separate fits; covariance reported",
    ),
    Claim(
        code="C6",
        id="multitask",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="Multi-task learning: hard and soft sharing on one dial",
        claim="Hard sharing (shared trunk, own heads) and soft sharing via a task-graph Laplacian penalty λ/2 Σ‖θi−θj‖² sit at the two ends of one dial.",
        shows="test error vs λ, and vs independent / fully shared models",
    ),
    Claim(
        code="C7",
        id="meta-fast-slow",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="Meta-learning: slow shared weights, fast per-task weights",
        claim="Slow weights shared across tasks plus a few fast weights adapted per task give few-shot learning.",
        shows="few-shot accuracy vs training from scratch",
    ),
    Claim(
        code="C8",
        id="hashednets",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="HashedNets: perplexity as the bucket count shrinks",
        claim="HashedNets: a V×V matrix stored in B ≪ V² buckets, h(i,j) = (i·V + j) mod B (or a real hash); perplexity degrades as B shrinks.",
        shows="perplexity vs B curve on a small language model",
    ),
    Claim(
        code="C9",
        id="smirks-typing",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="SMIRKS typing: the last match wins, with far fewer parameters",
        claim='Force fields: atom types explode combinatorially; SMIRKS patterns with "the last (most specific) match wins" assign bond/angle/torsion parameters with far fewer parameters.',
        shows="parameters assigned to real molecules from a real OpenFF force field; unique parameters used vs atom-type pairs",
    ),
    Claim(
        code="D1",
        id="soft-iou-dice",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="Soft IoU and soft Dice: both train, their gradients differ for small objects",
        claim="Soft IoU and soft Dice are differentiable stand-ins for IoU; their gradients differ, most for small objects.",
        shows="both losses train a segmenter; gradient magnitude vs object size",
    ),
    Claim(
        code="D2",
        id="bn-vs-gn",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="BatchNorm vs GroupNorm at batch size 2",
        claim="BatchNorm with batch size 2 has noisy statistics and a train/eval gap; GroupNorm does not depend on the batch.",
        shows="eval accuracy at batch 2 for BN vs GN",
    ),
    Claim(
        code="D3",
        id="ctc",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="CTC: the blank phase, and greedy vs beam decoding",
        claim="CTC sums over all alignments with a blank symbol by dynamic programming; early training can collapse to blanks; beam search at inference differs from the training loss.",
        shows="CTC training on synthetic sequences; blank ratio over training; greedy vs beam decoding",
    ),
    Claim(
        code="D4",
        id="pinn-optimizers",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="PINN optimisers: Adam is robust, L-BFGS is sharp",
        claim="For PINNs, Adam is robust, L-BFGS is sharper but sensitive to noise.",
        shows="final error of both, with and without noisy data",
    ),
    Claim(
        code="D5",
        id="mechanistic-vs-deep",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="Mechanistic (thermodynamic) vs deep model of promoter strength",
        claim="A deep model wins in distribution but can collapse out of distribution, where a mechanistic (thermodynamic) model with the right causal structure generalises.",
        shows="in- and out-of-distribution error of both",
    ),
    Claim(
        code="D6",
        id="network-motifs",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="Training selects feed-forward loops",
        claim="Motif analysis of a trained RNN's connectivity (feed-forward loops) against degree-preserving random graphs shows which circuits training selected.",
        shows="FFL z-score before vs after training",
    ),
    Claim(
        code="D7",
        id="symmetry-breaking",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="Identical initial weights are an accidental tie",
        claim="Identical initial weights are an accidental tie: the neurons get identical gradients forever; random init breaks it (as in O₂'s broken-symmetry SCF guess).",
        shows="neurons stay identical under constant init; the library's detector finds such accidental ties",
    ),
    Claim(
        code="D8",
        id="gan-clipping",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="Gradient clipping turns a rotating GAN flow toward convergence",
        claim="Gradient clipping turns the rotating min-max flow of a GAN toward convergence.",
        shows="distance to equilibrium over steps, with and without clipping",
    ),
    Claim(
        code="D9",
        id="concept-drift",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="Concept drift: detect the jump in validation loss, then reset",
        claim="A sustained jump in validation loss signals drift; then retrain or reset the optimizer.",
        shows="detection delay and false alarms on a drifting stream",
    ),
    Claim(
        code="D10",
        id="dp-sgd",
        section="D. Training",
        chapters=("004",),
        chapter="004",
        title="DP-SGD with tied weights, and the privacy budget counted right",
        claim="DP-SGD clips each example's gradient and adds Gaussian noise; the (ε, δ) budget must be accounted correctly: a wrong composition rule overstates privacy by orders of magnitude.",
        shows="ε from a correct accountant vs naive composition; training with DP on a model with tied weights (per-example gradients summed over every use of a tied weight)",
    ),
)

#: Experiments the issues asked for beyond CLAIMS.md (not claims of the chapters): each
#: sits beside the claim it extends, and the report marks it as an extension.
EXTRA_CLAIMS: tuple[Claim, ...] = (
    Claim(
        code="C8+",
        id="hashed-recsys",
        section="C. Statistical models",
        chapters=("000", "001", "002"),
        chapter="002",
        title="Hashed embeddings at recommender scale: AUC vs memory",
        claim=(
            "Beyond CLAIMS.md (issue 18): block hashing (ROBE-Z) keeps a click-through "
            "model's held-out AUC within 0.02 of dense embedding tables at 1/100 of their "
            "memory (synthetic task; the margin and the task's Zipf exponent were set after "
            "a first failing run, see docs/hashed.md)."
        ),
        shows=(
            "AUC vs memory for dense, per-entry, block (ROBE-Z and aligned sparse, signed and "
            "unsigned) and QR embeddings; training throughput"
        ),
    ),
)

_BY_ID = {c.id: c for c in (*CLAIMS, *EXTRA_CLAIMS)}


def claim_for(id: str) -> Claim | None:
    """Return the CLAIMS.md row of experiment ``id``, or None when it has none.

    Example:
        >>> claim_for("param-counts").code
        'A1'
        >>> claim_for("no-such-claim") is None
        True
    """
    return _BY_ID.get(id)


def in_claim_order(ids: list[str]) -> list[str]:
    """``ids`` sorted as CLAIMS.md lists them; ids it does not list go last, in order.

    Example:
        >>> in_claim_order(["bptt-sum", "extra-one", "param-counts"])
        ['param-counts', 'bptt-sum', 'extra-one']
    """
    order = list(CLAIMS)
    for extra in EXTRA_CLAIMS:  # right after the claim it extends (C8+ after C8)
        parent = next(i for i, c in enumerate(order) if c.code == extra.code.rstrip("+"))
        order.insert(parent + 1, extra)
    rank = {c.id: i for i, c in enumerate(order)}
    return sorted(ids, key=lambda i: rank.get(i, len(rank)))
