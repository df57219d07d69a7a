"""hasattr/getattr on a hmmlearn-only name follow the module protocol (stop 57).

``hasattr(tying.hmm, "PoissonHMM")`` raised ImportError (a module ``__getattr__`` must
raise AttributeError), so feature probes such as ``getattr(hmm, name, None)`` crashed.
``from tying.hmm import PoissonHMM`` still names what to use instead.
"""

import pytest

import tying.hmm


@pytest.mark.parametrize("name", sorted(tying.hmm._HMMLEARN_ONLY))
def test_hasattr_and_getattr_default_do_not_raise(name):
    assert not hasattr(tying.hmm, name)
    assert getattr(tying.hmm, name, "absent") == "absent"
    with pytest.raises(AttributeError, match=rf"tying\.hmm has no {name}: "):
        getattr(tying.hmm, name)


def test_from_import_keeps_the_message_in_a_function_and_a_name_list():
    def port():
        from tying.hmm import GaussianHMM, PoissonHMM  # noqa: F401

    with pytest.raises(ImportError, match=r"tying\.hmm has no PoissonHMM: .*no Poisson"):
        port()
