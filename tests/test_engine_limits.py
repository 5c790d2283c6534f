"""Malformed model output never crashes or hangs; every limit and repair is counted in the stats."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import TextStreamer

from engine_helpers import run_engine
from mock_lm import TableLM
from multiverse.modeling_multiverse import TAGS
from multiverse.modeling_multiverse.parser import ROOT_SID, parse
from multiverse.modeling_multiverse.structure_processor import MultiverseStructureLogitsProcessor
from samples import TEXT
from structures import TAG_IDS as TOY_TAGS, build, stream


@pytest.fixture(scope="module")
def ids(tokenizer):
    tags = dict(zip(TAGS, TokenIds(tokenizer).tags))
    return type("Ids", (), {**{t.strip("<>/").lower() + ("_end" if t.startswith("</") else ""): i
                                for t, i in tags.items()}, "nl": tokenizer.encode("\n")[0],
                            "word": tokenizer.encode(" the")[0], "one": tokenizer.encode("1")[0],
                            "colon": tokenizer.encode(":")[0], "eos": tokenizer.eos_token_id})


class TokenIds:
    def __init__(self, tokenizer):
        from multiverse.modeling_multiverse import tag_token_ids

        self.tags = tag_token_ids(tokenizer)


def test_goal_without_outline_continues_sequentially(tokenizer, ids):
    model = TableLM(tokenizer, {ids.parallel: ids.goal, ids.goal: ids.goal_end, ids.goal_end: ids.word},
                    default=ids.word)
    out = run_engine(model, [[ids.word, ids.parallel]], max_new_tokens=12, enforce_structure=False)
    stats = out.multiverse[0]
    assert stats["events"]["empty_goal"] == 1 and stats["forks"] == 0
    assert stats["steps"] == stats["tokens"] == 11  # sequential: one token per step ...
    assert stats["closing_tags"] == 1 and out.sequences[0, -1] == ids.parallel_end  # ... and </Parallel> closes it


def test_runaway_nesting_is_capped_at_max_depth(tokenizer, ids):
    """A model that opens a block at every chance: depth stops at max_depth, paths still close."""
    table = {ids.parallel: ids.goal, ids.goal: ids.outline, ids.outline: ids.one, ids.one: ids.outline_end,
             ids.outline_end: ids.goal_end, ids.colon: ids.parallel}
    model = TableLM(tokenizer, table, default=ids.path_end)
    # a path budget with room for a nested block's closing (12 had none: no nested block opens under it now)
    out = run_engine(model, [[ids.word, ids.parallel]], max_new_tokens=400, max_depth=2, max_path_tokens=30,
                     tokenizer=tokenizer)
    stats = out.multiverse[0]
    assert stats["max_depth"] == 2
    assert stats["forks"] >= 2
    assert not any("stray" in r for r in stats["repairs"])


def test_branch_that_never_closes_is_capped(tokenizer, ids):
    model = TableLM(tokenizer, {}, default=ids.word)  # never emits </Path>
    prompt = tokenizer.encode("<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n")
    model.table[ids.nl, ids.goal_end] = 5.0  # close the goal, then ramble
    out = run_engine(model, [prompt], max_new_tokens=200, max_path_tokens=10, tokenizer=tokenizer)
    stats = out.multiverse[0]
    assert stats["events"]["path_budget_closed"] == 2
    (block,) = parse(out.sequences[0].tolist(), model.config.multiverse_tag_ids).blocks
    assert all(p.closed and p.end - p.start <= 10 for p in block.paths)
    assert all(b["closed"] for b in stats["branches"] if b["label"] != "root")


def test_total_budget_stops_and_is_counted(tokenizer, ids):
    model = TableLM(tokenizer, {}, default=ids.word)
    out = run_engine(model, [[ids.word]], max_new_tokens=7)
    assert out.multiverse[0]["tokens"] == 7
    assert out.multiverse[0]["events"]["token_budget_exhausted"] == 1


def tree(result, ids):
    """(the stream's own tokens, [[child tree per path] per block]) from the root down, as the parser reads it."""
    own = {}
    for start, end, sid, _ in result.runs:
        own.setdefault(sid, []).extend(ids[start:end])

    def node(sid):
        return own.get(sid, []), [[node(c) for c in fork] for fork in result.fork_children.get(sid, [])]
    return node(ROOT_SID)


def assert_cut_from(cut, full, tags):
    """Every stream of ``cut`` is the same stream of ``full`` cut short, then closed with tags only."""
    (cut_tokens, cut_blocks), (full_tokens, full_blocks) = cut, full
    k = 0
    while k < min(len(cut_tokens), len(full_tokens)) and cut_tokens[k] == full_tokens[k]:
        k += 1
    assert all(t in tags for t in cut_tokens[k:]), (cut_tokens[k:], full_tokens[k:])
    assert len(cut_blocks) <= len(full_blocks)
    for cut_paths, full_paths in zip(cut_blocks, full_blocks):
        assert 1 <= len(cut_paths) <= len(full_paths)
        for c, f in zip(cut_paths, full_paths):
            assert_cut_from(c, f, tags)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: stream(0, d)), st.lists(st.floats(0.02, 1.1), min_size=4, max_size=4),
       st.booleans())
