"""REER_PROMPTS: a prompt set in the engine's schema or read from the official synthesize.py (issue 24 §4).

The official-layout file is tests/fixtures/prompts/official/synthesize.py: the official shape, our own text.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reer_assets.core import prompts as P
from reer_assets.core.objective import build_score_request, score_of
from reer_assets.core.protocols import Completion, ScoreResult
from reer_assets.core.refinement import ReerSearch, SearchConfig, SearchItem
from reer_assets.core.segment import segment
from reer_assets.lib import prompt_sets
from reer_assets.lib.prompt_sets import PromptSetError

pytestmark = pytest.mark.timeout(120)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "prompts" / "official" / "synthesize.py"
OFFICIAL = f"official:{FIXTURE}"

FIRST_EN = ("The lighthouse keeper counted the ships each night, writing their names in a ledger that nobody "
            "else had ever asked to read.")
REST_EN = ("\n\nWhen the storm came, the ledger was the only thing he saved, and in the morning he read the "
           "names aloud to the empty sea.")
FIRST_ZH = "灯塔看守人每天晚上都数着经过的船只，把它们的名字写进一本从来没有人要看的账本里。这本账本陪他度过了许多个安静的夜晚，" \
           "也记下了港口一年四季的变化，每一页都写得整整齐齐，连墨水的颜色都按季节换过，春天用蓝色，秋天用褐色。"
REST_ZH = ("\n\n暴风雨来的那一夜，他只救下了这本账本。第二天早上，他对着空荡荡的大海，把那些名字一个一个念了出来。"
           "念到最后一个名字的时候，太阳已经升得很高了，海面平静得像什么都没有发生过，他合上账本，拍掉上面的沙子，慢慢走回灯塔。")
CASES = {
    "en": ("Write a short story about a lighthouse keeper.", "Alright, the user wants a quiet story.\n\nI will "
           "open on the ledger and end with the storm.", FIRST_EN, REST_EN),
    "zh": ("写一个关于灯塔看守人的短篇故事。", "好的，用户想要一个安静的故事。\n\n我会从账本写起，以暴风雨收尾。", FIRST_ZH, REST_ZH),
}


def official_literals(path: Path) -> tuple[dict, str]:
    """The fixture's ``templates`` and ``default_sys`` read here independently of the loader (literals only)."""
    values = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("templates", "default_sys"):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values["templates"], values["default_sys"]


