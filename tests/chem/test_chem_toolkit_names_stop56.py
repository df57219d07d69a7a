"""A ported OpenFF-toolkit script reads labels and parameters by the toolkit's names (stop 56).

``label_molecules(top)[0]["Bonds"]`` is ``assignment["Bonds"]`` here (it was "'Assignment'
object is not subscriptable"); the toolkit's ``bond.k`` is ``parameter["k"]`` here and the
AttributeError says so (it was a bare "'Parameter' object has no attribute 'k'").
"""

import copy
import pickle

import pytest

from tying.chem import SmirksAssigner


@pytest.fixture(scope="module")
def ethanol():
    return SmirksAssigner("openff-2.0.0").assign("CCO")


def test_assignment_reads_like_a_label_dict(ethanol):
    assert ethanol["Bonds"] is ethanol.bonds
    assert ethanol["vdW"] is ethanol.vdw
    with pytest.raises(TypeError, match=r"'Assignment' object is not iterable"):
        iter(ethanol)  # one molecule, not a collection of them
    with pytest.raises(KeyError, match=r"has no Electrostatics section: it was labelled with"):
        ethanol["Electrostatics"]
    with pytest.raises(TypeError, match=r"read by section name, e\.g\. assignment\['Bonds'\]"):
        ethanol[0]


def test_label_molecules_port_gives_the_toolkits_ids(ethanol):
    toolkit = pytest.importorskip("openff.toolkit")
    ff = toolkit.ForceField("openff-2.0.0.offxml")
    labels = ff.label_molecules(toolkit.Molecule.from_smiles("CCO").to_topology())[0]
    for section in ethanol.terms:
        assert {k: p.id for k, p in labels[section].items()} == ethanol.ids(section)
        for key, p in labels[section].items():
            ours = ethanol[section][key]
            if section == "Bonds":
                k = ours["k"].to("kilocalorie / mole / angstrom ** 2").value
                assert k == pytest.approx(p.k.m_as("kilocalorie / mole / angstrom ** 2"), rel=1e-12)


@pytest.mark.parametrize(
    ("section", "name", "fix"),
    [
        ("Bonds", "k", r"read parameter\['k'\]"),
        ("Bonds", "length", r"read parameter\['length'\]"),
        (
            "ProperTorsions",
            "periodicity",
            r".*is periodicity1, periodicity2 here: read parameter\['periodicity1'\]",
        ),
        ("ProperTorsions", "k", r".*is k1, k2 here: .* or parameter\.terms"),
        # stop 58: the advice names the item, and works when followed (test_scaling_stop58)
        ("vdW", "sigma", r"the file writes rmin_half .*: sigma = 2 \* parameter\['rmin_half'\]"),
        ("Bonds", "nope", r"it has: id, smirks, section, index and items k, length"),
    ],
)
def test_toolkit_attribute_names_name_the_item(ethanol, section, name, fix):
    p = next(iter(ethanol[section].values()))
    with pytest.raises(AttributeError, match=rf"has no attribute '{name}': {fix}"):
        getattr(p, name)


def test_parameters_still_copy_and_pickle(ethanol):
    p = ethanol.bonds[(0, 1)]
    assert not hasattr(p, "k") and p.id == "b1"
    for again in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert again.id == p.id and again["k"] == p["k"]
    again = pickle.loads(pickle.dumps(ethanol))
    assert again["Bonds"].keys() == ethanol["Bonds"].keys()


def test_two_files_as_the_toolkit_passes_them_name_the_merge():
    # ForceField("openff-2.0.0.offxml", "tip3p.offxml") merges; here it was Python's bare
    # "takes from 1 to 2 positional arguments but 3 were given"
    with pytest.raises(TypeError, match=r"reads one file at a time.*to_file\('merged\.offxml'\)"):
        SmirksAssigner("openff-2.0.0.offxml", "tip3p.offxml")
