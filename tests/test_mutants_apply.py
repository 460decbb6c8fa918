"""`make mutants` cannot rot unnoticed: every mutant's original text is still in the code, once."""

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
      assert (ROOT / t.split("::")[0]).is_file(), (name, t)
