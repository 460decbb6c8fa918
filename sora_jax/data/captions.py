"""Captions of the built-in videos in many phrasings, and a held-out set of phrasings for evaluation.

A video's attributes (shape or digit, colour, direction, speed; `synthetic.attributes`) are written
out by templates with synonyms. Training draws from TRAIN; HELD_OUT uses templates and words that
never occur in training (the colour names are shared: they have no common synonyms), so a text
query in held-out words measures whether the text side generalises rather than matches strings.

Each video owns `PHRASINGS_PER_VIDEO` training phrasings, fixed by (split, index); the pipeline
draws one of them per epoch from the run's seed. Fixed phrasings keep the set of distinct strings
finite, so a frozen text tower embeds them once per dataset.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from sora_jax.data import synthetic

PHRASINGS_PER_VIDEO = 6
_SALT = 0xCA9710


@dataclasses.dataclass(frozen=True)
class Words:
  templates: tuple[str, ...]
  shapes: dict  # shape name -> synonyms
  digit: tuple[str, ...]  # phrasings of a digit d ('{d}' = the numeral, '{w}' = the word)
  directions: dict
  speeds: dict
  verbs: tuple[tuple[str, str], ...]  # (3rd person, -ing)


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

TRAIN = Words(
    templates=("a {colour} {shape} {verb} {direction}, {speed}",
               "a {colour} {shape} {verb} {speed} {direction}",
               "{speed}, a {colour} {shape} {verb} {direction}",
               "a {shape} in {colour} {verb} {direction} {speed}",
               "video of a {colour} {shape} {ing} {direction} {speed}",
               "the {colour} {shape} is {ing} {direction}, {speed}"),
    shapes={"square": ("square", "box", "block"), "circle": ("circle", "disc", "ball"),
            "triangle": ("triangle", "wedge"), "cross": ("cross", "plus sign"), "diamond": ("diamond", "rhombus")},
    digit=("digit {d}", "number {d}", "handwritten {d}", "{w}"),
    directions={"left": ("left", "to the left", "leftwards"), "right": ("right", "to the right", "rightwards"),
                "up": ("up", "upwards"), "down": ("down", "downwards")},
    speeds={"slowly": ("slowly", "at a slow pace"), "quickly": ("quickly", "fast")},
    verbs=(("moves", "moving"), ("slides", "sliding"), ("travels", "travelling"), ("goes", "going")),
)

HELD_OUT = Words(
    templates=("here we see a {colour} {shape} that {verb} {direction} {speed}",
               "{ing} {direction} {speed}: a single {colour} {shape}",
               "clip showing a {shape}, coloured {colour}, {ing} {speed} {direction}"),
    # Every word is one the frozen text tower itself places nearest its class among the class names
    # ('a {word}', 'it moves {word}'; tests/test_video_text.py): a held-out word the pretrained tower
    # cannot read ('x mark', 'rhomboid', 'unhurriedly'; compass words for directions) measures the
    # tower's vocabulary, not whether the learned text side generalises.
    shapes={"square": ("quadrate", "four-sided tile"), "circle": ("round dot", "disk"),
            "triangle": ("triangular shape", "three-sided shape"), "cross": ("crucifix",),
            "diamond": ("lozenge",)},
    digit=("numeral {d}", "glyph {d}"),
    directions={"left": ("leftward", "in a leftward direction"), "right": ("rightward", "in a rightward direction"),
                "up": ("upward", "in an upward direction"), "down": ("downward", "in a downward direction")},
    speeds={"slowly": ("gently", "sluggishly"), "quickly": ("rapidly", "swiftly")},
    verbs=(("drifts", "drifting"), ("glides", "gliding"), ("heads", "heading")),
)


def phrase(kind: str, attrs: dict, words: Words, rng: np.random.Generator) -> str:
  """One phrasing of a video's attributes, its template and synonyms drawn from `rng`."""
  pick = lambda options: options[int(rng.integers(0, len(options)))]
  if kind == "moving_shapes":
    shape = pick(words.shapes[synthetic.SHAPES[attrs["label"]]])
  else:
    d = attrs["label"]
    shape = pick(words.digit).format(d=d, w=_DIGIT_WORDS[d])
  verb, ing = pick(words.verbs)
  template = pick(words.templates)
  return _articles(template.format(colour=synthetic.COLOUR_NAMES[attrs["colour"]], shape=shape, verb=verb, ing=ing,
                         direction=pick(words.directions[synthetic.DIRECTIONS[attrs["direction"]]]),
                         speed=pick(words.speeds[synthetic.SPEEDS[attrs["speed"]]])))


def _articles(text: str) -> str:
  """'a orange' -> 'an orange'."""
  return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def _rng(kind: str, split: str, index: int, held_out: bool) -> np.random.Generator:
  return np.random.default_rng([_SALT, synthetic.SPLIT_IDS[split], index, kind == "moving_digits", held_out])


def video_phrasings(kind: str, split: str, index: int, count: int = PHRASINGS_PER_VIDEO) -> list[str]:
  """The training phrasings of one built-in video: its one-template caption first, then `count` - 1
  drawn from TRAIN (repeats removed)."""
  attrs = synthetic.attributes(kind, split, index)
  rng = _rng(kind, split, index, False)
  out = [_articles(synthetic.caption(kind, attrs))] + [phrase(kind, attrs, TRAIN, rng) for _ in range(count - 1)]
  return list(dict.fromkeys(out))


def held_out_phrasing(kind: str, split: str, index: int) -> str:
  """A phrasing of video `index` in HELD_OUT's templates and words only (evaluation queries)."""
  return phrase(kind, synthetic.attributes(kind, split, index), HELD_OUT, _rng(kind, split, index, True))
