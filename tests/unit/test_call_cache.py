"""Score and generation caching: a replayed search makes zero model calls and gives the same trace.

The scorer is the real embedded model; the generator is scripted (the cache does not care
where texts come from, and sampling on two cores would make this test slow)."""

from __future__ import annotations

import pytest

from reer_assets.core.call_cache import CachingGenerator, CachingScorer, CallCache
from reer_assets.core.refinement import ReerSearch, SearchConfig
from tests.support.traces import assert_same
from tests.unit.test_search import ScriptedGenerator, _thinking

CONFIG = SearchConfig(max_step=2, num_expansion=2, max_tokens=600, edit_max_tokens=200, stop_thresh=0.0)


def _scripted():
    edits = ["<analyze>\nToo vague.\n</analyze>\n<refine>\nI will open on the kettle and the cold kitchen.\n</refine>",
             "<analyze>\nFine.\n</analyze>\n<refine>\nI keep the plan but name the reader: a tired parent.\n</refine>"]
    return ScriptedGenerator(_thinking(4), edits)


def _search(generator, scorer, path):
    cache = CallCache(path)
    gen, sc = CachingGenerator(generator, cache), CachingScorer(scorer, cache)
    return ReerSearch(gen, sc, CONFIG, seed=2), gen, sc


@pytest.mark.model
def test_replay_makes_no_calls_and_equals_the_first_run(embedded_scorer, bundled_item, tmp_path):
    embedded_generator = _scripted()
    path = tmp_path / "calls.jsonl"
    search, gen, sc = _search(embedded_generator, embedded_scorer, path)
    first = search.run(bundled_item)
    assert first.status == "ok" and gen.calls >= 2 and sc.calls >= 2

    search, gen, sc = _search(embedded_generator, embedded_scorer, path)
    again = search.run(bundled_item)
    assert (gen.calls, sc.calls) == (0, 0)
    assert again.to_dict() == first.to_dict()


@pytest.mark.model
def test_a_run_cut_short_replays_only_what_it_had_finished(embedded_scorer, bundled_item, tmp_path):
    embedded_generator = _scripted()
    path = tmp_path / "calls.jsonl"
    search, gen, sc = _search(embedded_generator, embedded_scorer, path)
    first = search.run(bundled_item)
    lines = path.read_text().splitlines()
    total = gen.calls + sc.calls
    # keep the first half of the records and a torn one, as a kill mid-write leaves it
    path.write_text("\n".join(lines[: len(lines) // 2]) + "\n" + lines[len(lines) // 2][:25])
    search, gen, sc = _search(embedded_generator, embedded_scorer, path)
    again = search.run(bundled_item)
    assert 0 < gen.calls + sc.calls < total
    # the recomputed candidates are scored in another batch composition: scores agree to a tolerance
    assert_same(again.to_dict(), first.to_dict())


def test_keys_depend_on_model_and_request():
    from reer_assets.core.protocols import ScoreRequest

    class Named:
        def __init__(self, name):
            self.model_id = name

    cache = CallCache()
    a, b = CachingScorer(Named("m1"), cache), CachingScorer(Named("m2"), cache)
    request = ScoreRequest([{"role": "user", "content": "x"}], "p", "c")
    other = ScoreRequest([{"role": "user", "content": "x"}], "p", "c2")
    assert a.key(request) == a.key(ScoreRequest([{"role": "user", "content": "x"}], "p", "c"))
    assert a.key(request) != b.key(request) and a.key(request) != a.key(other)
