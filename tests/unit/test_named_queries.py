"""The named SQL queries under sql/queries/: each binds on an empty lineage database (so a typo fails here)
and returns known rows on a small lineage seeded by hand (so a query that computes the wrong numbers fails)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from reer_assets.core.schemas import DATASET_ROWS, DOCUMENTS, QUERIES, TRAJECTORIES
from reer_assets.core.trace import Candidate, SearchTrace, Step
from reer_assets.lib.duckdb_store import apply_schema, write_many
from reer_assets.lib.lineage import stamp
from reer_assets.settings import SQL_DIR
from reer_assets.core.trajectories import explode, trajectory_row

QUERIES_DIR = SQL_DIR / "queries"
QUERY_FILES = sorted(QUERIES_DIR.rglob("*.sql"))


def _rel(path: Path) -> str:
    return path.relative_to(QUERIES_DIR).as_posix()


@pytest.mark.parametrize("path", QUERY_FILES, ids=[_rel(p) for p in QUERY_FILES])
def test_query_runs_on_an_empty_lineage_db(path: Path):
    """Every query, including one added without a known-rows case, at least binds against the schema."""
    con = duckdb.connect()
    apply_schema(con)
    sql = path.read_text()
    con.execute(sql, ["x"] * sql.count("?"))
    con.close()


# --- the seeded lineage --------------------------------------------------------------------------
# Two domains. alpha: documents d-a1 (accepted) and d-a2 (rejected); query q-a1; three ok searches of
# q-a1 (t-a1, t-a2 skipped, t-a3). beta: document d-b1; queries q-b1 (accepted) and q-b2 (rejected);
# t-b1 (ok) and t-b2 (rejected). Dataset ds-1 holds r-a1, r-a2, r-a3, r-b1 and r-b9, whose query q-gone
# is not in lineage (a broken chain); ds-0 holds r-a1 and r-orphan, a member with no dataset row.
# q-a1's source published its own thinking: t-a1 and t-a2 scored it, t-a3 did not (as an import leaves it).
# Scores are multiples of 1/8 so every difference is exact in binary.

def _cand(text: str | None, tokens: int, score: float | None = None) -> Candidate:
    return Candidate(text=text, raw=f"<refine>{text}</refine>" if text else "no block", score=score,
                     completion_tokens=tokens, skipped_reason=None if text else "no_refine_block")


def _trace(rollout: int, status: str, segments: int, initial: float | None, final: float | None,
           steps: list[Step], stopped: str, generator: str, scorer: str, reject: str | None = None,
           published: float | None = None) -> SearchTrace:
    trace = SearchTrace(item_id="item", rollout=rollout, language="en", seed=7, generator_model=generator,
                        scorer_model=scorer, prompt_set_version="v-test", config={}, status=status,
                        reject_reason=reject, initial_score=initial, final_score=final, steps=steps,
                        initial_segments=[f"segment {k}. " for k in range(segments)], stopped_reason=stopped,
                        skipped_search=stopped == "initial_below_threshold", published_score=published)
    return trace


SEARCHES = {  # trajectory id -> (query id, trace)
    # 10 segments, max_step 4: positions floor(5*i/10) = 0, 0, 1, 1
    "t-a1": ("q-a1", _trace(0, "ok", 10, 1.0, 0.25, [
        Step(0, "s0", [_cand(None, 10), _cand("e0", 20, 0.75)], choice=1, best_score=0.75),
        Step(1, "s1", [_cand("e1a", 30, 0.9), _cand("e1b", 40, 0.8)], choice=None, best_score=0.75),
        Step(2, "s2", [_cand("e2", 50, 0.375), _cand(None, 5)], choice=0, best_score=0.375),
        Step(3, "s3", [_cand("e3a", 25, 0.25), _cand("e3b", 15, 0.5)], choice=0, best_score=0.25),
    ], "max_step", "gen-a", "sc-a", published=0.5)),
    "t-a2": ("q-a1", _trace(1, "ok", 3, 0.125, 0.125, [], "initial_below_threshold", "gen-a", "sc-a",
                            published=0.0625)),
    # 3 segments, max_step 2: positions floor(0) = 0, floor(5/3) = 1
    "t-a3": ("q-a1", _trace(2, "ok", 3, 1.5, 0.75, [
        Step(0, "s0", [_cand("f0", 12, 1.25)], choice=0, best_score=1.25),
        Step(1, "s1", [_cand(None, 4), _cand("f1", 16, 0.75)], choice=1, best_score=0.75),
    ], "max_step", "gen-a", "sc-a")),
    # 4 segments: positions floor(0) = 0, floor(5/4) = 1, floor(10/4) = 2
    "t-b1": ("q-b1", _trace(0, "ok", 4, 2.0, 0.5, [
        Step(0, "s0", [_cand(None, 8), _cand(None, 12)], choice=None, best_score=2.0),
        Step(1, "s1", [_cand("g1", 30, 1.0), _cand("g1b", 6, 1.5)], choice=0, best_score=1.0),
        Step(2, "s2", [_cand("g2", 14, 0.5)], choice=0, best_score=0.5),
    ], "below_threshold", "gen-b", "sc-b")),
    "t-b2": ("q-b1", _trace(1, "rejected", 1, None, None, [], "", "gen-b", "sc-b",
                            reject="initial_rollout_unsegmentable")),
}

DOCUMENT_ROWS = [
    {"id": "d-a1", "domain": "alpha", "source_uri": "file:///data/alpha.jsonl#L1", "language": "en",
     "title": "Alpha one", "license": "cc-by-4.0", "status": "accepted", "reject_reasons": []},
    {"id": "d-a2", "domain": "alpha", "source_uri": "file:///data/alpha.jsonl#L2", "language": "en",
     "title": "Alpha two", "license": "cc-by-4.0", "status": "rejected", "reject_reasons": ["too_short"]},
    {"id": "d-b1", "domain": "beta", "source_uri": "file:///data/beta.jsonl#L1", "language": "zh",
     "title": "Beta one", "license": "mit", "status": "accepted", "reject_reasons": []},
]
QUERY_ROWS = [
    {"id": "q-a1", "document_id": "d-a1", "domain": "alpha", "query": "Write about alpha.", "reference": "ref a",
     "synthesized": True, "model": "synth-m", "status": "accepted", "reject_reasons": [],
     "published_thinking": "Their plan for alpha."},
    {"id": "q-b1", "document_id": "d-b1", "domain": "beta", "query": "Given beta request.", "reference": "ref b",
     "synthesized": False, "model": None, "status": "accepted", "reject_reasons": []},
    {"id": "q-b2", "document_id": "d-b1", "domain": "beta", "query": None, "reference": "ref b",
     "synthesized": True, "model": "synth-m", "status": "rejected", "reject_reasons": ["unparsed"]},
]
DATASET_ROW_ROWS = [  # id, trajectory, query, document, domain, status
    ("r-a1", "t-a1", "q-a1", "d-a1", "alpha", "accepted"),
    ("r-a2", "t-a2", "q-a1", "d-a1", "alpha", "accepted"),
    ("r-a3", "t-a3", "q-a1", "d-a1", "alpha", "accepted"),
    ("r-b1", "t-b1", "q-b1", "d-b1", "beta", "accepted"),
    ("r-b2", "t-b2", "q-b1", "d-b1", "beta", "rejected"),
    ("r-b9", "t-b1", "q-gone", "d-b1", "beta", "accepted"),  # its query is missing from lineage
]
MEMBERS = {"ds-1": ["r-a1", "r-a2", "r-a3", "r-b1", "r-b9"], "ds-0": ["r-a1", "r-orphan"]}


def _seed(db: Path) -> None:
    """Write the seed through the project's own shaping (``stamp``) and writer, so the rows have the real columns."""
    queries = {row["id"]: row for row in QUERY_ROWS}
    trajectories = {"alpha": [], "beta": []}
    for traj_id, (query_id, trace) in SEARCHES.items():
        query = queries[query_id]
        trajectories[query["domain"]].append(trajectory_row(query, traj_id, trace, "cfg", 0.0))
    frames: dict[str, list[pl.DataFrame]] = {}

    def add(table: str, frame: pl.DataFrame, run_id: str, partition: str | None) -> None:
        frames.setdefault(table, []).append(stamp(table, frame, run_id, partition))

    for domain in ("alpha", "beta"):
        add("documents", DOCUMENTS.frame([r for r in DOCUMENT_ROWS if r["domain"] == domain]), "run-ingest", domain)
        add("queries", QUERIES.frame([r for r in QUERY_ROWS if r["domain"] == domain]), "run-synth", domain)
        run = f"run-search-{domain[0]}"
        steps, candidates = explode(trajectories[domain])
        add("trajectories", TRAJECTORIES.frame(trajectories[domain]), run, domain)
        add("search_steps", steps, run, domain)
        add("candidates", candidates, run, domain)
        rows = [dict(zip(("id", "trajectory_id", "query_id", "document_id", "domain", "status"), r),
                     reject_reasons=[] if r[5] == "accepted" else ["search_rejected"])
                for r in DATASET_ROW_ROWS if r[4] == domain]
        add("dataset_rows", DATASET_ROWS.frame(rows), "run-curate", domain)
    tables = {table: pl.concat(parts) for table, parts in frames.items()}
    tables["datasets"] = pl.DataFrame([{"id": ds, "name": "sft", "row_count": len(m), "run_id": "run-sft"}
                                       for ds, m in MEMBERS.items()])
    tables["dataset_members"] = pl.DataFrame([{"dataset_id": ds, "dataset_row_id": r}
                                              for ds, m in MEMBERS.items() for r in m])
    write_many(tables, path=db, mode="single")


