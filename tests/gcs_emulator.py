"""A GCS JSON API on 127.0.0.1 for tests and for trying gs:// paths without a bucket:
`python tests/gcs_emulator.py --port 9023 --bucket my-bucket` (then set the variables the README lists).

It is `gcp-storage-emulator` (PyPI) with what GCS does and it lacks:
- downloads carry the object's generation in `x-goog-generation`, as GCS sends it (tensorstore,
  orbax's checkpoint writer, reads it for its conditional writes; without it: "Malformed
  StorageGeneration");
- the `ifGenerationMatch` precondition on uploads and deletes (0: only if no such object; N: only
  if the live object's generation is N), answered 412 as GCS does: what locks on gs:// rest on.
For the tests of lost and retried requests, `--fail-upload NAME@N=MODE` makes the N-th upload of
object NAME that passes its preconditions (`NAME=MODE`: the first) answer 503 (the client retries it): MODE `lost` stores nothing, `landed` stores it
(the request reached GCS; its answer was lost), `raced:TEXT` stores TEXT instead (another writer's
upload landed in between).
"""

import argparse
import sys
from http import HTTPStatus


def _precondition_failed(request, storage, bucket: str, name: str) -> bool:
  want = request.query.get("ifGenerationMatch")
  if not want:
    return False
  try:
    generation = str(storage.get_file_obj(bucket, name)["generation"])
  except Exception:  # noqa: BLE001 - no such object: generation 0
    generation = "0"
  return generation != want[0]


def _upload_name(request):
  if "name" in request.query:
    return request.query["name"][0]
  data = request.data
  return data.get("meta", {}).get("name") if isinstance(data, dict) else None


def serve(host: str, port: int, bucket: str, fail_upload: dict) -> None:
  uploads: dict[str, int] = {}  # name -> uploads so far that passed their preconditions
  from gcp_storage_emulator.handlers import objects

  plain_download, plain_insert, plain_delete = objects.download, objects.insert, objects.delete

  def download(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    except Exception:  # noqa: BLE001 - absent object: the plain handler answers 404
      pass
    return plain_download(request, response, storage, *args, **kwargs)

  def insert(request, response, storage, *args, **kwargs):
    name = _upload_name(request)
    if name is not None and _precondition_failed(request, storage, request.params["bucket_name"], name):
      response.status = HTTPStatus.PRECONDITION_FAILED
      response.json({"error": {"code": 412, "message": "conditionNotMet", "errors": [{"reason": "conditionNotMet"}]}})
      return None
    mode = None
    if name is not None:
      uploads[name] = uploads.get(name, 0) + 1
      mode = fail_upload.pop(f"{name}@{uploads[name]}", None)
    if mode is None:
      return plain_insert(request, response, storage, *args, **kwargs)
    if mode == "landed":
      plain_insert(request, response, storage, *args, **kwargs)
    elif mode.startswith("raced:"):
      data = mode[6:].encode()
      other = objects._checksums(data, objects._make_object_resource(
          request.base_url, request.params["bucket_name"], name, "application/octet-stream", str(len(data))))
      storage.create_file(request.params["bucket_name"], name, data, other)
    response.status = HTTPStatus.SERVICE_UNAVAILABLE
    response.json({"error": {"code": 503, "message": "backendError"}})
    return None

  def delete(request, response, storage, *args, **kwargs):
    if _precondition_failed(request, storage, request.params["bucket_name"], request.params["object_id"]):
      response.status = HTTPStatus.PRECONDITION_FAILED
      response.json({"error": {"code": 412, "message": "conditionNotMet"}})
      return None
    return plain_delete(request, response, storage, *args, **kwargs)

  objects.download, objects.insert, objects.delete = download, insert, delete
  from gcp_storage_emulator import server  # builds its routes from the handlers: patched first
  server.create_server(host, port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--bucket", required=True)
  parser.add_argument("--fail-upload", action="append", default=[], metavar="NAME[@N]=MODE",
                      help="the N-th (default: first) upload of object NAME answers 503; MODE: lost | landed | raced:TEXT")
  args = parser.parse_args()
  import logging
  logging.disable(logging.INFO)
  faults = (x.split("=", 1) for x in args.fail_upload)
  serve(args.host, args.port, args.bucket, {k if "@" in k else f"{k}@1": mode for k, mode in faults})
  sys.exit(0)
