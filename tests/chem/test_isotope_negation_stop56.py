"""A negated isotope mass in a SMIRKS (``[!1:1]``): refused, saying what the toolkit reads (stop 56).

The OpenFF toolkit's molecules carry no masses, so ``[!1:1]`` (not mass 1) matches every
atom there, ``[1H]`` included, where RDKit here would skip a ``[1H]``. The pattern was
refused already (stop 32), with advice for ``[2#1]`` only ("write the element without a
mass"); the error now says how the toolkit reads a negated mass and what to write
instead (``*``).
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner, SmirksError  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)


def test_a_negated_mass_is_refused_naming_how_the_toolkit_reads_it(tmp_path):
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "b0", 1.0), bond("[!1:1]-[#6:2]", "b1")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = OpenFFForceField(str(path)).label_molecules(
            OpenFFMolecule.from_smiles("[1H]CO").to_topology()
        )[0]["Bonds"]
    assert labels[(0, 1)].id == "b1"  # the toolkit: [1H] is "not mass 1" (it has no mass)
    with pytest.raises(
        SmirksError,
        match=r"'b1': SMIRKS '\[!1:1\]-\[#6:2\]' tests an isotope mass .*a negated mass such as "
        r"\[!1\] every atom.*\* for \[!1\]",
    ):
        SmirksAssigner(path, strict=False).assign("[1H]CO")
