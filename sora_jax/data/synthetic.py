"""Built-in datasets `moving_shapes` and `moving_digits`, generated offline from (seed, index).

Each video shows one object moving in a straight line in one of 4 directions over a textured
background with distractors. The object stays whole inside the frame for the whole video (an object
split at the frame edges hides its shape), and its position in a
single frame has the same distribution whatever the direction (the still coordinate is drawn like a
moving one at a random time): the motion label is only visible across frames. Nuisances:
object colour and size (radius S/6..S/4), speed (0.5 or 1 px/frame at 40 px), start position; a muted
background with a faint grating and noise, and 0-2 small distractor blobs, both redrawn every
frame, so that nothing but the object persists through a video (else contrastive learning
matches views by a background or distractor signature instead of by the object).

Videos are stored as one lossless PNG "filmstrip" image [L*S, S, 3] per video (one encode and one
decode per video rather than L), in a TFDS GeneratorBasedBuilder each, prepared into the data dir
on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

SHAPES = ("square", "circle", "triangle", "cross", "diamond")
DIRECTIONS = ("left", "right", "up", "down")  # motion_label
SPEEDS = ("slowly", "quickly")
_DIR_VEC = np.array([(0, -1), (0, 1), (-1, 0), (1, 0)], np.float32)  # (dy, dx) per direction
COLOURS = {  # colour label: the order of this dict
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (60, 90, 235), "yellow": (235, 215, 40),
    "magenta": (215, 50, 205), "cyan": (40, 205, 215), "white": (240, 240, 240), "orange": (245, 140, 30),
}
COLOUR_NAMES = tuple(COLOURS)
_COLOUR_RGB = np.array([COLOURS[c] for c in COLOUR_NAMES], np.float32)
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
KINDS = ("moving_shapes", "moving_digits")  # the one-object datasets (moving_actors: data/actors.py)
DATASET_SEED = 20240611  # the content of the built-in datasets; the run's config.seed is separate


def shape_alpha(shape: str, r: int) -> np.ndarray:
  """float32 [2r+1, 2r+1] coverage mask of a shape of radius r."""
  y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
  if shape == "square":
    m = np.maximum(abs(x), abs(y)) <= r * 0.8
  elif shape == "circle":
    m = x * x + y * y <= r * r
  elif shape == "triangle":
    m = (y >= -r) & (y <= r * 0.8) & (abs(x) <= (y + r) * 0.55)
  elif shape == "cross":
    w = max(1.0, r / 3)
    m = ((abs(x) <= w) & (abs(y) <= r)) | ((abs(y) <= w) & (abs(x) <= r))
  else:  # diamond
    m = abs(x) + abs(y) <= r
  return m.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _digit_images(split: str) -> tuple[np.ndarray, np.ndarray]:
  """sklearn's 8x8 handwritten digits, disjoint across splits: (alpha [n, 8, 8] in [0, 1], labels)."""
  d = load_digits()
  images, labels = (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
  n = len(labels)
  cut = {"train": (0, int(n * 0.7)), "validation": (int(n * 0.7), int(n * 0.85)), "test": (int(n * 0.85), n)}
  lo, hi = cut[split]
  return images[lo:hi], labels[lo:hi]


def paste(video: np.ndarray, alpha: np.ndarray, ys: np.ndarray, xs: np.ndarray, colour: np.ndarray) -> None:
  """Blends `colour` with coverage `alpha` [h, w] centred at (ys[t], xs[t]) into float video [T, S, S, 3],
  all frames at once (wrapping around the edges where it would cross them)."""
  t_len, s = video.shape[:2]
  h, w = alpha.shape
  rows = (np.round(ys).astype(np.int64)[:, None] + np.arange(h) - h // 2) % s  # [T, h]
  cols = (np.round(xs).astype(np.int64)[:, None] + np.arange(w) - w // 2) % s  # [T, w]
  tt = np.arange(t_len)[:, None, None]
  region = video[tt, rows[:, :, None], cols[:, None, :]]  # [T, h, w, 3]
  a = alpha[None, :, :, None]
  video[tt, rows[:, :, None], cols[:, None, :]] = region * (1 - a) + colour * a


# The background and the distractors are redrawn every frame from distributions shared by all
# videos: nothing but the object persists through a video, so matching two views of a video
# (InfoNCE) cannot succeed on a background or distractor signature and has to use the object.
_BG_BASE = np.array((70, 72, 74), np.float32)
_BG_FREQS = np.array(((0, 2), (2, 0), (1, 1), (1, -1)), np.float32)  # (fy, fx) cycles per frame


def background(rng: np.random.Generator, s: int, t_len: int) -> np.ndarray:
  """A muted grey with a faint grating (orientation and phase drawn per frame) and fine noise:
  float32 [T, S, S, 3]."""
  y, x = np.mgrid[0:s, 0:s].astype(np.float32) / s
  freqs = _BG_FREQS[rng.integers(0, len(_BG_FREQS), size=t_len)]  # [T, 2]
  phase = rng.uniform(0, 2 * np.pi, size=(t_len, 1, 1)).astype(np.float32)
  tex = 0.12 * np.cos(2 * np.pi * (freqs[:, 0, None, None] * y + freqs[:, 1, None, None] * x) + phase)
  tex = tex + rng.normal(0, 0.06, (t_len, s, s)).astype(np.float32)
  return _BG_BASE[None, None, None, :] * (1.0 + tex[..., None])


def distractors(rng: np.random.Generator, video: np.ndarray) -> None:
  """0-2 small dim blobs per frame at random places, in random colours (clutter, not a signature)."""
  t_len, s = video.shape[:2]
  for t in range(t_len):
    for _ in range(rng.integers(0, 3)):
      alpha = shape_alpha("circle", int(rng.integers(1, 3))) * 0.8
      y, x = rng.uniform(0, s, size=(2, 1))
      paste(video[t:t + 1], alpha, y, x, rng.uniform(60, 200, size=3).astype(np.float32))


def _trajectory(rng: np.random.Generator, direction: int, step: float, h: int, s: int, t: np.ndarray):
  """Centres (ys, xs) [T] of an object h px wide moving `step` px per frame that stays whole inside
  the frame. Along the motion the start is uniform over the starts that keep it inside; the still
  coordinate is drawn as a moving one seen at a random time, so a single frame's position has one
  distribution for all directions."""
  lo, hi = h // 2, s - (h - h // 2)  # centre range that keeps all h rows inside [0, s)
  travel = step * (len(t) - 1)
  if hi - lo < travel:
    raise ValueError(f"an object of {h} px moving {travel:.1f} px does not fit in {s} px frames")
  start = rng.uniform(lo, hi - travel, size=2)
  dy, dx = _DIR_VEC[direction]
  moving = start[0] + step * t if (dy + dx) > 0 else hi - (start[0] - lo) - step * t
  still = np.full_like(t, start[1] + rng.uniform(0, travel))
  return (moving, still) if dy != 0 else (still, moving)


def render(kind: str, split: str, index: int, *, num_frames: int = 16, size: int = 40, clean: bool = False) -> dict:
  """One video and its labels, a pure function of (kind, split, index): uint8 [L, S, S, 3] + labels.

  clean: the same object and motion on black, without background or distractors (for tests)."""
  rng = _video_rng(kind, split, index)
  s, t_len = size, num_frames
  clutter = np.random.default_rng(rng.integers(0, 2**63))  # its own stream: `clean` keeps the object
  video = background(clutter, s, t_len) * (not clean)
  t = np.arange(t_len, dtype=np.float32)
  if not clean:
    distractors(clutter, video)
  a = _draw_attributes(kind, split, rng, s)
  colour = np.clip(_COLOUR_RGB[a["colour"]] + a.pop("colour_noise"), 0, 255).astype(np.float32)
  step = 0.5 * (1 + a["speed"]) * (s / 40.0)  # px per frame
  if kind == "moving_shapes":
    alpha = shape_alpha(SHAPES[a["label"]], a.pop("radius"))
  else:
    images, _ = _digit_images(split)
    alpha = np.kron(images[a.pop("digit_index")], np.ones((a.pop("scale"),) * 2, np.float32))
  ys, xs = _trajectory(rng, a["direction"], step, alpha.shape[0], s, t)
  paste(video, alpha, ys, xs, colour)
  return {"video": np.clip(np.round(video), 0, 255).astype(np.uint8), "label": a["label"],
          "motion_label": a["direction"], "caption": caption(kind, a)}


def _draw_attributes(kind: str, split: str, rng: np.random.Generator, size: int) -> dict:
  """What a video shows, drawn from its generator in render's order: label, direction, speed,
  colour (and the size draws render needs next)."""
  a = {"direction": int(rng.integers(0, 4)), "speed": int(rng.integers(0, 2)),
       "colour": int(rng.integers(0, len(COLOUR_NAMES)))}
  a["colour_noise"] = rng.normal(0, 12, size=3)
  if kind == "moving_shapes":
    a["label"] = int(rng.integers(0, len(SHAPES)))
    a["radius"] = int(rng.integers(max(3, size // 6), max(4, size // 4) + 1))
  else:
    _, labels = _digit_images(split)
    a["digit_index"] = j = int(rng.integers(0, len(labels)))
    a["scale"] = max(1, int(rng.integers(2, 4)) * size // 40)  # 16 or 24 px digits at 40 px
    a["label"] = int(labels[j])
  return a


def attributes(kind: str, split: str, index: int) -> dict:
  """label, direction, speed and colour of video `index`, without rendering it (the same draws as
  `render`): what captions are written from."""
  rng = _video_rng(kind, split, index)
  rng.integers(0, 2**63)  # the clutter stream's seed, drawn first by render
  a = _draw_attributes(kind, split, rng, 40)
  return {k: a[k] for k in ("label", "direction", "speed", "colour")}


def caption(kind: str, a: dict) -> str:
  """The one-template caption of a video's attributes: 'a red square moves left, slowly'."""
  name = SHAPES[a["label"]] if kind == "moving_shapes" else f"digit {a['label']}"
  return f"a {COLOUR_NAMES[a['colour']]} {name} moves {DIRECTIONS[a['direction']]}, {SPEEDS[a['speed']]}"


def _video_rng(kind: str, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([DATASET_SEED, SPLIT_IDS[split], index, 0 if kind == "moving_shapes" else 1])


def png(image) -> "io.BytesIO":
  """PNG-encodes with PIL (several times faster than TFDS's eager TF encoder on tiny images)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  buf.seek(0)
  return buf


SPLIT_STRIDE = 1_000_000


def video_id(split: str, index: int) -> int:
  """Stable, unique across splits; `video_id % SPLIT_STRIDE` is the index in the split."""
  return SPLIT_IDS[split] * SPLIT_STRIDE + index


def class_names(kind: str) -> tuple[str, ...]:
  return SHAPES if kind == "moving_shapes" else tuple(str(d) for d in range(10))


# ----------------------------------------------------------------------------- TFDS builders

@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Split sizes and clip shape of one builder config."""
  num_train: int = 3200
  num_validation: int = 400
  num_test: int = 400
  num_frames: int = 16
  size: int = 40


CONFIGS = [
    SyntheticConfig(name="default", description="3200/400/400 videos of 16 frames at 40x40"),
    SyntheticConfig(name="small", description="192/64/64 videos of 16 frames at 40x40 (tests)",
                    num_train=192, num_validation=64, num_test=64),
]


class _Synthetic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The shared TFDS builder; subclasses name the kind of object."""
  VERSION = tfds.core.Version("4.0.0")
  RELEASE_NOTES = {"4.0.0": "Objects stay whole inside the frame (no wrap-around), speeds 0.5 and 1 px/frame.",
                   "3.0.0": "Background grating and distractors redrawn every frame: only the object persists.",
                   "2.0.0": "Larger objects; a few shared low-contrast backgrounds redrawn per frame.",
                   "1.0.0": "Initial release."}
  BUILDER_CONFIGS = CONFIGS
  KIND = ""
  code_path = None  # defined outside a TFDS dataset package: no checksums file to look up

  def _info(self):
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # Filmstrip: frames stacked along the height, [L * S, S, 3].
            "video": tfds.features.Image(shape=(c.num_frames * c.size, c.size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=class_names(self.KIND)),
            "motion_label": tfds.features.ClassLabel(names=DIRECTIONS),
            "video_id": tfds.features.Scalar(dtype=np.int64),
            "caption": tfds.features.Text(),
        }),
        supervised_keys=("video", "label"),
    )

  def _split_generators(self, dl_manager):
    c = self.builder_config
    return {"train": self._generate_examples("train", c.num_train),
            "validation": self._generate_examples("validation", c.num_validation),
            "test": self._generate_examples("test", c.num_test)}

  def _generate_examples(self, split, count):
    c = self.builder_config
    for i in range(count):
      ex = render(self.KIND, split, i, num_frames=c.num_frames, size=c.size)
      ex["video"] = png(ex["video"].reshape(c.num_frames * c.size, c.size, 3))
      ex["video_id"] = video_id(split, i)
      yield i, ex


class MovingShapes(_Synthetic):
  """Shapes moving left/right/up/down over textured backgrounds with distractors."""
  KIND = "moving_shapes"


class MovingDigits(_Synthetic):
  """scikit-learn's handwritten digits moving left/right/up/down."""
  KIND = "moving_digits"


_BUILDERS = {"moving_shapes": MovingShapes, "moving_digits": MovingDigits}


def builder(name: str, data_dir: str):
  """'moving_shapes[/small]' -> a prepared TFDS builder (generated into data_dir on first use)."""
  kind, _, config_name = name.partition("/")
  b = _BUILDERS[kind](data_dir=data_dir, config=config_name or "default")
  b.download_and_prepare()
  return b