def test_budget_cuts_close_the_structure(tokenizer, items, fractions, critical):
    """Regression: a cut with sibling paths open returned path 2 inside path 1 (another tree), and k live
    branches could return max_new_tokens + k - 1 tokens. Now: the same tree cut short, closed, within budget."""
    model = TableLM(tokenizer)
    tags = model.config.multiverse_tag_ids
    to_real = {t: tags[i] for i, t in enumerate(TOY_TAGS)} | {5: tokenizer.encode("\n")[0]}
    full = [to_real.get(t, 300 + t) for t in build(items).ids]
    prompt = tokenizer.encode("hi")
    full_tree = tree(parse(prompt + full, tags), prompt + full)
    for fraction in fractions:
        budget = max(1, int(fraction * len(full)))
        limits = dict(max_new_tokens=len(full) + 8, max_critical_path=budget) if critical else \
            dict(max_new_tokens=budget)
        out = run_engine(model, [prompt], forced=[full], **limits)
        tokens = out.sequences[0, len(prompt):].tolist()
        stats = out.multiverse[0]
        assert len(tokens) <= limits["max_new_tokens"]
        assert stats["tokens"] + stats["closing_tags"] == len(tokens)
        assert stats["events"].get("cut", 0) == (stats["closing_tags"] > 0)
        result = parse(prompt + tokens, tags)
        assert result.repairs == []
        assert_cut_from(tree(result, prompt + tokens), full_tree, set(tags))
        if not stats["closing_tags"]:
            assert tokens == full[:len(tokens)]


def test_stray_tags_in_forced_output_are_counted_not_fatal(tokenizer):
    model = TableLM(tokenizer)
    bad = tokenizer.encode("text </Path> more <Conclusion> x </Parallel> end")
    prompt = tokenizer.encode("hi")
    out = run_engine(model, [prompt], forced=[bad], max_new_tokens=64)
    assert out.sequences[0, len(prompt):].tolist() == bad
    assert out.multiverse[0]["events"]["stray_tag"] == 3


def test_eos_only_at_top_level(tokenizer, ids):
    """eos is the model's favourite token everywhere; inside a block the grammar holds it back."""
    table = {ids.outline_end: ids.goal_end, ids.conclusion: ids.conclusion_end, ids.conclusion_end: ids.parallel_end,
             ids.parallel_end: ids.word}
    model = TableLM(tokenizer, table, default=ids.eos)
    prompt = tokenizer.encode("<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>")
    out = run_engine(model, [prompt], max_new_tokens=40, eos_token_id=ids.eos, max_path_tokens=8,
                     tokenizer=tokenizer)
    text = tokenizer.decode(out.sequences[0])
    assert text.count("<|im_end|>") == 1 and text.endswith("</Parallel> the<|im_end|>")
    assert out.multiverse[0]["events"]["path_budget_closed"] == 1


def test_prompt_ending_inside_a_path_is_refused(tokenizer, ids):
    model = TableLM(tokenizer)
    prompt = tokenizer.encode("<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n</Goal>\n<Path>\n1:")
    with pytest.raises(ValueError, match="ends inside a <Path>"):
        run_engine(model, [prompt], max_new_tokens=4, tokenizer=tokenizer)


