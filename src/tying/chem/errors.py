"""Errors of :mod:`tying.chem`: each names the item at fault, what was expected, and the fix."""

from __future__ import annotations


class ForceFieldNotFoundError(FileNotFoundError):
    """A force-field name that no installed ``.offxml`` file carries (lists the ones that exist)."""


class OffxmlError(ValueError):
    """An ``.offxml`` file whose content is not a valid SMIRNOFF force field.

    The message names the file, the section, the parameter id and the attribute,
    what was expected, and how to fix it.
    """


class SmirksError(ValueError):
    """A SMIRKS pattern in a force-field file that RDKit cannot parse, or whose tags are wrong."""


class SmilesError(ValueError):
    """A SMILES string that RDKit cannot turn into a molecule (names the SMILES)."""


class UnassignedParameterError(ValueError):
    """An atom, bond, angle or torsion that no parameter of the force field covers."""


class MissingExtraError(ImportError):
    """An optional dependency of :mod:`tying.chem` is not installed."""


def missing_extra(what: str, err: BaseException) -> MissingExtraError:
    """Build the ImportError that names the extra to install.

    Args:
        what: the missing piece, e.g. ``"RDKit"``.
        err: the original ImportError, kept as the cause.

    Returns:
        A :class:`MissingExtraError` whose message says ``pip install 'tying[chem]'``.

    Example:
        >>> str(missing_extra("RDKit", ImportError("No module named 'rdkit'")))
        "tying.chem needs RDKit (No module named 'rdkit'); install it with: pip install 'tying[chem]'"
    """
    return MissingExtraError(
        f"tying.chem needs {what} ({err}); install it with: pip install 'tying[chem]'"
    )


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, for messages: "an Angles", "a vdW".

    Example:
        >>> a_or_an("Angles"), a_or_an("ImproperTorsions"), a_or_an("Bonds")
        ('an Angles', 'an ImproperTorsions', 'a Bonds')
    """
    article = "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"
    return f"{article} {word}"
