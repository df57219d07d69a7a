"""Every claim of CLAIMS.md, copied here so that the report can list what is missing.

``CLAIMS.md`` lives in ``../shared``, which a clean checkout may not have; the report
needs every claim id and sentence to show claims that have no registered experiment
yet as "not yet implemented" rows. Keep this table in step with CLAIMS.md when a
claim is added or reworded (``tests/experiments/test_claims.py`` checks it against
CLAIMS.md whenever that file is present).
"""

from __future__ import annotations

import dataclasses

__all__ = ["CLAIMS", "SEED_FILES", "Claim", "claim_for", "in_claim_order"]

#: Seed chapter code -> file name in ``../shared/seeds/``.
SEED_FILES: dict[str, str] = {
    "000": "000_524455eee584ad55.txt",
    "001": "001_ecb5d284961b3c6e.txt",
    "002": "002_4e1b3c27574a213d.txt",
    "003": "003_b6d2e640cf93b843.txt",
    "004": "004_5ae1fe8539be42b0.txt",
}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of CLAIMS.md.

    Attributes:
        code: the claim's number, e.g. ``"A1"``.
        id: the stable experiment id, e.g. ``"param-counts"``.
        section: the CLAIMS.md section, e.g. ``"A. Principles"``.
        claim: the claim as CLAIMS.md states it.
        shows: what the experiment's check asserts.
        seeds: seed chapter codes of its section.
    """

    code: str
    id: str
    section: str
    claim: str
    shows: str
    seeds: tuple[str, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "A1",
        "param-counts",
        "A. Principles",
        "A fully connected layer from a 32×32×3 input to a same-size output needs (32·32·3)² ≈ 9.4 M weights, i.e. H²W²cc'; a locally connected 3×3 layer needs one filter per position; a 3×3 conv 3→16 needs 16·(3·3·3+1) = 448.",
        "exact counts from the real layers, matching the formulas",
        ("003",),
    ),
    Claim(
        "A2",
        "conv-is-tied-lc",
        "A. Principles",
        "A conv layer is a locally connected layer with all per-position filters tied.",
        "tying an `LocallyConnected2d`'s filters gives the same outputs and gradients as `Conv2d` with that filter",
        ("003",),
    ),
    Claim(
        "A3",
        "sample-efficiency",
        "A. Principles",
        "Sharing pools every position's evidence: in the seed's thought experiment the unshared layer needs ~7,600 images where the shared one needs ~10 for the same filter error.",
        "filter-estimation error vs number of images for both; ratio of images needed ≈ number of positions",
        ("003",),
    ),
    Claim(
        "A4",
        "motif-scan",
        "A. Principles",
        "A 1-D conv + global max pool finds a DNA motif (e.g. GATTACA) wherever it sits (translation invariance).",
        "high accuracy on held-out positions never seen in training",
        ("003",),
    ),
    Claim(
        "A5",
        "rnn-unrolled",
        "A. Principles",
        "An RNN unrolled in time is a deep feed-forward net whose layers share one weight set.",
        "an unrolled tied MLP equals the RNN output exactly",
        ("003",),
    ),
    Claim(
        "A6",
        "landscape-symmetry",
        "A. Principles",
        "A hidden layer of K neurons has K! equivalent minima (48! for 48); a conv layer's symmetry unit is the filter: F! (3! = 6); sharing also removes continuous flat directions.",
        "count and verify the permutation symmetries; Hessian null-space dimension with and without sharing",
        ("003",),
    ),
    Claim(
        "B1",
        "translation-equivariance",
        "B. Sharing in neural architectures",
        "Conv layers are translation equivariant: shifting the input shifts the output.",
        "exact equivariance error ≈ 0 (circular padding)",
        ("000", "001", "002"),
    ),
    Claim(
        "B2",
        "c4-equivariance",
        "B. Sharing in neural architectures",
        "A group conv whose 4 kernels are rotated copies of one learned kernel (C4) is rotation equivariant: rotating the input rotates and cyclically permutes the orientation channels; independent kernels lose this.",
        "equivariance error ≈ 0 for tied, large for untied",
        ("000", "001", "002"),
    ),
    Claim(
        "B3",
        "c4-sample-efficiency",
        "B. Sharing in neural architectures",
        "On rotation-symmetric data a C4-tied model learns with far fewer samples than an unconstrained one.",
        "accuracy vs training-set size, both models",
        ("000", "001", "002"),
    ),
    Claim(
        "B4",
        "symmetric-filter",
        "B. Sharing in neural architectures",
        "A palindromic 1-D filter (w[i] = w[-i]) passes symmetric signals and is deaf to antisymmetric noise.",
        "response to antisymmetric noise = 0; denoising error vs an untied filter",
        ("000", "001", "002"),
    ),
    Claim(
        "B5",
        "bptt-sum",
        "B. Sharing in neural architectures",
        "The gradient of a weight shared over time (or over Siamese towers, or layers) is the sum of its per-use gradients.",
        "autograd gradient == sum of per-use gradients, for RNN, Siamese and cross-layer tying",
        ("000", "001", "002"),
    ),
    Claim(
        "B6",
        "rnn-identifiability",
        "B. Sharing in neural architectures",
        "Linear system x[t+1] = W x[t] + U u[t]: a separate W_t per step is underdetermined; one tied W is identified exactly when the state matrix has full rank.",
        "least-squares recovers W (error ≈ 0); untied problem's rank deficit",
        ("000", "001", "002"),
    ),
    Claim(
        "B7",
        "siamese",
        "B. Sharing in neural architectures",
        "Two towers with tied parameters map both inputs into one space, so distances compare like with like (signature-style verification).",
        "verification accuracy; gradients of both towers land in one tensor",
        ("000", "001", "002"),
    ),
    Claim(
        "B8",
        "cross-layer-sharing",
        "B. Sharing in neural architectures",
        "Tying all layers (ALBERT-style) lets the same parameter budget buy a wider layer; in the limit of many tiny shared steps the net is a neural ODE whose vector field is the shared layer.",
        "params at equal width; accuracy at equal budget; tied residual net converges to ODE solution as depth grows",
        ("000", "001", "002"),
    ),
    Claim(
        "B9",
        "kv-sharing",
        "B. Sharing in neural architectures",
        "Sharing W_V across heads (and K/V across heads: MQA/GQA) cuts parameters; the rank of the map from parameters to outputs measures what expressiveness is lost.",
        "parameter counts; rank analysis of the reachable output space",
        ("000", "001", "002"),
    ),
    Claim(
        "B10",
        "encdec-kv-sharing",
        "B. Sharing in neural architectures",
        "Sharing W_K, W_V across encoder self-attention, decoder self-attention and cross-attention makes one feature geometry that helps copying (names, dates) at some cost in expressiveness.",
        "copy-task accuracy vs untied, at small data",
        ("000", "001", "002"),
    ),
    Claim(
        "B11",
        "lstm-tied-gates",
        "B. Sharing in neural architectures",
        "Tying the input weights of the forget, input and output gates (W_f = W_i = W_o) is a regulariser that costs expressiveness.",
        "params; train/test gap vs an untied LSTM",
        ("000", "001", "002"),
    ),
    Claim(
        "B12",
        "gnn-hops",
        "B. Sharing in neural architectures",
        "A multi-hop GNN can use one shared transform with a learned scalar per hop instead of one module per hop.",
        "params; accuracy on a graph task vs per-hop modules",
        ("000", "001", "002"),
    ),
    Claim(
        "B13",
        "tied-unet",
        "B. Sharing in neural architectures",
        "A U-Net whose decoder filters are tied to the encoder's (transposed) keeps segmentation quality with fewer parameters.",
        "params; soft-IoU on a synthetic segmentation task",
        ("000", "001", "002"),
    ),
    Claim(
        "B14",
        "pinn-periodic",
        "B. Sharing in neural architectures",
        "A PINN fed sin(2πx/L), cos(2πx/L) is exactly periodic (hard constraint); a shared boundary sub-network enforces it softly.",
        "boundary mismatch: 0 (to float precision) for hard, small for soft; PDE residual",
        ("000", "001", "002"),
    ),
    Claim(
        "B15",
        "tied-init",
        "B. Sharing in neural architectures",
        "Xavier/He fan_in counts the inputs of ONE output unit (kernel area × in-channels; input + hidden for an RNN) and is not multiplied by how often a weight is reused.",
        "the library's fan_in for shared layers; activation variance stays ≈ 1 through depth",
        ("000", "001", "002"),
    ),
    Claim(
        "C1",
        "cnn-as-pgm",
        "C. Statistical models",
        "A conv layer is a PGM whose local factors share w; under a linear-Gaussian model the ML estimate of w is least squares over all patches.",
        "learned conv filter == closed-form least-squares filter",
        ("000", "001", "002"),
    ),
    Claim(
        "C2",
        "tied-autoencoder-pca",
        "C. Statistical models",
        "A linear autoencoder with W_dec = W_encᵀ learns the top-k principal subspace; with isotropic noise its best error equals the untied one.",
        "subspace angle to PCA ≈ 0; equal reconstruction error",
        ("000", "001", "002"),
    ),
    Claim(
        "C3",
        "hmm-tied-emissions",
        "C. Statistical models",
        "Tying emission parameters of HMM states that behave alike (allophones; coding-region states) pools their Baum-Welch statistics; transition updates are unchanged.",
        "tied fit recovers shared means with lower error than untied at small data; EM log-likelihood never decreases",
        ("000", "001", "002"),
    ),
    Claim(
        "C4",
        "pair-hmm-symmetry",
        "C. Statistical models",
        "A pair HMM with tied insert-X / insert-Y states scores an alignment of (x, y) the same as of (y, x).",
        "forward log-likelihood symmetric to float precision; Viterbi alignments mirror",
        ("000", "001", "002"),
    ),
    Claim(
        "C5",
        "joint-refinement",
        "C. Statistical models",
        "Refining two diffraction data sets from two instruments jointly, with the crystal's parameters tied and each instrument's own (zero shift, peak width) free, is the physically right fit (Rietveld).",
        "recovered shared parameters with smaller error than separate fits; covariance reported",
        ("000", "001", "002"),
    ),
    Claim(
        "C6",
        "multitask",
        "C. Statistical models",
        "Hard sharing (shared trunk, own heads) and soft sharing via a task-graph Laplacian penalty λ/2 Σ‖θi−θj‖² sit at the two ends of one dial.",
        "test error vs λ, and vs independent / fully shared models",
        ("000", "001", "002"),
    ),
    Claim(
        "C7",
        "meta-fast-slow",
        "C. Statistical models",
        "Slow weights shared across tasks plus a few fast weights adapted per task give few-shot learning.",
        "few-shot accuracy vs training from scratch",
        ("000", "001", "002"),
    ),
    Claim(
        "C8",
        "hashednets",
        "C. Statistical models",
        "HashedNets: a V×V matrix stored in B ≪ V² buckets, h(i,j) = (i·V + j) mod B (or a real hash); perplexity degrades as B shrinks.",
        "perplexity vs B curve on a small language model",
        ("000", "001", "002"),
    ),
    Claim(
        "C9",
        "smirks-typing",
        "C. Statistical models",
        'Force fields: atom types explode combinatorially; SMIRKS patterns with "the last (most specific) match wins" assign bond/angle/torsion parameters with far fewer parameters.',
        "parameters assigned to real molecules from a real OpenFF force field; unique parameters used vs atom-type pairs",
        ("000", "001", "002"),
    ),
    Claim(
        "D1",
        "soft-iou-dice",
        "D. Training",
        "Soft IoU and soft Dice are differentiable stand-ins for IoU; their gradients differ, most for small objects.",
        "both losses train a segmenter; gradient magnitude vs object size",
        ("004",),
    ),
    Claim(
        "D2",
        "bn-vs-gn",
        "D. Training",
        "BatchNorm with batch size 2 has noisy statistics and a train/eval gap; GroupNorm does not depend on the batch.",
        "eval accuracy at batch 2 for BN vs GN",
        ("004",),
    ),
    Claim(
        "D3",
        "ctc",
        "D. Training",
        "CTC sums over all alignments with a blank symbol by dynamic programming; early training can collapse to blanks; beam search at inference differs from the training loss.",
        "CTC training on synthetic sequences; blank ratio over training; greedy vs beam decoding",
        ("004",),
    ),
    Claim(
        "D4",
        "pinn-optimizers",
        "D. Training",
        "For PINNs, Adam is robust, L-BFGS is sharper but sensitive to noise.",
        "final error of both, with and without noisy data",
        ("004",),
    ),
    Claim(
        "D5",
        "mechanistic-vs-deep",
        "D. Training",
        "A deep model wins in distribution but can collapse out of distribution, where a mechanistic (thermodynamic) model with the right causal structure generalises.",
        "in- and out-of-distribution error of both",
        ("004",),
    ),
    Claim(
        "D6",
        "network-motifs",
        "D. Training",
        "Motif analysis of a trained RNN's connectivity (feed-forward loops) against degree-preserving random graphs shows which circuits training selected.",
        "FFL z-score before vs after training",
        ("004",),
    ),
    Claim(
        "D7",
        "symmetry-breaking",
        "D. Training",
        "Identical initial weights are an accidental tie: the neurons get identical gradients forever; random init breaks it (as in O₂'s broken-symmetry SCF guess).",
        "neurons stay identical under constant init; the library's detector finds such accidental ties",
        ("004",),
    ),
    Claim(
        "D8",
        "gan-clipping",
        "D. Training",
        "Gradient clipping turns the rotating min-max flow of a GAN toward convergence.",
        "distance to equilibrium over steps, with and without clipping",
        ("004",),
    ),
    Claim(
        "D9",
        "concept-drift",
        "D. Training",
        "A sustained jump in validation loss signals drift; then retrain or reset the optimizer.",
        "detection delay and false alarms on a drifting stream",
        ("004",),
    ),
    Claim(
        "D10",
        "dp-sgd",
        "D. Training",
        "DP-SGD clips each example's gradient and adds Gaussian noise; the (ε, δ) budget must be accounted correctly: a wrong composition rule overstates privacy by orders of magnitude.",
        "ε from a correct accountant vs naive composition; training with DP on a model with tied weights (per-example gradients summed over every use of a tied weight)",
        ("004",),
    ),
)

_BY_ID = {c.id: c for c in CLAIMS}


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
    rank = {c.id: i for i, c in enumerate(CLAIMS)}
    return sorted(ids, key=lambda i: rank.get(i, len(rank)))
