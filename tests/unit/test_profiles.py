"""A profile's search section holds only what differs from SearchConfig's defaults; profile() resolves it."""

from dataclasses import asdict

from reer_assets.core.refinement import SearchConfig
from reer_assets.lib.profiles import PROFILES, profile, search_settings

# the values each profile resolved to when every profile restated every key (issue 27)
RESOLVED = {
    "default": {},
    "demo": {"max_step": 3, "max_tokens": 640, "edit_max_tokens": 320, "min_rollout_tokens": 48,
             "ban_foreign_tags": True, "num_rollouts": 2, "min_segment_chars": 40},
    "test": {"max_step": 2, "max_tokens": 480, "edit_max_tokens": 256, "min_rollout_tokens": 48,
             "ban_foreign_tags": True, "min_segment_chars": 40},
}


def test_a_profile_resolves_to_the_defaults_overlaid_by_its_differences():
    defaults = asdict(SearchConfig())
    assert defaults["stop_thresh"] == 0.25
    for name, differences in RESOLVED.items():
        assert profile(name)["search"] == {**defaults, **differences}
        assert search_settings(name) == SearchConfig(**{**defaults, **differences})


def test_a_profile_states_only_what_differs_from_the_defaults():
    defaults = asdict(SearchConfig())
    for name, prof in PROFILES.items():
        assert {k: v for k, v in prof["search"].items() if defaults[k] == v} == {}, name


def test_the_hash_identity_keeps_the_keys_earlier_hashes_held():
    assert set(search_settings("default").identity()) == {
        "stop_thresh", "max_step", "num_expansion", "temperature", "top_p", "top_k", "max_tokens",
        "edit_max_tokens", "ban_foreign_tags", "num_rollouts"}
    assert {"min_rollout_tokens", "min_segment_chars"} <= set(search_settings("test").identity())
