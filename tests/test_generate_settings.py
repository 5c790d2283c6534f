"""Parallel generate honours or refuses every GenerationConfig field (generation_settings lists which)."""

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria

from engine_helpers import run_engine
from mock_lm import TableLM
from multiverse.modeling_multiverse import TAGS, tag_token_ids
from multiverse.modeling_multiverse.generation_settings import HONOURED, REFUSED, refuse_unsupported
from multiverse.modeling_multiverse.parser import parse

FORK_PROMPT = "<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n"


@pytest.fixture(scope="module")
def tok(tokenizer):
    tags = dict(zip(TAGS, tag_token_ids(tokenizer)))
    return type("Ids", (), {"tag": tags, "nl": tokenizer.encode("\n")[0], "word": tokenizer.encode(" the")[0],
                            "one": tokenizer.encode("1")[0], "colon": tokenizer.encode(":")[0],
                            "eos": tokenizer.eos_token_id})


def forking_model(tokenizer, tok, default=None):
    """Closes the prompt's goal at once, then writes `default` (" the") in every path."""
    model = TableLM(tokenizer, {}, default=tok.word if default is None else default)
    model.table[tok.nl, tok.tag["</Goal>"]] = 5.0
    return model


def completion(out, row, width):
    return out.sequences[row, width:].tolist()


# --- refused settings --------------------------------------------------------------------------------------------
def test_every_generation_config_field_is_sorted():
    """A field a new transformers release adds fails here until it is honoured or refused on purpose."""
    fields = set(GenerationConfig().to_dict())
    assert fields - HONOURED - set(REFUSED) == set()
    assert HONOURED.isdisjoint(REFUSED)


