"""Generate clips with a trained generator run: like a video, from a sentence, or between two videos.

    gen = Generator("runs/generate")
    clips = gen.sample(gen.condition_of_files(["clip.mp4"]), num=4, seed=0)   # uint8 [4, T, S, S, 3]
    generate_videos("runs/generate", like="a.mp4", to="b.mp4", steps=8, out="out/")   # mp4 + PNG files

A generator run (`sora-jax train --config generate`) holds the frozen encoder it was trained on, so
the conditions (a video's embedding, a sentence's vector in the video-text space) come from that
same network. Sampling runs on the run's mesh (`evaluation.sampler.Sampler`); sample r of a seed does
not depend on how many are drawn with it.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from sora_jax import storage
from sora_jax.apps.embed_index import Embedder
from sora_jax.apps.html import frame_strip
from sora_jax.config import terms
from sora_jax.data.video_io import encode_video
from sora_jax.errors import ConfigError, DataError
from sora_jax.evaluation.sampler import Sampler
from sora_jax.objectives import sampling_generator
from sora_jax.training.captions import text_vectors
from sora_jax.training.checkpoint import checkpoint_dir


def slerp(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
  """[steps, E] unit vectors along the great circle from a to b (both ends included)."""
  a, b = (np.asarray(v, np.float64) / max(np.linalg.norm(v), 1e-12) for v in (a, b))
  angle = np.arccos(np.clip(a @ b, -1.0, 1.0))
  ts = np.linspace(0.0, 1.0, steps)
  if angle < 1e-6:
    return np.repeat(a[None], steps, 0).astype(np.float32)
  out = (np.sin((1 - ts) * angle)[:, None] * a + np.sin(ts * angle)[:, None] * b) / np.sin(angle)
  return out.astype(np.float32)


class Generator:
  """A trained generator run ready to sample (its config, frozen encoder and generator weights)."""

  def __init__(self, workdir, *, step: int | None = None):
    self.embedder = Embedder(workdir, step=step)
    self.config, self.step = self.embedder.config, self.embedder.step
    if "generate" not in terms(self.config.objective.name):
      raise ConfigError(f"{str(workdir)!r} is not a generator run (objective {self.config.objective.name!r}); train "
                        "one with `sora-jax train --config generate --config.generate.encoder_workdir=RUN`")
    self.sampler = Sampler(self.config, sampling_generator(self.embedder.objective_params), self.embedder.mesh)

  def condition_of_files(self, paths: Sequence) -> np.ndarray:
    """Video files -> [N, E] conditions (the frozen encoder's `generate.condition` output); DataError
    naming a file that does not decode."""
    key = self.config.generate.condition
    rows = {}
    for idx, out in self.embedder.embed_files([str(p) for p in paths]):
      rows.update(zip(idx, out[key]))
    return np.stack([rows[i] for i in range(len(paths))]).astype(np.float32)

  def condition_of_text(self, texts: Sequence[str]) -> np.ndarray:
    """Sentences -> [N, E] conditions in the encoder's video-text space (condition 'aligned' only)."""
    if self.config.generate.condition != "aligned":
      raise ConfigError("this generator is conditioned on video embeddings (generate.condition="
                        f"{self.config.generate.condition!r}); for sentences train one on an encoder run of "
                        "--config text with --config.generate.condition=aligned")
    if any(not str(t).strip() for t in texts):
      raise DataError("empty --text: describe the video, e.g. 'a red square moves left'")
    return text_vectors(self.config, self.embedder.objective_params, list(texts), cache=False).astype(np.float32)

  def sample(self, cond: np.ndarray, **kwargs) -> np.ndarray:
    """`Sampler.sample`: cond [N, E] -> uint8 clips [N * num, T, S, S, 3]."""
    return self.sampler.sample(cond, **kwargs)


_CACHE: list = []


def get_generator(workdir) -> Generator:
  """A Generator, reused within the process for the same run and latest checkpoint (loaded and
  compiled once: the CLI and the Python API call this)."""
  ckdir = checkpoint_dir(workdir)
  steps = [int(p.name) for p in ckdir.iterdir() if p.name.isdigit()] if ckdir.is_dir() else []
  for key, gen in _CACHE:
    if key == (str(ckdir), max(steps, default=None)):
      return gen
  gen = Generator(workdir)
  _CACHE[:] = _CACHE[-1:] + [((str(ckdir), gen.step), gen)]  # keep two
  return gen


def write_clips(out, clips: np.ndarray, names: Sequence[str], *, fps: float = 8.0) -> list[str]:
  """Each uint8 clip [T, H, W, 3] -> OUT/NAME.mp4 and OUT/NAME.png (its frames side by side)."""
  out = storage.path(out)
  if out.exists() and not out.is_dir():
    raise DataError(f"--out {str(out)!r} is a file; give a folder for the clips")
  out.mkdir(parents=True, exist_ok=True)
  written = []
  for clip, name in zip(clips, names):
    storage.write_bytes(out / f"{name}.mp4", encode_video(clip, fps=fps))
    storage.write_bytes(out / f"{name}.png", frame_strip(clip, num=len(clip), height=64))
    written.append(str(out / f"{name}.mp4"))
  return written


def generate_videos(workdir, *, out, like=None, to=None, text=None, num: int = 4, seed: int = 0,
                    guidance: float | None = None, steps: int = 8, solver: str | None = None,
                    sample_steps: int | None = None, progress: bool = False) -> list[str]:
  """Writes clips to `out` and returns their paths: `num` like the video `like`, or `num` for the
  sentence `text`, or (`like` and `to`) `steps` clips along the path between two videos' conditions
  (each from the same noise, so only the condition changes). guidance, solver, sample_steps: the
  sampler's (default: the run's generate.*)."""
  if num < 1:
    raise DataError(f"--num {num}: ask for at least one clip")
  if to is not None and like is None:
    raise DataError("--to interpolates from a --like video; give --like A --to B")
  if (like is None) == (text is None):
    raise DataError("give one of --like VIDEO or --text SENTENCE")
  if to is not None and steps < 2:
    raise DataError(f"--steps {steps}: an interpolation needs at least 2 clips (both ends)")
  target = storage.path(out)
  if target.exists() and not target.is_dir():  # before any sampling
    raise DataError(f"--out {str(out)!r} is a file; give a folder for the clips")
  gen = get_generator(workdir)
  how = dict(seed=seed, guidance=guidance, solver=solver, sample_steps=sample_steps)
  if text is not None:
    clips = gen.sample(gen.condition_of_text([text]), num=num, progress=progress, **how)
    names = [f"text_{r:03d}" for r in range(num)]
  elif to is None:
    clips = gen.sample(gen.condition_of_files([like]), num=num, progress=progress, **how)
    names = [f"like_{r:03d}" for r in range(num)]
  else:
    a, b = gen.condition_of_files([like, to])
    path = slerp(a, b, steps)  # both conditions are unit vectors
    clips = np.concatenate([gen.sample(c[None], num=1, **how) for c in
                            tqdm(path, desc="interpolate", unit="clip", disable=not progress, file=sys.stderr)])
    names = [f"step_{i:03d}" for i in range(steps)]
  return write_clips(out, clips, names)
