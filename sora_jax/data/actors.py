"""Built-in multi-actor dataset `moving_actors`, generated offline from (split, index).

Each video shows 2 to 4 actors (shapes in distinct colours) over the textured background and
distractors of `moving_shapes`. Each actor has its own shape and its own action:

  walks: straight at 0.6 px/frame (at 40 px), in one of 4 directions;
  runs:  straight at 1.5 px/frame;
  stops: walks or runs, then stands still from a frame between 6 and 10;
  turns: walks or runs, then turns 90 degrees (left or right) from a frame between 6 and 10.

No single frame gives the action (a still frame of a walker, a runner, a stopped or a turning actor
look alike), and an 8-frame clip around the middle of the video (frames 4-11) contains the change of
every actor that stops or turns. Actors stay whole inside the frame; they cross and occlude each
other (an actor drawn later is in front). Per frame each actor has its box (x0, y0, x1, y1) in
pixels of the frame, the extent of its whole shape whether occluded or not (amodal, as tracks give
it); per actor, its shape, action and colour; per video, a caption ("the red square runs left
while the blue circle stops"). The clip-level `label` and `motion_label` are actor 0's (the actor
drawn first, behind the others).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from sora_jax.data import synthetic

KIND = "moving_actors"
MOTIONS = ("walks", "runs", "stops", "turns")  # actor_motion
MAX_ACTORS = 4
WALK, RUN = 0.6, 1.5  # px per frame at 40 px
CHANGE_FRAMES = (6, 10)  # the frame (inclusive range) from which an actor stops or turns
# What the pipeline carries besides frames and labels (None = the video's length): the tracks in
# pixels and the per-actor labels (-1 = no actor).
CARRIED = {"boxes": ((MAX_ACTORS, None, 4), "float32"), "actor_label": ((MAX_ACTORS,), "int64"),
           "actor_motion": ((MAX_ACTORS,), "int64")}
_SEED_SALT = 2  # moving_shapes 0, moving_digits 1
_DIR_VEC = np.array([(0, -1), (0, 1), (-1, 0), (1, 0)], np.float32)  # (dy, dx) per direction, as synthetic


def _velocities(rng: np.random.Generator, motion: int, direction: int, num_frames: int, scale: float):
  """Per-frame displacement (dy, dx) [T-1, 2] of one actor's action."""
  speed = (WALK if motion == 0 else RUN if motion == 1 else (WALK, RUN)[int(rng.integers(0, 2))]) * scale
  change = int(rng.integers(CHANGE_FRAMES[0], CHANGE_FRAMES[1] + 1))
  turn = int(rng.integers(0, 2)) * 2 - 1  # -1: a left turn, +1: a right turn
  v = np.tile(_DIR_VEC[direction] * speed, (num_frames - 1, 1))
  if motion == 2:
    v[change:] = 0.0
  elif motion == 3:
    dy, dx = _DIR_VEC[direction]
    v[change:] = np.array((dx * turn, -dy * turn), np.float32) * speed  # the direction rotated by 90 degrees
  return v


def _place(rng: np.random.Generator, v: np.ndarray, extent: int, size: int) -> np.ndarray:
  """Centres [T, 2] of an actor `extent` px wide moving by `v`, whole inside the frame throughout:
  the start is uniform over the starts that keep it inside."""
  rel = np.concatenate([np.zeros((1, 2), np.float32), np.cumsum(v, axis=0)])
  lo, hi = extent // 2, size - (extent - extent // 2)
  start_lo, start_hi = lo - rel.min(0), hi - rel.max(0)
  if np.any(start_hi < start_lo):
    raise ValueError(f"an actor of {extent} px travelling {np.ptp(rel, 0)} px does not fit in {size} px frames")
  return rng.uniform(start_lo, start_hi).astype(np.float32) + rel


def _box(alpha: np.ndarray, centres: np.ndarray) -> np.ndarray:
  """[T, 4] (x0, y0, x1, y1): the pixel extent of the shape's coverage where `synthetic.paste` puts it."""
  h, w = alpha.shape
  rows, cols = np.nonzero(alpha.any(1))[0], np.nonzero(alpha.any(0))[0]
  top = np.round(centres[:, 0]) - h // 2
  left = np.round(centres[:, 1]) - w // 2
  return np.stack([left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1], 1).astype(np.float32)


