"""Decoding video files with PyAV, and turning raw frames into eval clips.

`decode_video` is what `sora-jax prepare` and the apps use on a user's file; `clips_from_frames`
samples and crops clips exactly as `pipeline.eval_batches` does, so a raw file embeds like a
prepared one.
"""

from __future__ import annotations

import fractions
import io
import os

import av
import numpy as np
import tensorflow as tf

from sora_jax.data import clips as clips_lib
from sora_jax.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv", ".ts")


def _scaled_size(w: int, h: int, short_side: int | None) -> tuple[int, int]:
  if not short_side:
    return w, h
  if w <= h:
    return short_side, max(1, int(round(h * short_side / w)))
  return max(1, int(round(w * short_side / h))), short_side


def decode_video(path, *, fps: float | None = None, short_side: int | None = None,
                 max_frames: int | None = None, threads: int = 0, sources: bool = False):
  """Decodes a video file into uint8 [N, H, W, 3] RGB frames.

  fps: resample to this frame rate (by presentation time: frames dropped or repeated); None keeps
  every frame. short_side: resize so that min(H, W) == short_side (aspect kept). max_frames: stop
  after this many output frames. threads: decoder threads (0 = PyAV's choice). sources: also return
  int64 [N], the index of the decoded frame each output frame is (a track's frame).
  Raises DataError for a missing, corrupt, truncated-to-nothing, empty or non-video file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"video file {path!r} does not exist")
  if os.path.getsize(path) == 0:
    raise DataError(f"video file {path!r} is empty (0 bytes)")
  frames, source = [], []
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise DataError(f"{path!r} holds no video stream")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      if threads:
        stream.codec_context.thread_count = threads
      tb = float(stream.time_base) if stream.time_base else None
      next_t, step, first_t = 0.0, (1.0 / fps if fps else None), None
      size = None
      for i, frame in enumerate(container.decode(stream)):
        if size is None:
          size = _scaled_size(frame.width, frame.height, short_side)
        if step is None:
          repeat = 1
        else:
          if frame.pts is not None and tb is not None:
            t = frame.pts * tb
          else:
            t = i / float(stream.average_rate or 25)
          first_t = t if first_t is None else first_t
          t -= first_t
          repeat = 0
          while t + 1e-6 >= next_t:
            repeat += 1
            next_t += step
        if repeat:
          arr = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
          frames.extend([arr] * repeat)
          source.extend([i] * repeat)
        if max_frames and len(frames) >= max_frames:
          frames, source = frames[:max_frames], source[:max_frames]
          break
  except DataError:
    raise
  except (av.error.FFmpegError, ValueError, OSError, IndexError, RuntimeError) as e:
    if not frames:
      raise DataError(f"cannot decode {path!r}: {type(e).__name__}: {e}") from e
    # A truncated file: keep the frames before the damage.
  if not frames:
    raise DataError(f"{path!r} decodes to no video frames (empty or not a video)")
  frames = np.stack(frames).astype(np.uint8)
  return (frames, np.asarray(source, np.int64)) if sources else frames


def video_size(path) -> tuple[int, int]:
  """(width, height) of a video file's frames as stored (what a user's tracks are in pixels of)."""
  try:
    with av.open(os.fspath(path)) as container:
      ctx = container.streams.video[0].codec_context
      return int(ctx.width), int(ctx.height)
  except (av.error.FFmpegError, IndexError, OSError) as e:
    raise DataError(f"cannot read the frame size of {os.fspath(path)!r}: {type(e).__name__}: {e}") from e


def encode_video(frames: np.ndarray, *, fps: float = 8.0) -> bytes:
  """uint8 [T, H, W, 3] (H, W even) -> the bytes of an MPEG-4 Part 2 .mp4 at `fps` (a codec every
  ffmpeg build has), at a bit rate high enough that small synthetic frames stay sharp."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise DataError(f"frames to encode must be uint8 [T, H, W, 3] with T > 0, got {frames.dtype} {frames.shape}")
  buf = io.BytesIO()
  with av.open(buf, "w", format="mp4") as out:
    stream = out.add_stream("mpeg4", rate=fractions.Fraction(fps).limit_denominator(1000))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
    for frame in frames:
      out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    out.mux(stream.encode())
  return buf.getvalue()


def clips_from_frames(frames: np.ndarray, *, num_frames: int, stride: int, frame_size: int,
                      num_clips: int = 1, num_crops: int = 1) -> np.ndarray:
  """uint8 [N, H, W, 3] -> uint8 [C, T, S, S, 3], C = num_clips * num_crops.

  Clips are uniformly spaced over the video (one clip: centred); frames are resized so the short
  side is S, then centre-cropped (or 3 crops along the long side), as evaluation does.
  """


  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise DataError(f"frames must be uint8 [N, H, W, 3] with N > 0, got shape {frames.shape}")
  idx = clips_lib.eval_indices(tf.constant(frames.shape[0], tf.int32), num_frames, stride, num_clips)
  sel = tf.gather(tf.constant(frames), tf.reshape(idx, [-1]))
  out = clips_lib.eval_crops(sel, frame_size, num_crops)  # [K, N*T, S, S, 3]
  out = tf.reshape(out, [num_crops, num_clips, num_frames, frame_size, frame_size, 3])
  out = tf.transpose(out, [1, 0, 2, 3, 4, 5])  # clip-major, like eval_batches
  return out.numpy().reshape(num_clips * num_crops, num_frames, frame_size, frame_size, 3)