@pytest.mark.parametrize("kwargs, name", [
    (dict(max_branches=0), "max_branches"), (dict(max_depth=-1), "max_depth"),
    (dict(max_path_tokens=2), "max_path_tokens"), (dict(tag_ids=[1, 2]), "tag_ids"),
])
def test_processor_checks_its_arguments(kwargs, name):
    args = dict(tag_ids=list(range(12))) | kwargs
    with pytest.raises(ValueError, match=name):
        MultiverseStructureLogitsProcessor(**args)


def test_processor_without_grammar_keeps_the_limits():
    """enforce_structure=False lifts the tag order, not the limits, in plain HF decoding and in the engine."""
    tags = list(range(100, 112))
    on = MultiverseStructureLogitsProcessor(tags, max_depth=0)
    off = MultiverseStructureLogitsProcessor(tags, max_depth=0, grammar=False)
    ids, scores = torch.tensor([[5, 6]]), torch.zeros(1, 120)
    parallel, end_goal = tags[TAGS.index("<Parallel>")], tags[TAGS.index("</Goal>")]
    for processor in (on, off):
        assert processor(ids, scores)[0, parallel] < -1e30  # depth 0: no block, either way
    assert on(ids, scores)[0, end_goal] < -1e30  # the grammar bans a stray </Goal> ...
    assert off(ids, scores)[0, end_goal] == 0  # ... only while it is enforced


def test_processor_in_plain_hf_generate(tiny_model, tokenizer):
    """multiverse_parallel=False: stock HF decoding, same mask, grammar still enforced."""
    prompt = tokenizer.encode("Think.\n<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n")
    out = tiny_model.generate(torch.tensor([prompt]), multiverse_parallel=False, max_new_tokens=40,
                              do_sample=True, top_k=0, temperature=5.0, max_path_tokens=8, eos_token_id=None,
                              pad_token_id=0)
    result = parse(out[0].tolist(), tiny_model.config.multiverse_tag_ids, allow_truncated=True)
    assert result.ok, result.repairs


def test_autoregressive_mode_matches_parallel_greedy(tiny_model, tokenizer):
    """Greedy AR decoding under the Multiverse mask gives the same tokens as the parallel engine."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                           tokenize=False)
    ids = torch.tensor([tokenizer.encode(prompt)])
    parallel = tiny_model.generate(ids, max_new_tokens=20, tokenizer=tokenizer)
    sequential = tiny_model.generate(ids, multiverse_parallel=False, max_new_tokens=20, do_sample=False,
                                     pad_token_id=0)
    assert torch.equal(parallel[0, :sequential.shape[1]], sequential[0, :parallel.shape[1]])


class Collect:
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.flatten().tolist())

    def end(self):
        self.ended = True


def test_linear_streamer_sees_the_training_order(tiny_model, tokenizer):
    prompt = tokenizer.encode("hi")
    completion = tokenizer.encode(TEXT)
    sink = Collect()
    out = tiny_model.generate(torch.tensor([prompt]), forced_completions=[completion], streamer=sink,
                              max_new_tokens=200)
    streamed = [t for chunk in sink.chunks[1:] for t in chunk]
    assert sink.chunks[0] == prompt and sink.ended
    assert streamed == out[0, len(prompt):].tolist() == completion
    assert len(sink.chunks) > 10  # it streamed as it went, not once at the end


def test_text_streamer_prints_the_decoded_text(tiny_model, tokenizer, capsys):
    completion = tokenizer.encode(TEXT)
    tiny_model.generate(torch.tensor([tokenizer.encode("hi")]), forced_completions=[completion],
                        streamer=TextStreamer(tokenizer, skip_prompt=True), max_new_tokens=200)
    assert capsys.readouterr().out.strip() == TEXT.strip()


def test_branch_streamer_gets_fork_and_merge_events(tiny_model, tokenizer):
    events = []

    class Branches:
        def on_token(self, branch, token):
            events.append(("token", branch.stream.label))

        def on_fork(self, parent, children):
            events.append(("fork", [c.stream.label for c in children]))

        def on_merge(self, parent, children):
            events.append(("merge", len(children)))

        def end(self):
            events.append(("end",))

    tiny_model.generate(torch.tensor([tokenizer.encode("hi")]), forced_completions=[tokenizer.encode(TEXT)],
                        streamer=Branches(), max_new_tokens=200)
    assert ("fork", ["1", "2", "3"]) in events and ("merge", 3) in events and events[-1] == ("end",)
    labels = [e[1] for e in events if e[0] == "token"]
    assert {"1", "2", "3"} <= set(labels)


def test_autoregressive_mode_forces_the_engines_seeds(tiny_model, tokenizer):
    """A path cannot see its siblings, so not its own label: plain generate forces the engine's seeds."""
    from transformers import LogitsProcessorList

    class CloseGoalFirst:
        def __init__(self, prompt_length, goal_end):
            self.prompt_length, self.goal_end = prompt_length, goal_end

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == self.prompt_length:
                scores = torch.full_like(scores, -1e9)
                scores[:, self.goal_end] = 0
            return scores

    tags = tiny_model.config.multiverse_tag_ids
    prompt = tokenizer.encode("Think.\n<Parallel>\n<Goal>\n<Outline>\n7: a\n</Outline>\n<Outline>\n3: b\n</Outline>\n")
    out = tiny_model.generate(torch.tensor([prompt]), multiverse_parallel=False, max_new_tokens=40, do_sample=False,
                              max_path_tokens=8, eos_token_id=None, pad_token_id=0, tokenizer=tokenizer,
                              logits_processor=LogitsProcessorList([CloseGoalFirst(len(prompt), tags[5])]))  # </Goal>
    text = tokenizer.decode(out[0, len(prompt):])
    assert text.startswith("</Goal>\n<Path>\n7:") and "</Path>\n<Path>\n3:" in text, text
    assert "</Path>\n<Conclusion>" in text, text
    result = parse(out[0].tolist(), tags, allow_truncated=True, decode=tokenizer.decode)
    assert result.ok, result.repairs


