"""sora_jax.apps: embed videos into an on-disk index, search it, classify a file, generate clips."""

from sora_jax.apps.actor_rows import actor_index_dir, embed_actor_rows
from sora_jax.apps.actors import predict_actors
from sora_jax.apps.embed_index import Embedder, embed_videos, list_videos
from sora_jax.apps.generate import Generator, generate_videos
from sora_jax.apps.html import write_html
from sora_jax.apps.index import Index
from sora_jax.apps.predict import predict_video
from sora_jax.apps.search import IVFIndex, overlap_with_exact, query_vector, search_index
from sora_jax.parallel.topk import ExactSearch, exact_search

__all__ = ["Embedder", "ExactSearch", "Generator", "IVFIndex", "Index", "actor_index_dir", "embed_actor_rows",
           "embed_videos", "exact_search", "generate_videos", "list_videos",
           "predict_actors", "predict_video", "query_vector", "overlap_with_exact", "search_index", "write_html"]