def _draw(rng: np.random.Generator, size: int) -> list[dict]:
  """What a video shows, in draw order: per actor shape, colour, action, direction, radius."""
  n = int(rng.integers(2, MAX_ACTORS + 1))
  colours = rng.choice(len(synthetic.COLOUR_NAMES), size=n, replace=False)
  return [{"shape": int(rng.integers(0, len(synthetic.SHAPES))), "colour": int(colours[i]),
           "motion": int(rng.integers(0, len(MOTIONS))), "direction": int(rng.integers(0, 4)),
           "radius": int(rng.integers(max(3, size // 10), max(4, size // 8) + 1))} for i in range(n)]


def _rng(split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([synthetic.DATASET_SEED, synthetic.SPLIT_IDS[split], index, _SEED_SALT])


def render(split: str, index: int, *, num_frames: int = 16, size: int = 40, clean: bool = False) -> dict:
  """One video, a pure function of (split, index): uint8 video [T, S, S, 3], boxes float32
  [MAX_ACTORS, T, 4], num_actors, and per actor (padded with -1) actor_label (shape), actor_motion,
  actor_colour; the clip-level label / motion_label (actor 0's) and the caption.

  clean: the same actors on black, without background or distractors (for tests)."""
  rng = _rng(split, index)
  clutter = np.random.default_rng(rng.integers(0, 2**63))
  video = synthetic.background(clutter, size, num_frames) * (not clean)
  if not clean:
    synthetic.distractors(clutter, video)
  actors = _draw(rng, size)
  boxes = np.zeros((MAX_ACTORS, num_frames, 4), np.float32)
  for i, a in enumerate(actors):
    alpha = synthetic.shape_alpha(synthetic.SHAPES[a["shape"]], a["radius"])
    v = _velocities(rng, a["motion"], a["direction"], num_frames, size / 40.0)
    centres = _place(rng, v, alpha.shape[0], size)
    colour = np.clip(synthetic.COLOURS[synthetic.COLOUR_NAMES[a["colour"]]] + rng.normal(0, 12, 3), 0, 255)
    synthetic.paste(video, alpha, centres[:, 0], centres[:, 1], colour.astype(np.float32))
    boxes[i] = _box(alpha, centres)
  pad = lambda key: np.array([a[key] for a in actors] + [-1] * (MAX_ACTORS - len(actors)), np.int64)
  return {"video": np.clip(np.round(video), 0, 255).astype(np.uint8), "boxes": boxes,
          "num_actors": len(actors), "actor_label": pad("shape"), "actor_motion": pad("motion"),
          "actor_colour": pad("colour"), "label": actors[0]["shape"], "motion_label": actors[0]["motion"],
          "caption": caption(actors)}


def caption(actors: list[dict]) -> str:
  """'the red square runs left while the blue circle stops and the green cross turns'."""
  def phrase(a):
    action = MOTIONS[a["motion"]]
    where = f" {synthetic.DIRECTIONS[a['direction']]}" if a["motion"] < 2 else ""
    return f"the {synthetic.COLOUR_NAMES[a['colour']]} {synthetic.SHAPES[a['shape']]} {action}{where}"
  parts = [phrase(a) for a in actors]
  return parts[0] + " while " + (", ".join(parts[1:-1]) + " and " if len(parts) > 2 else "") + parts[-1]


class MovingActors(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """2-4 shapes per video, each walking, running, stopping or turning; boxes per actor and frame."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = synthetic.CONFIGS  # default 3200/400/400, small 192/64/64; 16 frames at 40x40
  KIND = KIND
  code_path = None

  def _info(self):
    c = self.builder_config
    per_actor = lambda: tfds.features.Tensor(shape=(MAX_ACTORS,), dtype=np.int64)
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Image(shape=(c.num_frames * c.size, c.size, 3), encoding_format="png"),
            "boxes": tfds.features.Tensor(shape=(MAX_ACTORS, c.num_frames, 4), dtype=np.float32),
            "num_actors": tfds.features.Scalar(dtype=np.int64),
            "actor_label": per_actor(), "actor_motion": per_actor(), "actor_colour": per_actor(),
            "label": tfds.features.ClassLabel(names=synthetic.SHAPES),
            "motion_label": tfds.features.ClassLabel(names=MOTIONS),
            "video_id": tfds.features.Scalar(dtype=np.int64),
            "caption": tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    c = self.builder_config
    return {split: self._generate_examples(split, count) for split, count in
            (("train", c.num_train), ("validation", c.num_validation), ("test", c.num_test))}

  def _generate_examples(self, split, count):
    c = self.builder_config
    for i in range(count):
      ex = render(split, i, num_frames=c.num_frames, size=c.size)
      ex["video"] = synthetic.png(ex["video"].reshape(c.num_frames * c.size, c.size, 3))
      ex["video_id"] = synthetic.video_id(split, i)
      yield i, ex


def builder(name: str, data_dir: str):
  """'moving_actors[/small]' -> a prepared TFDS builder (generated into data_dir on first use)."""
  _, _, config_name = name.partition("/")
  b = MovingActors(data_dir=data_dir, config=config_name or "default")
  b.download_and_prepare()
  return b
