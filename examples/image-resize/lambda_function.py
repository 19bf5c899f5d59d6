"""Makes a thumbnail of every image uploaded to a bucket.

S3 invokes the function with an ObjectCreated event; it reads the image
from the bucket the event names, shrinks it to fit in THUMBNAIL pixels
(keeping its proportions) with Pillow, which comes from a layer, and writes
it as `resized-<key>` to the bucket of the same name with `-resized` after
it. Writing to another bucket is what keeps the function from triggering
itself.
"""

import io
from urllib.parse import unquote_plus

import boto3
from PIL import Image

THUMBNAIL = (128, 128)

s3 = boto3.client("s3")


def thumbnail(data):
    """The image in `data` shrunk to fit THUMBNAIL, in its own format."""
    with Image.open(io.BytesIO(data)) as image:
        kind = image.format
        image.thumbnail(THUMBNAIL)
        out = io.BytesIO()
        image.save(out, format=kind)
    return out.getvalue(), Image.MIME.get(kind, "application/octet-stream")


def lambda_handler(event, context):
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        # Keys arrive URL-encoded, with `+` for spaces.
        key = unquote_plus(record["s3"]["object"]["key"])
        original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        small, content_type = thumbnail(original)
        s3.put_object(Bucket=f"{bucket}-resized", Key=f"resized-{key}", Body=small, ContentType=content_type)
        print(f"resized s3://{bucket}/{key} ({len(original)} bytes) to "
              f"s3://{bucket}-resized/resized-{key} ({len(small)} bytes)")