def hand_score(loaded, messages, thinking: str, head: str, tail: str) -> float:
    """−mean(clip(log p, −2, 0)) of the tokens that start in ``tail``, computed directly with the model."""
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    context = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    context += "<think>\n" + thinking + "\n</think>\n<answer>\n" + head
    enc = tokenizer(context + tail, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    scored = [i for i, (start, _) in enumerate(enc["offset_mapping"]) if start >= len(context)]
    assert scored and scored[0] > 0  # > 0: an NLL was computed; parity is checked exactly below
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    values = [min(max(float(logprobs[i - 1, ids[i]]), -2.0), 0.0) for i in scored]
    return -sum(values) / len(values)


@pytest.mark.model
@pytest.mark.timeout(300)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_engine_score_equals_a_hand_score_under_official_layout_prompts(embedded_loaded, lang):
    from reer_assets.backends.hf import HFScorer

    query, thinking, first, rest = CASES[lang]
    templates, default_sys = official_literals(FIXTURE)
    suffix = {"en": "en", "zh": "cn"}[lang]
    messages = [{"role": "system", "content": default_sys},
                {"role": "user", "content": templates[f"standard_inference_{suffix}"].format(query)}]
    reference = segment(first + rest)
    assert reference.segments[0] == first  # the head is the first segment, as the fixture text is built

    scorer = HFScorer(embedded_loaded, model_id="embedded")
    with P.use_prompts(prompt_sets.load(OFFICIAL)):
        request = build_score_request(query, thinking, reference)
    assert request.messages == messages
    engine = score_of(scorer.score([request])[0])
    by_hand = hand_score(embedded_loaded, messages, thinking, first, rest)
    assert abs(engine - by_hand) < 1e-6, (engine, by_hand)
    # the prompt text is what made them equal: the bundled prompts give another score of the same tokens
    bundled = score_of(scorer.score([build_score_request(query, thinking, reference)])[0])
    assert abs(bundled - by_hand) > 1e-4, (bundled, by_hand)


class RecordingGenerator:
    """One fixed initial thinking, then fixed edits; keeps every request."""

    model_id = "recording"

    def __init__(self, initial: str, edit: str):
        self.initial, self.edit, self.requests = initial, edit, []

    def generate(self, requests):
        self.requests.extend(requests)
        return [[Completion(self.initial if r.prefill.startswith("<think>") else self.edit, 200, 10)] * r.n
                for r in requests]


class RecordingScorer:
    """Falling scores, one per request; keeps every request."""

    model_id = "recording-scorer"

    def __init__(self):
        self.requests, self.next = [], 1.5

    def score(self, requests):
        self.requests.extend(requests)
        out = []
        for _ in requests:
            self.next -= 0.1
            out.append(ScoreResult(token_logprobs=[-self.next], context_tokens=5))
        return out


def test_search_sends_the_official_layout_text_and_records_the_identity():
    from reer_assets.core.trajectories import trajectory_row

    templates, default_sys = official_literals(FIXTURE)
    catalogue = prompt_sets.load(OFFICIAL)
    query, reference = CASES["en"][0], FIRST_EN + REST_EN
    para = "I will start with the ledger, since it holds the story, and I keep the tone quiet and plain throughout."
    generator = RecordingGenerator(f"{para}\n\nThen the storm, {para}\n</think>", "<refine>\nA better plan.\n</refine>")
    scorer = RecordingScorer()
    with P.use_prompts(catalogue):
        trace = ReerSearch(generator, scorer, SearchConfig(max_step=1, num_expansion=1, stop_thresh=0.0)).run(
            SearchItem("item", query, reference))
    assert trace.status == "ok" and len(trace.steps) == 1
    initial, edit = generator.requests
    system = {"role": "system", "content": default_sys}
    assert initial.messages == [system, {"role": "user", "content": templates["initial_thinking_en"].format(query, reference)}]
    segments = [s.strip() for s in segment(trace.initial_thinking).segments]
    expected_edit = templates["segment_edits_en"].format(query, reference, "", segments[0], "\n\n".join(segments[1:]),
                                                         segments[0])
    assert edit.messages == [system, {"role": "user", "content": expected_edit}]
    assert edit.prefill == P.ENGLISH.edit_lead_in + P.ANALYZE_OPEN  # the lead-in stays ours: the file gives none
    inference = [system, {"role": "user", "content": templates["standard_inference_en"].format(query)}]
    assert scorer.requests and all(r.messages == inference for r in scorer.requests)
    # lineage: the trace and the trajectories row carry the identity
    assert trace.prompt_set_version == catalogue.identity and catalogue.identity.startswith("official:")
    row = trajectory_row({"id": "q", "document_id": "d", "domain": "x", "query": query, "reference": reference},
                         "traj", trace, "cfg", 0.0)
    assert row["prompt_set_version"] == catalogue.identity
    assert P.active_prompts() is P.BUNDLED  # the block put the bundled set back


def test_workloads_put_the_extras_prompt_set_in_force_and_restore_it():
    seen = []

    @prompt_sets.applied
    def run(extras, log):
        seen.append((P.active_prompts().identity, P.prompts_for("a request").system_prompt))
        return {}

    catalogue = prompt_sets.load(OFFICIAL)
    extras = json.loads(json.dumps(prompt_sets.extras(catalogue)))  # as it travels: JSON
    run(extras, print)
    run({}, print)
    assert seen == [(catalogue.identity, catalogue.sets["en"].system_prompt), (P.PROMPT_SET_VERSION, P.SYSTEM_PROMPT)]
    assert P.active_prompts() is P.BUNDLED
    with pytest.raises(RuntimeError):
        prompt_sets.applied(lambda e, log: (_ for _ in ()).throw(RuntimeError("boom")))(extras, print)
    assert P.active_prompts() is P.BUNDLED


def write_document(path: Path, document) -> Path:
    text = json.dumps(document, ensure_ascii=False) if path.suffix == ".json" else yaml.safe_dump(
        document, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_own_schema_file_round_trips_the_bundled_set(tmp_path, suffix):
    path = write_document(tmp_path / f"prompts{suffix}", prompt_sets.document())
    loaded = prompt_sets.load(str(path))
    assert loaded.identity == f"file:{P.content_hash(P.PROMPT_SETS)}"
    for lang in ("en", "zh"):
        assert P.set_content(loaded.sets[lang]) == P.set_content(P.PROMPT_SETS[lang])
        assert loaded.sets[lang].version == loaded.identity
    # an official set written out in the engine's schema reads back the same (a way to edit one)
    official = prompt_sets.load(OFFICIAL)
    (tmp_path / "official.yaml").write_text(prompt_sets.dump_yaml(official), encoding="utf-8")
    again = prompt_sets.load(str(tmp_path / "official.yaml"))
    assert again.identity == "file:" + official.identity.removeprefix("official:")


def test_reer_prompts_changes_the_identity_stages_hash(tmp_path, monkeypatch):
    document = prompt_sets.document()
    document["en"]["system_prompt"] = "You are a writer who thinks first."
    own = write_document(tmp_path / "mine.yaml", document)
    identities = []
    for value in (None, str(own), OFFICIAL, f"  {OFFICIAL}  "):
        if value is None:
            monkeypatch.delenv("REER_PROMPTS", raising=False)
        else:
            monkeypatch.setenv("REER_PROMPTS", value)
        identities.append(prompt_sets.identity())
    assert identities[0] == P.PROMPT_SET_VERSION
    assert identities[1].startswith("file:") and identities[2].startswith("official:")
    assert identities[2] == identities[3] and len(set(identities[:3])) == 3


def bad_document(change):
    document = prompt_sets.document()
    change(document)
    return document


OWN_SCHEMA_ERRORS = {
    "unknown and missing fields": (
        lambda d: (d["en"].update(bogus="x"), d["zh"].pop("system_prompt")), ["en.bogus", "zh.system_prompt"]),
    "unknown language": (lambda d: d.update(fr=d["en"]), ["unknown field(s) fr"]),
    "missing language": (lambda d: d.pop("zh"), ["missing language(s) zh"]),
    "unknown placeholder": (lambda d: d["en"].update(inference_template="{query} {reference}"),
                            ["en.inference_template", "{reference}"]),
    "required placeholder": (lambda d: d["zh"].update(initial_template="{query}"), ["zh.initial_template", "{reference}"]),
    "stray brace": (lambda d: d["en"].update(synth_template="{text} {"), ["en.synth_template", "format string"]),
    "bad openers": (lambda d: d["en"].update(openers=[["Alright", -1]]), ["en.openers"]),
    "not a string": (lambda d: d["zh"].update(edit_lead_in=3), ["zh.edit_lead_in must be a string"]),
}


@pytest.mark.parametrize("case", sorted(OWN_SCHEMA_ERRORS))
def test_a_bad_own_schema_file_is_a_clear_error(tmp_path, case):
    change, expected = OWN_SCHEMA_ERRORS[case]
    path = write_document(tmp_path / "bad.yaml", bad_document(change))
    with pytest.raises(PromptSetError) as error:
        prompt_sets.load(str(path))
    assert str(path) in str(error.value) and all(e in str(error.value) for e in expected), str(error.value)


def test_unreadable_or_absent_files_are_clear_errors(tmp_path):
    (tmp_path / "broken.yaml").write_text("en: [unclosed\n", encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    for spec, expected in ((str(tmp_path / "broken.yaml"), "cannot be parsed"),
                           (str(tmp_path / "list.json"), "top level must be a mapping"),
                           (str(tmp_path / "absent.yaml"), "no such file"),
                           (f"official:{tmp_path / 'absent.py'}", "no such file")):
        with pytest.raises(PromptSetError, match=expected):
            prompt_sets.load(spec)


OFFICIAL_ERRORS = {
    "missing template": (lambda s: s.replace('"segment_edits_cn"', '"segment_edits_zh"'), ["'segment_edits_cn'"]),
    "no default_sys": (lambda s: s.replace("default_sys =", "system_text ="), ["default_sys"]),
    "named field": (lambda s: s.replace("A reader has sent this request:\n{}", "Request: {query}", 1),
                    ["standard_inference_en", "{query}"]),
    "too many fields": (lambda s: s.replace("Keep {{braces}}", "Keep {}"), ["standard_inference_en", "passes 1"]),
    "not a literal": (lambda s: s.replace("templates = {", "templates = dict(**{", 1).replace('}""",\n}', '}""",\n})'),
                      ["templates", "not a literal"]),
    "not python": (lambda s: s + "\ndef broken(:\n", ["not valid Python"]),
}


@pytest.mark.parametrize("case", sorted(OFFICIAL_ERRORS))
def test_a_bad_official_file_is_a_clear_error(tmp_path, case):
    change, expected = OFFICIAL_ERRORS[case]
    text = FIXTURE.read_text(encoding="utf-8")
    changed = change(text)
    assert changed != text
    path = tmp_path / "synthesize.py"
    path.write_text(changed, encoding="utf-8")
    with pytest.raises(PromptSetError) as error:
        prompt_sets.load(f"official:{path}")
    assert all(e in str(error.value) for e in expected), str(error.value)


def test_official_files_are_parsed_never_run(tmp_path):
    marker = tmp_path / "ran.txt"
    side_effect = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nraise RuntimeError('ran')\n"
    path = tmp_path / "synthesize.py"
    path.write_text(side_effect + FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    loaded = prompt_sets.load(f"official:{path}")
    assert loaded.identity == prompt_sets.load(OFFICIAL).identity  # the same templates, whatever else the module does
    assert not marker.exists()
    # a template built by a call is refused without calling it
    built = tmp_path / "built.py"
    built.write_text(f"def make():\n    import pathlib\n    pathlib.Path({str(marker)!r}).write_text('ran')\n    "
                     "return {}\n\ndefault_sys = 'x'\ntemplates = make()\n", encoding="utf-8")
    with pytest.raises(PromptSetError, match="not a literal"):
        prompt_sets.load(f"official:{built}")
    assert not marker.exists()
    # control: run as a program, the first file does write the marker (so the checks above can fail)
    subprocess.run([sys.executable, str(path)], capture_output=True, timeout=60)
    assert marker.read_text() == "ran"


def test_official_mapping_keeps_our_fields_where_the_file_has_none(tmp_path):
    loaded = prompt_sets.load(OFFICIAL)
    en, zh = loaded.sets["en"], loaded.sets["zh"]
    assert en.synth_template == P.ENGLISH.synth_template and zh.openers == P.CHINESE.openers
    assert en.edit_lead_in == P.ENGLISH.edit_lead_in and en.draft_note == "" and en.empty_marker == ""
    assert "{braces}" in en.inference_messages("q")[1]["content"]  # literal braces survive the renaming
    # a file that gives the lead-in has it used
    text = FIXTURE.read_text(encoding="utf-8").replace(
        "templates = {", 'templates = {\n"edit_lead_in_en": "Let me look again.\\n",', 1)
    path = tmp_path / "synthesize.py"
    path.write_text(text, encoding="utf-8")
    given = prompt_sets.load(f"official:{path}")
    assert given.sets["en"].edit_prefill == "Let me look again.\n<analyze>\n"
    assert given.sets["zh"].edit_lead_in == P.CHINESE.edit_lead_in and given.identity != loaded.identity


@pytest.mark.model
@pytest.mark.timeout(600)
def test_stage_fingerprint_and_config_hash_follow_reer_prompts(tmp_path, monkeypatch, embedded_path):
    """synthesized_queries (no model: the pieces come with their request) under three prompt sets."""
    import dagster as dg

    from reer_assets.definitions import defs
    from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
    from reer_assets.lib import fingerprints, storage
    from tests.support.tiny_domain import DOMAIN, write_domains_file

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REER_DOMAINS_FILE", str(write_domains_file(tmp_path)))
    monkeypatch.setenv("REER_PROFILE", "test")
    monkeypatch.delenv("REER_STORAGE_ROOT", raising=False)
    monkeypatch.delenv("REER_LINEAGE_DB", raising=False)
    monkeypatch.delenv("REER_PROMPTS", raising=False)
    resources = {"generator": ModelBackendResource(role="generator"),
                 "lineage": LineageResource(db_path=str(tmp_path / "lineage.duckdb")),
                 "runner": WorkloadRunner(mode="in_process")}
    instance = dg.DagsterInstance.ephemeral()

    def materialize(name: str) -> tuple[bool, str, set]:
        result = dg.materialize([defs.get_assets_def(name)], partition_key=DOMAIN, resources=resources,
                                instance=instance)
        assert result.success
        reused = result.asset_materializations_for_node(name)[0].metadata["reused"].value
        hashes = set(storage.read_output(name, "queries", DOMAIN)["config_hash"].to_list()) \
            if name == "synthesized_queries" else set()
        return reused, fingerprints.stored(name, DOMAIN)["fingerprint"], hashes

    materialize("raw_documents")
    reused, bundled, bundled_hashes = materialize("synthesized_queries")
    assert not reused
    monkeypatch.setenv("REER_PROMPTS", OFFICIAL)
    reused, official, official_hashes = materialize("synthesized_queries")
    assert not reused and official != bundled and official_hashes.isdisjoint(bundled_hashes)
    assert materialize("synthesized_queries")[:2] == (True, official)  # unchanged prompt set: reused
    own = write_document(tmp_path / "mine.yaml", prompt_sets.document())
    monkeypatch.setenv("REER_PROMPTS", str(own))
    reused, mine, _ = materialize("synthesized_queries")
    assert not reused and mine not in (bundled, official)
    monkeypatch.delenv("REER_PROMPTS")
    reused, again, again_hashes = materialize("synthesized_queries")
    assert not reused and again == bundled and again_hashes == bundled_hashes
