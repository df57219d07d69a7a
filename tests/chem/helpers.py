"""Shared pieces of the tying.chem tests: a tiny force-field file written on the fly."""

from __future__ import annotations

import pathlib

HEADER = '<?xml version="1.0" encoding="utf-8"?>\n<SMIRNOFF version="0.3" aromaticity_model="OEAroModel_MDL">\n'

GENERIC_VDW = """    <vdW version="0.4" potential="Lennard-Jones-12-6" scale14="0.5">
        <Atom smirks="[#1:1]" epsilon="0.0157 * kilocalorie_per_mole ** 1" rmin_half="0.6 * angstrom ** 1" id="n-h"></Atom>
        <Atom smirks="[#6:1]" epsilon="0.086 * kilocalorie_per_mole ** 1" rmin_half="1.908 * angstrom ** 1" id="n-c"></Atom>
        <Atom smirks="[#8:1]" epsilon="0.21 * kilocalorie_per_mole ** 1" rmin_half="1.6612 * angstrom ** 1" id="n-o"></Atom>
    </vdW>
"""


def bond(smirks: str, id: str, length: float = 1.5) -> str:
    return (
        f'        <Bond smirks="{smirks}" id="{id}" length="{length} * angstrom ** 1" '
        f'k="500.0 * kilocalorie_per_mole ** 1 * angstrom ** -2"></Bond>\n'
    )


def write_offxml(
    tmp_path: pathlib.Path, bonds: list[str], *, vdw: str = GENERIC_VDW, name: str = "tiny-1.0.0"
) -> pathlib.Path:
    """Write a minimal SMIRNOFF file with the given <Bond> lines and a vdW section."""
    body = HEADER + '    <Bonds version="0.4" potential="harmonic">\n' + "".join(bonds)
    body += "    </Bonds>\n" + vdw + "</SMIRNOFF>\n"
    path = tmp_path / f"{name}.offxml"
    path.write_text(body)
    return path