def test_char_table_seeds_read_a_label_as_long_as_nesting_makes_it(tokenizer):
    """Without a tokenizer the seeds decode an outline through the config's char table: all of it (it read 16
    chars, so a label nested 9 deep, 17 chars and its colon, fell back to the default)."""
    from multiverse.conversion import seed_token_ids
    from multiverse.modeling_multiverse.seeds import Seeds

    table = seed_token_ids(tokenizer)
    label = ".".join(["1"] * 9) + ".2"
    outline = [table[c] for c in "\n" + label + ":"] + tokenizer.encode(" go on")
    assert Seeds(None, table).label(outline) == label


@pytest.mark.parametrize("sequential", [False, True])
def test_a_path_out_of_budget_finishes_the_block_inside_it_instead_of_abandoning_it(tokenizer, ids, sequential):
    """Every path opens a nested block at once. A path whose budget runs out closes what it holds the way a cut
    does (nested goal, paths, conclusion, </Parallel>, then </Path>), starting when only that closing fits, and
    opens no block whose closing would not fit: no repair. It used to take </Path> at once, abandoning the block
    (path budgets 7 to 15 here, all of them)."""
    table = {ids.parallel: ids.goal, ids.goal: ids.outline, ids.outline: ids.one, ids.one: ids.outline_end,
             ids.outline_end: ids.goal_end, ids.goal_end: ids.word, ids.colon: ids.parallel, ids.path_end: ids.nl,
             ids.nl: ids.conclusion, ids.conclusion: ids.word}
    model = TableLM(tokenizer, table, default=ids.word)
    tags = model.config.multiverse_tag_ids
    # What the closing does not count comes on top: per nested level, the seeds forced into the paths and the
    # conclusion it forks and merges.
    seeds = len(tokenizer.encode("\n<Path>\n1.1.1:")) + len(tokenizer.encode("\n<Conclusion>"))
    depths = []
    for budget in list(range(5, 16)) + [20, 25, 30, 40]:
        out = run_engine(model, [[ids.word, ids.parallel]], max_new_tokens=400, max_depth=3, max_path_tokens=budget,
                         tokenizer=tokenizer, sequential_paths=sequential)
        stats = out.multiverse[0]
        assert stats["repairs"] == [] and "abandoned_block" not in stats["events"], budget
        assert stats["events"]["path_budget_closed"] >= 1
        result = parse(out.sequences[0].tolist(), tags)
        assert result.repairs == []
        depths.append(result.max_depth)
        for block in result.all_blocks:
            for path in block.paths:
                levels = result.max_depth - block.depth
                assert path.next_step - path.start_step <= max(budget, 6) + levels * seeds, (budget, path.label)
    assert max(depths) == 3  # nested blocks were open when budgets ran out
