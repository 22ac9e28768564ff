"""Unfinished S3 multipart uploads: found and aborted (:func:`abort_stale_uploads`).

A writer killed during a multipart upload leaves its parts on the store: invisible (no
object exists until ``CompleteMultipartUpload``) but billed until someone sends
``AbortMultipartUpload``. :class:`tensorfile.CheckpointManager` calls this on start and
after each commit for its own prefix. Uploads are listed with ``ListMultipartUploads``
(``Prefix``, paged by ``KeyMarker`` / ``UploadIdMarker``) through s3fs's botocore client
(``fs.call_s3``, ``s3fs/core.py``); only those initiated at least ``older_than`` seconds ago
are aborted, so a live writer's upload under the same prefix is left alone. Other
backends have no such listing (GCS resumable uploads expire by themselves): nothing is
done there.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import Location

__all__ = ["abort_stale_uploads"]


def abort_stale_uploads(location: Location, older_than: float) -> list[str]:
    """Abort the multipart uploads under ``location`` (a prefix) initiated at least ``older_than`` seconds ago.

    Returns:
        The keys of the uploads aborted (``bucket/key``), in listing order.

    Raises:
        OSError: the store refuses the listing or an abort (no permission, say).
    """
    fs = location.fs
    if not hasattr(fs, "call_s3") or not hasattr(fs, "split_path"):  # not s3fs
        return []
    bucket, key, _ = fs.split_path(location.path)
    prefix = key.rstrip("/") + "/" if key else ""
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=older_than)
    aborted = []
    try:
        uploads = _uploads(fs, bucket, prefix)
    except FileNotFoundError:  # no such bucket: no uploads either
        return []
    for upload in uploads:
        started = upload.get("Initiated")
        if isinstance(started, dt.datetime) and started.tzinfo is not None and started > cutoff:
            continue  # a writer may still be sending it
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        aborted.append(f"{bucket}/{upload['Key']}")
    return aborted


def _uploads(fs: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    markers: dict[str, str] = {}
    while True:
        page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
        found += page.get("Uploads", [])
        if not page.get("IsTruncated"):
            return found
        markers = {"KeyMarker": page.get("NextKeyMarker", ""), "UploadIdMarker": page.get("NextUploadIdMarker", "")}
