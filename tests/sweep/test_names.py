"""Specification of trial names: readable key=value lists, safe as directory names, unique, and the
same on every rerun."""
import pytest

from vit_jax.sweep import names
from vit_jax.sweep.space import axis, product


def test_a_name_lists_the_overrides_with_the_shortest_unambiguous_keys():
  trials = product(axis("optim.weight_decay", [0.1]), axis("model.dropout_rate", [0.0]))
  assert names.trial_names(trials) == ["weight_decay=0.1,dropout_rate=0"]


def test_keys_with_the_same_last_part_keep_as_much_of_their_path_as_tells_them_apart():
  assert names.short_keys(["evals.test.every", "evals.fewshot.every", "train.steps"]) == {
      "evals.test.every": "test.every", "evals.fewshot.every": "fewshot.every",
      "train.steps": "steps"}


@pytest.mark.parametrize("value, text", [
    (1e-3, "0.001"), (3e-5, "3e-05"), (0.0, "0"), (16, "16"), (True, "true"),
    ("imagenet2012:5.1.0", "imagenet2012_5.1.0"), ("a/b c", "a_b_c"), ("", "empty"),
    (("head/.*=10", "x"), "head_.__10_x"),
])
def test_values_are_written_short_and_filesystem_safe(value, text):
  assert names.value_text(value) == text


def test_a_trial_without_overrides_is_the_base():
  assert names.trial_names([{}]) == ["base"]


def test_a_long_name_is_cut_and_ends_in_a_hash_of_its_overrides():
  trial = {f"model.field_{i}": "x" * 20 for i in range(8)}
  (name,) = names.trial_names([trial])
  assert len(name) == names.MAX_LENGTH and name.endswith("-" + names.overrides_hash(trial))
  assert names.trial_names([trial]) == [name]  # stable


def test_trials_whose_names_would_collide_get_distinct_hash_suffixes():
  trials = [{"data.name": "a/b"}, {"data.name": "a:b"}]
  first, second = names.trial_names(trials)
  assert first.startswith("name=a_b-") and second.startswith("name=a_b-") and first != second
  assert names.trial_names(trials) == [first, second]  # the same on a rerun
