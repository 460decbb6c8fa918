"""`make mutants` cannot rot unnoticed: every mutant's original text is still in the code, once, and the tests
it names still exist."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import mutants  # noqa: E402


def test_every_mutant_applies_to_the_code_as_it_is():
  stale = {name: (path, (ROOT / path).read_text().count(old)) for name, (path, old, _, _) in mutants.MUTANTS.items()
           if (ROOT / path).read_text().count(old) != 1}
  assert not stale, f"mutants whose original text is not in the code exactly once (update tests/mutants.py): {stale}"
  for name, (_, _, _, tests) in mutants.MUTANTS.items():
    for t in tests:
      path, _, test = t.partition("::")
      assert (ROOT / path).is_file(), (name, t)
      # A renamed test would leave the mutant "killed" by pytest finding nothing to run.
      assert not test or f"def {test.split('[')[0]}(" in (ROOT / path).read_text(), (name, t)
