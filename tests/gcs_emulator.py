"""A GCS JSON API on 127.0.0.1 for tests and for trying gs:// paths without a bucket:
`python tests/gcs_emulator.py --port 9023 --bucket my-bucket` (then set the variables the README lists).

It is `gcp-storage-emulator` (PyPI) with one addition: downloads carry the object's generation in
`x-goog-generation`, as GCS sends it. tensorstore (orbax's checkpoint writer) reads the generation
from that header to make its conditional writes, and without it fails with "Malformed
StorageGeneration". Nothing else is changed.
"""

import argparse
import sys


def serve(host: str, port: int, bucket: str) -> None:
  from gcp_storage_emulator.handlers import objects

  plain = objects.download

  def download(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    except Exception:  # noqa: BLE001 - absent object: the plain handler answers 404
      pass
    return plain(request, response, storage, *args, **kwargs)

  objects.download = download
  from gcp_storage_emulator import server  # builds its routes from objects.download: patched first
  server.create_server(host, port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--bucket", required=True)
  args = parser.parse_args()
  import logging
  logging.disable(logging.INFO)
  serve(args.host, args.port, args.bucket)
  sys.exit(0)
