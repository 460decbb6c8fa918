"""Actor tracks through the pipeline: boxes follow the frames' sampling, cropping and resizing.

A track is one box per source frame, (x0, y0, x1, y1) in pixels of the source frame (pixel i spans
[i, i + 1)). The model takes boxes normalised to the clip's frames: (x0, y0, x1, y1) in [0, 1] of
the output frame, clipped to it. A box wholly outside the crop clips to a line on the border.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from sora_jax import storage
from sora_jax.data import clips
from sora_jax.errors import DataError


def _crop_axis(edge, lo, hi, n, size: int):
  """Source edge coordinates -> normalised output coordinates of `tf.image.crop_and_resize` along one
  axis: output sample j reads source pixel centre lo*(n-1) + j*(hi-lo)*(n-1)/(size-1)."""
  n = tf.cast(n, tf.float32)
  j = (edge - 0.5 - lo * (n - 1.0)) * (size - 1.0) / ((hi - lo) * (n - 1.0))
  return (j + 0.5) / size


def train_boxes(boxes, frame_indices, crop, height, width, size: int):
  """boxes float32 [A, L, 4] (pixels), frame_indices int32 [V, T], crop [V, 4] (the augmentation's
  normalised (y0, x_a, y1, x_b); x_a > x_b = mirrored) -> float32 [V, A, T, 4] normalised in the
  [size, size] crops."""
  b = tf.transpose(tf.gather(boxes, frame_indices, axis=1), [1, 0, 2, 3])  # [V, A, T, 4]
  c = crop[:, None, None, :]
  x = _crop_axis(b[..., 0::2], c[..., 1:2], c[..., 3:4], width, size)  # [V, A, T, 2]
  y = _crop_axis(b[..., 1::2], c[..., 0:1], c[..., 2:3], height, size)
  x0, x1 = tf.minimum(x[..., 0], x[..., 1]), tf.maximum(x[..., 0], x[..., 1])  # a mirror swaps the sides
  return tf.clip_by_value(tf.stack([x0, y[..., 0], x1, y[..., 1]], -1), 0.0, 1.0)


def eval_boxes(boxes, frame_indices, height, width, size: int, num_frames: int, num_crops: int):
  """boxes float32 [A, L, 4] (pixels), frame_indices int32 [C*T] (clip-major) -> float32
  [C * num_crops, A, T, 4] normalised in `clips.eval_crops`' crops (short side resized to `size`,
  then the centre crop or 3 crops along the long side), clip-major like the eval video."""
  nh, nw = clips.short_side_size(height, width, size)  # the same resize and crops as the frames
  f = lambda v: tf.cast(v, tf.float32)
  b = tf.gather(boxes, frame_indices, axis=1)  # [A, C*T, 4]
  x, y = b[..., 0::2] * (f(nw) / f(width)), b[..., 1::2] * (f(nh) / f(height))
  crops = []
  for oy, ox in clips.crop_offsets(nh, nw, size, num_crops):
    cx, cy = (x - f(ox)) / size, (y - f(oy)) / size
    crops.append(tf.stack([cx[..., 0], cy[..., 0], cx[..., 1], cy[..., 1]], -1))
  out = tf.clip_by_value(tf.stack(crops, 0), 0.0, 1.0)  # [K, A, C*T, 4]
  k, a = len(crops), tf.shape(boxes)[0]
  out = tf.transpose(tf.reshape(out, [k, a, -1, num_frames, 4]), [2, 0, 1, 3, 4])  # [C, K, A, T, 4]
  return tf.reshape(out, [-1, a, num_frames, 4])


def actor_fields(loaded, boxes) -> dict:
  """The per-actor entries of a pipeline element: boxes (normalised, as given), actor_label and
  actor_motion int32 [A] (-1 = unknown), actor_mask bool [A] (the split's, else: the labelled slots)."""
  mask = loaded["actor_mask"] if "actor_mask" in loaded else loaded["actor_label"] >= 0
  return {"boxes": boxes, "actor_label": loaded["actor_label"], "actor_motion": loaded["actor_motion"],
          "actor_mask": mask}


def parse_tracks(raw, num_frames: int, width: int, height: int, *, source: str = "tracks") -> tuple[list, "np.ndarray", list[str]]:
  """A user's tracks -> (actor ids in order of appearance, float32 boxes [A, num_frames, 4] in pixels
  of the width x height frames, notes on what was mended).

  raw: the decoded JSON: a list with one entry per frame (or {"frames": that list}), each a list of
  [actor_id, x0, y0, x1, y1] in pixels. Boxes reaching outside the frame are clipped to it; a frame
  in which an actor has no box takes its nearest box in time; frames after the tracks' end keep each
  actor's last box. Raises DataError (one line, naming the file and the frame) for anything else:
  not a list, an entry that is not 5 numbers, x1 <= x0 or y1 <= y0, an actor twice in one frame, a
  box wholly outside the frame, more frames than the video, no actor at all.
  """
  frames = raw.get("frames") if isinstance(raw, dict) else raw
  if not isinstance(frames, list):
    raise DataError(f"{source}: expected a JSON list with one list of [actor_id, x0, y0, x1, y1] per frame "
                    f"(or {{\"frames\": [...]}}), got {type(raw).__name__}")
  if len(frames) > num_frames:
    raise DataError(f"{source} gives boxes for {len(frames)} frames but the video decodes to {num_frames}; "
                    "give one list per frame of the video")
  ids, boxes, notes, clipped = [], {}, [], 0
  for t, entry in enumerate(frames):
    if not isinstance(entry, list):
      raise DataError(f"{source}: frame {t} is {type(entry).__name__}, not a list of [actor_id, x0, y0, x1, y1]")
    seen = set()
    for box in entry:
      if (not isinstance(box, (list, tuple)) or len(box) != 5
          or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box[1:])):
        raise DataError(f"{source}: frame {t} has {box!r}; each box is [actor_id, x0, y0, x1, y1] in pixels")
      actor, (x0, y0, x1, y1) = box[0], (float(v) for v in box[1:])
      if not isinstance(actor, (int, str)) or isinstance(actor, bool):
        raise DataError(f"{source}: frame {t} names actor {actor!r}; an actor id is a number or a string")
      if x1 <= x0 or y1 <= y0:
        raise DataError(f"{source}: frame {t}, actor {actor!r}: box {[x0, y0, x1, y1]} is empty (needs x1 > x0, y1 > y0)")
      if actor in seen:
        raise DataError(f"{source}: frame {t} gives actor {actor!r} twice")
      seen.add(actor)
      inside = [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
      if inside[2] <= inside[0] or inside[3] <= inside[1]:
        raise DataError(f"{source}: frame {t}, actor {actor!r}: box {[x0, y0, x1, y1]} lies wholly outside the "
                        f"{width}x{height} frame")
      clipped += inside != [x0, y0, x1, y1]
      if actor not in boxes:
        ids.append(actor)
        boxes[actor] = {}
      boxes[actor][t] = inside
  if not ids:
    raise DataError(f"{source} names no actor; give at least one [actor_id, x0, y0, x1, y1] box")
  out = np.zeros((len(ids), num_frames, 4), np.float32)
  filled = 0
  for a, actor in enumerate(ids):
    known = np.array(sorted(boxes[actor]))
    nearest = known[np.abs(np.arange(num_frames)[:, None] - known[None, :]).argmin(1)]
    out[a] = [boxes[actor][int(k)] for k in nearest]
    filled += num_frames - len(known)
  if clipped:
    notes.append(f"{clipped} box(es) reached outside the {width}x{height} frame and were clipped to it")
  if filled:
    notes.append(f"{filled} frame(s) without an actor's box took that actor's nearest box in time"
                 + (f" (the tracks end at frame {len(frames)} of {num_frames})" if len(frames) < num_frames else ""))
  return ids, out, notes


def read_json(path):
  """A tracks file's JSON content; DataError (one line) when it is missing or not JSON."""
  try:
    return json.loads(storage.path(path).read_text())
  except FileNotFoundError as e:
    raise DataError(f"tracks file {str(path)!r} does not exist") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"tracks file {str(path)!r} is not JSON ({e}); give one list of [actor_id, x0, y0, x1, y1] "
                    "per frame") from e


def resample(path, source_frames, width: int, height: int, out_width: int, out_height: int):
  """A video's tracks file for the frames `video_io.decode_video(..., sources=True)` kept -> (actor
  ids, float32 boxes [A, N, 4] in pixels of the out_width x out_height output frames, notes): each
  output frame takes the boxes of the decoded frame it is (frame rate resampling), scaled with the
  resize. Tracks longer than the frames decoded (a `--max-frames` cut) are cut too, said in a note."""
  raw = read_json(path)
  n = int(source_frames[-1]) + 1
  frames = raw.get("frames") if isinstance(raw, dict) else raw
  notes = []
  if isinstance(frames, list) and len(frames) > n:
    notes.append(f"the tracks' frames after frame {n} (where decoding stopped) were dropped")
    frames = frames[:n]
  ids, boxes, more = parse_tracks(frames, n, width, height, source=str(path))
  scale = np.array([out_width / width, out_height / height] * 2, np.float32)
  return ids, boxes[:, np.asarray(source_frames)] * scale, notes + more