def test_every_refused_field_names_itself_and_its_value():
    gc = GenerationConfig()
    refuse_unsupported(gc)  # the defaults pass
    for name, offs in REFUSED.items():
        for off in offs:  # "off" values change nothing and pass
            setattr(gc, name, off)
            refuse_unsupported(gc)
        setattr(gc, name, 7)
        with pytest.raises(ValueError, match=f"{name}=7"):
            refuse_unsupported(gc)
        setattr(gc, name, None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_beams=4), "num_beams=4"), (dict(prompt_lookup_num_tokens=3), "prompt_lookup_num_tokens=3"),
    (dict(output_attentions=True), "output_attentions=True"), (dict(use_cache=False), "use_cache=False"),
    (dict(penalty_alpha=0.6, top_k=4), "penalty_alpha=0.6"), (dict(guidance_scale=1.5), "guidance_scale=1.5"),
    (dict(assistant_model="draft"), "assistant_model='draft'"),
    (dict(num_return_sequences=2), "num_return_sequences"),  # greedy: HF's own check
])
def test_model_generate_refuses_unsupported_settings(tiny_model, tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.generate(torch.tensor([tokenizer.encode("hi")]), tokenizer=tokenizer, max_new_tokens=4, **kwargs)


# --- lengths -----------------------------------------------------------------------------------------------------
def test_max_length_counts_the_prompt(tokenizer, tok):
    model = TableLM(tokenizer, {}, default=tok.word)
    prompts = [[tok.word] * 3, [tok.word] * 5]
    out = run_engine(model, prompts, max_new_tokens=None, max_length=9)
    assert out.sequences.shape[1] == 9  # HF counts the padded width: 5 + 4 new
    assert [s["tokens"] for s in out.multiverse] == [4, 4]
    with pytest.raises(ValueError, match="max_length=5"):
        run_engine(model, prompts, max_new_tokens=None, max_length=5)


def test_min_new_tokens_holds_eos_back(tokenizer, tok):
    model = TableLM(tokenizer, {}, default=tok.eos)  # eos is always the favourite
    assert completion(run_engine(model, [[tok.word]], eos_token_id=tok.eos), 0, 1) == [tok.eos]
    out = run_engine(model, [[tok.word]], eos_token_id=tok.eos, min_new_tokens=5)
    tokens = completion(out, 0, 1)
    assert len(tokens) == 6 and tok.eos not in tokens[:5] and tokens[5] == tok.eos
    out = run_engine(model, [[tok.word] * 2], eos_token_id=tok.eos, min_length=5)  # prompt + new, as HF counts
    assert completion(out, 0, 2).index(tok.eos) == 3


def test_several_eos_ids_and_padding_falls_back_to_eos(tokenizer, tok):
    model = TableLM(tokenizer, {tok.word: tok.one, tok.one: tok.colon}, default=tok.word)
    out = run_engine(model, [[tok.word], [tok.one]], eos_token_id=[tok.eos, tok.colon], pad_token_id=None)
    assert completion(out, 0, 1) == [tok.one, tok.colon]  # the second eos id stops it too
    assert completion(out, 1, 1) == [tok.colon, tok.eos]  # padded with the first eos id, as HF pads
    assert out.multiverse[1]["tokens"] == 1


def test_max_new_tokens_is_exact_with_live_branches(tokenizer, tok):
    """Two paths write at once; whatever the budget, the completion (closing tags included) never passes it."""
    model = forking_model(tokenizer, tok)
    prompt = tokenizer.encode(FORK_PROMPT)
    for budget in range(8, 40):
        out = run_engine(model, [prompt], max_new_tokens=budget, tokenizer=tokenizer)
        tokens = completion(out, 0, len(prompt))
        assert len(tokens) == budget  # the mock never stops on its own: it uses all of it, no more
        assert parse(prompt + tokens, model.config.multiverse_tag_ids).repairs == []


# --- stopping ----------------------------------------------------------------------------------------------------
def test_stop_strings_need_the_tokenizer_and_stop(tokenizer, tok):
    model = TableLM(tokenizer, {}, default=tok.word)
    with pytest.raises(ValueError, match="stop_strings.*tokenizer"):
        run_engine(model, [[tok.word]], stop_strings=["the the"])
    out = run_engine(model, [[tok.word]], stop_strings=["the the the"], tokenizer=tokenizer)
    assert completion(out, 0, 1) == [tok.word] * 2  # the prompt's " the" counts: the branch can see it
    assert out.multiverse[0]["events"]["stopped"] == 1


def test_max_time_stops(tokenizer, tok):
    out = run_engine(TableLM(tokenizer, {}, default=tok.word), [[tok.word]], max_time=1e-9, max_new_tokens=50)
    assert out.multiverse[0]["tokens"] == 1 and out.multiverse[0]["events"]["stopped"] == 1


class Path2(LogitsProcessor):
    """Rows that can see the seed of path 2 (and must not see path 1's) may not write " the"."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    def in_path_2(self, row):
        starts = [i for i, t in enumerate(row) if t == self.tok.tag["<Path>"]]  # the seed: \n <Path> \n 2 :
        return bool(starts) and starts[-1] + 2 < len(row) and row[starts[-1] + 2] == self.tok.two

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for r, row in enumerate(input_ids.tolist()):
            self.seen.append(row)
            if self.in_path_2(row):
                scores[r, self.tok.word] = -float("inf")
        return scores


def test_custom_processor_runs_per_branch_on_what_it_can_see(tokenizer, tok):
    tok.two = tokenizer.encode("2")[0]
    model = forking_model(tokenizer, tok)
    prompt = tokenizer.encode(FORK_PROMPT)
    processor = Path2(tok)
    out = run_engine(model, [prompt], max_new_tokens=30, tokenizer=tokenizer, max_path_tokens=8,
                     logits_processor=[processor])
    text = tokenizer.decode(out.sequences[0])
    path1, path2 = text.split("<Path>")[1:3]
    assert " the" in path1 and " the" not in path2, text
    path = tok.tag["<Path>"]
    in_paths = [row for row in processor.seen if row.count(path) > row.count(tok.tag["</Path>"])]
    assert in_paths and all(row.count(path) == 1 for row in in_paths)  # inside a path: never a sibling's tokens
    assert all(row[:len(prompt)] == prompt for row in processor.seen if row[0] != 0)


class StopInPath2(StoppingCriteria):
    def __init__(self, tok):
        self.finder = Path2(tok)

    def __call__(self, input_ids, scores, **kwargs):
        return torch.tensor([self.finder.in_path_2(row) for row in input_ids.tolist()])


def test_custom_stopping_criterion_cuts_the_sample_and_closes_it(tokenizer, tok):
    tok.two = tokenizer.encode("2")[0]
    model = forking_model(tokenizer, tok)
    prompt = tokenizer.encode(FORK_PROMPT)
    out = run_engine(model, [prompt], max_new_tokens=40, tokenizer=tokenizer, stopping_criteria=[StopInPath2(tok)])
    stats = out.multiverse[0]
    assert stats["events"]["stopped"] == 1 and stats["events"]["cut"] == 1
    assert stats["tokens"] < 15  # stopped as soon as path 2 had its label
    result = parse(out.sequences[0].tolist(), model.config.multiverse_tag_ids)
    assert result.repairs == [] and len(result.blocks[0].paths) == 2 and result.blocks[0].closed


# --- outputs -----------------------------------------------------------------------------------------------------
def test_scores_and_logits_in_hf_shapes(tiny_model, tokenizer):
    prompt = tokenizer.encode(FORK_PROMPT)
    out = tiny_model.generate(torch.tensor([prompt, prompt]), max_new_tokens=12, tokenizer=tokenizer, eos_token_id=None,
                              return_dict_in_generate=True, output_scores=True, output_logits=True)
    new = out.sequences.shape[1] - len(prompt)
    assert len(out.scores) == len(out.logits) == new
    assert all(s.shape == (2, tiny_model.config.vocab_size) for s in out.scores + out.logits)
    for i in range(new):  # greedy: every token is the best of its scores (a forced seed token the only one)
        assert int(out.scores[i][0].argmax()) == int(out.sequences[0, len(prompt) + i])
    with torch.no_grad():
        prefill = tiny_model(torch.tensor([prompt])).logits[0, -1]
    torch.testing.assert_close(out.logits[0][0], prefill, atol=1e-4, rtol=0)
    plain = tiny_model.generate(torch.tensor([prompt]), max_new_tokens=12, tokenizer=tokenizer, eos_token_id=None)
    assert isinstance(plain, torch.Tensor) and torch.equal(plain[0], out.sequences[0])


# --- several samples ---------------------------------------------------------------------------------------------
def test_num_return_sequences_share_the_prompts_kv(tiny_model, tokenizer):
    prompts = [tokenizer.encode("Solve this: " + "the sum of these numbers " * 4) for _ in range(2)]
    prompts[1] = prompts[1][::-1]
    width = len(prompts[0])
    kwargs = dict(do_sample=True, temperature=1.5, max_new_tokens=10, tokenizer=tokenizer, eos_token_id=None,
                  num_return_sequences=3, return_dict_in_generate=True, output_logits=True)
    out = tiny_model.generate(torch.tensor(prompts), seed=11, **kwargs)
    assert out.sequences.shape[0] == 6
    assert all(out.sequences[r, :width].tolist() == prompts[r // 3] for r in range(6))  # prompt-major, as HF
    again = tiny_model.generate(torch.tensor(prompts), seed=11, **kwargs)
    assert torch.equal(out.sequences, again.sequences)  # seeded: reproducible
    assert len({tuple(out.sequences[r].tolist()) for r in range(3)}) > 1  # independent samples
    for b in range(2):
        rows = out.multiverse[3 * b:3 * b + 3]
        written = sum(s["tokens"] for s in rows)
        assert rows[0]["kv_slots"] == rows[1]["kv_slots"] == rows[2]["kv_slots"]  # one cache row per prompt
        assert width + written - sum(len(s["branches"]) for s in rows) <= rows[0]["kv_slots"] <= width + written
    for r in range(6):  # each sample saw its prompt and itself only: its logits equal teacher forcing alone
        tokens = out.sequences[r].tolist()
        with torch.no_grad():
            reference = tiny_model(torch.tensor([tokens])).logits[0, width:]
        for i, lg in enumerate(out.position_logits[r]):
            if lg is not None:
                torch.testing.assert_close(lg, reference[i], atol=1e-4, rtol=0)


class Collect:
    def __init__(self):
        self.chunks = []

    def put(self, value):
        self.chunks.append(value.flatten().tolist())

    def end(self):
        pass


def test_a_streamer_gets_the_closing_tags_of_a_cut(tokenizer, tok):
    prompt = tokenizer.encode(FORK_PROMPT)
    sink = Collect()
    out = run_engine(forking_model(tokenizer, tok), [prompt], max_new_tokens=20, tokenizer=tokenizer, streamer=sink)
    assert out.multiverse[0]["closing_tags"] > 0  # both paths were open when the budget ran out
    assert [t for chunk in sink.chunks[1:] for t in chunk] == out.sequences[0, len(prompt):].tolist()


def test_processors_from_the_config_run_per_branch(tokenizer, tok):
    model = TableLM(tokenizer, {}, default=tok.word)
    out = run_engine(model, [[tok.one]], max_new_tokens=8, no_repeat_ngram_size=2)
    tokens = [tok.one] + completion(out, 0, 1)
    bigrams = list(zip(tokens, tokens[1:]))
    assert len(bigrams) == len(set(bigrams))  # without it: " the the the ..."
    out = run_engine(model, [[tok.one]], max_new_tokens=4, suppress_tokens=[tok.word])
    assert tok.word not in completion(out, 0, 1)


def test_every_sampling_warper_is_built():
    from transformers.generation.logits_process import (
        EpsilonLogitsWarper, EtaLogitsWarper, LogitNormalization, TopHLogitsWarper, TypicalLogitsWarper,
    )
    from multiverse.modeling_multiverse.sampling import BranchSampler

    gc = GenerationConfig(do_sample=True, typical_p=0.9, epsilon_cutoff=3e-4, eta_cutoff=1e-3, top_h=0.5,
                          renormalize_logits=True)
    kinds = [type(w) for w in BranchSampler(gc, 1, 32, "cpu").warpers]
    assert kinds == [TopHLogitsWarper, TypicalLogitsWarper, EpsilonLogitsWarper, EtaLogitsWarper, LogitNormalization]


@pytest.mark.parametrize("name, value", [("seed", 3), ("max_critical_path", 8), ("max_batch_rows", 2),
                                         ("kv_row_slots", 64), ("max_live_samples", 2), ("sequential_paths", True),
                                         ("forced_completions", [[1]])])
def test_autoregressive_mode_refuses_the_engines_options(tiny_model, tokenizer, name, value):
    """HF's generate decodes multiverse_parallel=False: an engine option there would be ignored silently."""
    ids = torch.tensor([tokenizer.encode("Add the numbers.")])
    with pytest.raises(ValueError, match=rf"{name}=.*autoregressive decoding"):
        tiny_model.generate(ids, multiverse_parallel=False, max_new_tokens=2, **{name: value})
