"""Import-time regressions: light modules must not load the model (or torch) as a side effect."""

import subprocess
import sys

PROBE = """
import sys
import multiverse.cli
import multiverse.modeling_multiverse.tags, multiverse.modeling_multiverse.parser
torch_loaded = 'torch' in sys.modules
import multiverse.evaluation.runner, multiverse.quickstart.evaluation  # what the fresh evaluation process imports
print(int(torch_loaded), int('multiverse.modeling_multiverse.modeling_multiverse' in sys.modules))
"""


def test_cli_and_parser_import_neither_torch_nor_the_model():
    """Regression: the package __init__ imported and registered the model, so a process that evaluated an
    exported folder got the installed class instead of the folder's remote code (and the CLI took 5 s)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    torch_loaded, model_loaded = map(int, out.stdout.split())
    assert not model_loaded
    assert not torch_loaded


def test_model_names_still_register_with_auto_classes():
    from transformers import AutoConfig

    from multiverse.modeling_multiverse import MultiverseForCausalLM  # noqa: F401

    assert AutoConfig.for_model("multiverse").model_type == "multiverse"
