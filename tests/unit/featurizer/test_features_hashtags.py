from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from libs.common.features.hashtags import VARIANTS, canonical, fold, normalise_all


@given(st.text(max_size=80))
def test_fold_is_idempotent(tag):
    assert fold(fold(tag)) == fold(tag)


@given(st.text(max_size=80), st.booleans())
def test_canonical_is_idempotent_and_total(tag, mapped):
    once = canonical(tag, map_variants=mapped)
    assert canonical(once, map_variants=mapped) == once


@given(st.lists(st.text(max_size=30), max_size=40), st.booleans())
def test_normalise_all_is_idempotent_and_distinct(tags, mapped):
    once = normalise_all(tags, map_variants=mapped)
    assert normalise_all(once, map_variants=mapped) == once
    assert len(once) == len(set(once))
    assert all(once)


def test_case_accents_hash_and_punctuation_fold_together():
    full_width = "#" + "".join(chr(ord(c) + 0xFEE0) for c in "adorable")  # as full-width keyboards type it
    variants = ["#Adorable", "#adorable", "#\u00c1DORABLE!", "adorable", full_width]
    assert {fold(t) for t in variants} == {"adorable"}


def test_adorabull_is_a_decision_of_the_version():
    assert canonical("#Adorabull", map_variants=False) == "adorabull"
    assert canonical("#Adorabull", map_variants=True) == "adorable"


def test_variant_mapping_has_no_chains():
    assert not set(VARIANTS.values()) & set(VARIANTS)
    assert all(fold(k) == k and fold(v) == v for k, v in VARIANTS.items())


def test_nothing_left_is_dropped():
    assert normalise_all(["#", "!!!", "   ", "#dog"], map_variants=False) == ["dog"]
