"""An unsupported aromaticity model is refused when the file is read (stop 38).

The OpenFF toolkit refuses ``aromaticity_model="OEAroModel_FOO"`` as it reads the file;
tying.chem read it and refused only at the first molecule, so a force field that can
label nothing loaded and could be inspected, merged or saved as if valid.
"""

import pytest

pytest.importorskip("rdkit")

from tests.chem.helpers import HEADER, bond, write_offxml  # noqa: E402
from tying.chem import load_force_field  # noqa: E402
from tying.chem.errors import OffxmlError  # noqa: E402


def _file(tmp_path, model):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#6:2]", "b1")])
    path.write_text(
        path.read_text().replace(
            HEADER.split("\n")[1], f'<SMIRNOFF version="0.3" aromaticity_model="{model}">'
        )
    )
    return path


@pytest.mark.parametrize("model", ["OEAroModel_FOO", "OEAroModel_MMFF", "oearomodel_mdl", ""])
def test_an_unsupported_model_is_refused_at_load_as_the_toolkit_refuses_it(tmp_path, model):
    path = _file(tmp_path, model)
    with pytest.raises(OffxmlError, match=rf"aromaticity_model={model!r} is not supported"):
        load_force_field(path)
    toolkit = pytest.importorskip("openff.toolkit")
    with pytest.raises(Exception, match="aromaticity"):
        toolkit.ForceField(str(path))


def test_the_supported_model_loads(tmp_path):
    assert load_force_field(_file(tmp_path, "OEAroModel_MDL")).aromaticity_model == "OEAroModel_MDL"
