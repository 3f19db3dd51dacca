"""The results bucket (S3).

S3 answers a HEAD of a key in a bucket that does not exist with the same 404 as a HEAD of a missing key in one
that does (there is no body to tell them apart), and django-storages turns both into "no such file". Before
anything concludes that an object is absent — a result gone, an envelope never uploaded — and before /readyz
calls the storage up, it asks here whether the bucket is there at all.
"""

from __future__ import annotations

from typing import Any


def bucket_exists(storage: Any) -> bool:
    """True if django-storages' S3Storage `storage` has its bucket, False if S3 says there is no such bucket. Any
    other failure (S3 unreachable, refusing) raises."""
    from botocore.exceptions import ClientError

    try:
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise
    return True