# --- the known rows ------------------------------------------------------------------------------
# relative path -> [(parameters, the exact rows)]; seeded without ties, so each ORDER BY fixes the order.
EXPECTED: dict[str, list[tuple[list, list[tuple]]]] = {
    "stage_counts.sql": [([], [
        # domain, stage, rows, accepted
        ("alpha", "dataset_rows", 3, 3),
        ("alpha", "documents", 2, 1),
        ("alpha", "queries", 1, 1),
        ("alpha", "trajectories", 3, 3),
        ("beta", "dataset_rows", 3, 2),
        ("beta", "documents", 1, 1),
        ("beta", "queries", 2, 1),
        ("beta", "trajectories", 2, 1),
    ])],
    "trace_row.sql": [
        (["r-a1"], [("r-a1", "accepted", [], "alpha", "t-a1", 1.0, 0.25, "q-a1", True, "Write about alpha.",
                     "d-a1", "file:///data/alpha.jsonl#L1", "Alpha one", "en", "cc-by-4.0", "gen-a", "sc-a",
                     "v-test", 4, "run-curate", "run-search-a", "run-synth", "run-ingest")]),
        # the broken chain: trajectory and document found, the query's columns NULL
        (["r-b9"], [("r-b9", "accepted", [], "beta", "t-b1", 2.0, 0.5, None, None, None,
                     "d-b1", "file:///data/beta.jsonl#L1", "Beta one", "zh", "mit", "gen-b", "sc-b",
                     "v-test", 3, "run-curate", "run-search-b", None, "run-ingest")]),
        (["r-orphan"], []),  # a member without a dataset row has no chain to show
    ],
    "dataset_sources.sql": [
        # generator, scorer, synthesis model, license, domain, rows, curation runs, search runs
        (["ds-1"], [("gen-a", "sc-a", "synth-m", "cc-by-4.0", "alpha", 3, ["run-curate"], ["run-search-a"]),
                    ("gen-b", "sc-b", None, "mit", "beta", 2, ["run-curate"], ["run-search-b"])]),  # r-b1, r-b9
        (["ds-0"], [("gen-a", "sc-a", "synth-m", "cc-by-4.0", "alpha", 1, ["run-curate"], ["run-search-a"])]),
    ],
    "published_vs_search.sql": [([], [
        # domain, query, trajectory, rollout, z0, z*, published score, search beat it, published − z*
        ("alpha", "q-a1", "t-a1", 0, 1.0, 0.25, 0.5, True, 0.25),
        ("alpha", "q-a1", "t-a2", 1, 0.125, 0.125, 0.0625, False, -0.0625),  # z* above their score: not beaten
        ("alpha", "q-a1", "t-a3", 2, 1.5, 0.75, None, None, None),  # no published score (an import's row)
        # q-b1 has no published thinking: t-b1 is not listed
    ])],
    "incomplete_provenance.sql": [
        (["ds-1"], [("r-b9",)]),  # query missing
        (["ds-0"], [("r-orphan",)]),  # dataset row missing
    ],
    "search/1_gain_by_position.sql": [([], [
        # domain, fifth, steps, accepted, mean gain, total gain
        # t-a1 steps 0,1 (gains 1-.75, 0) and t-a3 step 0 (1.5-1.25): .25+0+.25 = .5 over 3
        ("alpha", 0, 3, 2, 0.16667, 0.5),
        # t-a1 steps 2,3 (.75-.375, .375-.25) and t-a3 step 1 (1.25-.75): .375+.125+.5 = 1 over 3
        ("alpha", 1, 3, 3, 0.33333, 1.0),
        ("beta", 0, 1, 0, 0.0, 0.0),  # t-b1 step 0 kept 2.0
        ("beta", 1, 1, 1, 1.0, 1.0),  # 2.0 - 1.0
        ("beta", 2, 1, 1, 0.5, 0.5),  # 1.0 - 0.5
    ])],
    "search/2_acceptance_by_step.sql": [([], [
        # domain, step, steps, accepted, rate
        ("alpha", 0, 2, 2, 1.0),
        ("alpha", 1, 2, 1, 0.5),  # t-a1 kept its segment, t-a3 accepted
        ("alpha", 2, 1, 1, 1.0),
        ("alpha", 3, 1, 1, 1.0),
        ("beta", 0, 1, 0, 0.0),
        ("beta", 1, 1, 1, 1.0),
        ("beta", 2, 1, 1, 1.0),
    ])],
    "search/3_parse_failures.sql": [([], [
        ("alpha", 11, 3, 0.273),  # t-a1 8 candidates (2 unparsed) + t-a3 3 (1): 3/11
        ("beta", 5, 2, 0.4),  # t-b1 2+2+1 candidates, both of step 0 unparsed
    ])],
    "search/4_tokens_per_accepted_edit.sql": [([], [
        ("alpha", 227, 5, 45.4),  # (10+20+30+40+50+5+25+15) + (12+4+16) = 227 over 3 + 2 accepted
        ("beta", 70, 2, 35.0),  # 8+12+30+6+14 = 70 over 2 accepted
    ])],
    "search/5_stop_reasons.sql": [([], [
        ("alpha", "max_step", 2, 0.667),
        ("alpha", "initial_below_threshold", 1, 0.333),
        ("beta", "below_threshold", 1, 1.0),  # the rejected t-b2 is not a searched item
    ])],
}


def test_every_named_query_has_known_rows():
    """A new query under sql/queries/ cannot slip in with only the bind check: it needs a case here."""
    assert set(EXPECTED) == {_rel(p) for p in QUERY_FILES}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    db = tmp_path_factory.mktemp("lineage") / "lineage.duckdb"
    _seed(db)
    con = duckdb.connect(str(db), read_only=True)
    yield con
    con.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_query_returns_known_rows(seeded, name: str):
    """The exact rows, in order, worked out by hand from the seed."""
    sql = (QUERIES_DIR / name).read_text()
    for params, rows in EXPECTED[name]:
        assert seeded.execute(sql, params).fetchall() == rows, (name, params)
