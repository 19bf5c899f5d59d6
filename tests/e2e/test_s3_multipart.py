"""S3 multipart uploads, copies, batch deletes and object tagging, driven
with boto3 against a real server: the transfer manager's multipart
upload_file/download_file, the low-level calls with AWS's error codes, the
listings' paging, and the files an aborted upload leaves (none)."""

import base64
import hashlib
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, error_code, unique_name

MIB = 1 << 20


def client(server):
    key, secret = server.credentials()
    return boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def s3(server):
    return client(server)


@pytest.fixture
def lone(server):
    """A client of its own for a request with a body refused before it is
    read: boto3 sends `Expect: 100-continue` and holds the body back, and the
    server (hyper) then takes the unsent body's length out of the next
    request on that connection (a serving-layer problem outside these
    operations), so such a connection is not reused."""
    return lambda: client(server)


@pytest.fixture
def bucket(s3):
    name = unique_name("mp").lower().replace("_", "-")
    s3.create_bucket(Bucket=name)
    return name


def object_files(server):
    return {p.name for p in (Path(server.data_dir) / "objects" / "data").iterdir()}


def multipart_etag(parts):
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def composite_crc32(parts):
    joined = b"".join(struct.pack(">I", zlib.crc32(p)) for p in parts)
    return base64.b64encode(struct.pack(">I", zlib.crc32(joined))).decode() + f"-{len(parts)}"


def upload_parts(s3, bucket, key, parts, **create):
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=i, Body=p)["ETag"]
             for i, p in enumerate(parts, 1)]
    return upload, etags


def complete(s3, bucket, key, upload, numbered_etags):
    return s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in numbered_etags]})


def test_transfer_manager_uploads_and_downloads_in_parts(s3, bucket, tmp_path):
    data = os.urandom(10 * MIB + 12345)
    src, dst = tmp_path / "big.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=3)
    s3.upload_file(str(src), bucket, "big.bin", Config=config,
                   ExtraArgs={"Metadata": {"origin": "test"}, "ContentType": "application/x-test",
                              "Tagging": "kind=big"})

    parts = [data[i:i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    head = s3.head_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
    assert head["ETag"] == multipart_etag(parts) and head["ETag"].endswith('-3"')
    assert head["ContentLength"] == len(data)
    assert (head["Metadata"], head["ContentType"]) == ({"origin": "test"}, "application/x-test")
    # The transfer manager asks for CRC32: the object keeps the composite of its parts'.
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (composite_crc32(parts), "COMPOSITE")
    assert s3.get_object_tagging(Bucket=bucket, Key="big.bin")["TagSet"] == [{"Key": "kind", "Value": "big"}]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    s3.download_file(bucket, "big.bin", str(dst), Config=config)
    assert dst.read_bytes() == data


def test_parts_of_an_object_are_read_by_number(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"the last part"]
    upload, etags = upload_parts(s3, bucket, "parts.bin", parts)
    done = complete(s3, bucket, "parts.bin", upload, enumerate(etags, 1))
    # An absolute URL, as AWS answers (SDKs hand it on as the object's address).
    assert done["Location"] == f"{s3.meta.endpoint_url}/{bucket}/parts.bin"
    upload, etags = upload_parts(s3, bucket, "a dir/é.bin", [b"x"])
    done = complete(s3, bucket, "a dir/é.bin", upload, enumerate(etags, 1))
    assert done["Location"] == f"{s3.meta.endpoint_url}/{bucket}/a%20dir/%C3%A9.bin"
    second = s3.get_object(Bucket=bucket, Key="parts.bin", PartNumber=2)
    assert second["Body"].read() == parts[1]
    assert (second["ContentRange"], second["PartsCount"]) == (f"bytes {5 * MIB}-{10 * MIB - 1}/{10 * MIB + 13}", 3)
    assert second["ResponseMetadata"]["HTTPStatusCode"] == 206
    third = s3.head_object(Bucket=bucket, Key="parts.bin", PartNumber=3)
    assert (third["ContentLength"], third["PartsCount"]) == (13, 3)

    s3.put_object(Bucket=bucket, Key="whole.txt", Body=b"written whole")
    only = s3.get_object(Bucket=bucket, Key="whole.txt", PartNumber=1)
    assert only["Body"].read() == b"written whole" and "PartsCount" not in only
    for key, number, code in [("parts.bin", 4, "InvalidPartNumber"), ("whole.txt", 2, "InvalidPartNumber")]:
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=bucket, Key=key, PartNumber=number)
        assert (error_code(e), e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (code, 416)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="parts.bin", PartNumber=1, Range="bytes=0-1")
    assert error_code(e) == "InvalidRequest"


def test_completion_checks_order_parts_etags_and_sizes(s3, lone, bucket):
    big, small2, small3 = os.urandom(5 * MIB), b"second part", b"third part"
    upload, (e1, e2, e3) = upload_parts(s3, bucket, "k", [big, small2, small3])
    cases = [
        ([(2, e2), (1, e1)], "InvalidPartOrder"),
        ([(1, e1), (1, e1)], "InvalidPartOrder"),
        ([(1, e1), (4, e3)], "InvalidPart"),
        ([(1, e2), (3, e3)], "InvalidPart"),
        ([(1, e1), (2, e2), (3, e3)], "EntityTooSmall"),
    ]
    for parts, code in cases:
        with pytest.raises(ClientError) as e:
            complete(s3, bucket, "k", upload, parts)
        assert error_code(e) == code, parts
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="k")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # A conditional completion that does not hold completes nothing: the
    # upload remains, to be completed without it.
    s3.put_object(Bucket=bucket, Key="k", Body=b"there first")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, IfNoneMatch="*", MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}]})
    assert error_code(e) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"there first"
    done = complete(s3, bucket, "k", upload, [(1, e1), (3, e3)])
    assert done["ETag"] == multipart_etag([big, small3])
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == big + small3 and got["ETag"] == done["ETag"]

    for call in (lambda: lone().upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=2, Body=b"x"),
                 lambda: complete(s3, bucket, "k", upload, [(1, e1)]),
                 lambda: s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload),
                 lambda: s3.list_parts(Bucket=bucket, Key="k", UploadId=upload),
                 lambda: lone().upload_part(Bucket=bucket, Key="k", UploadId="made-up", PartNumber=1, Body=b"x")):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "NoSuchUpload"


def test_full_object_checksums_cover_the_whole_object(s3, bucket):
    parts = [os.urandom(5 * MIB), b"tail"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="full", ChecksumAlgorithm="CRC32",
                                        ChecksumType="FULL_OBJECT")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="full", UploadId=upload, PartNumber=i, Body=p,
                            ChecksumAlgorithm="CRC32")["ETag"] for i, p in enumerate(parts, 1)]
    whole = base64.b64encode(struct.pack(">I", zlib.crc32(b"".join(parts)))).decode()
    listed = {"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]}
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="full", UploadId=upload, MultipartUpload=listed,
                                     ChecksumCRC32="AAAAAA==", ChecksumType="FULL_OBJECT")
    assert error_code(e) == "BadDigest"
    done = s3.complete_multipart_upload(Bucket=bucket, Key="full", UploadId=upload, MultipartUpload=listed,
                                        ChecksumCRC32=whole, ChecksumType="FULL_OBJECT")
    assert (done["ChecksumCRC32"], done["ChecksumType"]) == (whole, "FULL_OBJECT")
    head = s3.head_object(Bucket=bucket, Key="full", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (whole, "FULL_OBJECT")


def test_an_upload_of_another_key_is_unknown_and_replaced_parts_count_once(s3, lone, bucket):
    upload, _ = upload_parts(s3, bucket, "mine", [b"old"])
    with pytest.raises(ClientError) as e:
        lone().upload_part(Bucket=bucket, Key="other", UploadId=upload, PartNumber=1, Body=b"x")
    assert error_code(e) == "NoSuchUpload"
    etag = s3.upload_part(Bucket=bucket, Key="mine", UploadId=upload, PartNumber=1, Body=b"new")["ETag"]
    assert [p["ETag"] for p in s3.list_parts(Bucket=bucket, Key="mine", UploadId=upload)["Parts"]] == [etag]
    complete(s3, bucket, "mine", upload, [(1, etag)])
    assert s3.get_object(Bucket=bucket, Key="mine")["Body"].read() == b"new"


def test_aborting_leaves_no_files(s3, server, bucket):
    before = object_files(server)
    upload, _ = upload_parts(s3, bucket, "gone", [b"a" * 1000, b"b" * 1000])
    assert len(object_files(server) - before) == 2
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=upload)
    assert object_files(server) == before
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # Completing frees the parts too: only the object's file stays.
    upload, etags = upload_parts(s3, bucket, "kept", [b"c" * 1000])
    complete(s3, bucket, "kept", upload, [(1, etags[0])])
    assert len(object_files(server) - before) == 1


def test_list_parts_and_uploads_page(s3, bucket):
    parts = [b"one", b"two", b"three"]
    upload, etags = upload_parts(s3, bucket, "paged", parts, ChecksumAlgorithm="SHA256")
    first = s3.list_parts(Bucket=bucket, Key="paged", UploadId=upload, MaxParts=2)
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2]
    assert first["IsTruncated"] and first["NextPartNumberMarker"] == 2
    assert [p["ETag"] for p in first["Parts"]] == etags[:2] == [f'"{hashlib.md5(p).hexdigest()}"' for p in parts[:2]]
    assert first["Parts"][0]["Size"] == 3 and first["ChecksumAlgorithm"] == "SHA256"
    assert first["Parts"][0]["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"one").digest()).decode()
    rest = s3.list_parts(Bucket=bucket, Key="paged", UploadId=upload, PartNumberMarker=2)
    assert [p["PartNumber"] for p in rest["Parts"]] == [3] and not rest["IsTruncated"]

    ids = {k: s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in ("a", "dir/x", "dir/y")}
    twice = s3.create_multipart_upload(Bucket=bucket, Key="a")["UploadId"]
    expected = sorted([("a", ids["a"]), ("a", twice), ("dir/x", ids["dir/x"]), ("dir/y", ids["dir/y"]),
                       ("paged", upload)])
    seen, marker = [], {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2, **marker)
        seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        assert len(page.get("Uploads", [])) <= 2
        if not page["IsTruncated"]:
            break
        marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == expected
    after_a = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="a")
    assert [u["Key"] for u in after_a["Uploads"]] == ["dir/x", "dir/y", "paged"]
    grouped = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in grouped["Uploads"]] == ["a", "a", "paged"]
    assert grouped["CommonPrefixes"] == [{"Prefix": "dir/"}]
    # Paging one entry at a time, a common prefix counts as one and is passed whole.
    entries, marker = [], {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/", MaxUploads=1, **marker)
        entries += [u["Key"] for u in page.get("Uploads", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page.get("NextUploadIdMarker", "")}
    assert entries == ["a", "a", "dir/", "paged"]
    under = s3.list_multipart_uploads(Bucket=bucket, Prefix="dir/")
    assert [u["Key"] for u in under["Uploads"]] == ["dir/x", "dir/y"]
    for key, uid in expected:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)


def test_upload_part_copy_takes_ranges_of_an_object(s3, bucket):
    data = os.urandom(6 * MIB)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    copied = []
    for n, rng in ((1, f"bytes=0-{5 * MIB - 1}"), (2, f"bytes={5 * MIB}-{len(data) - 1}")):
        r = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=n,
                                CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=rng)
        copied.append((n, r["CopyPartResult"]["ETag"]))
    assert copied[0][1] == f'"{hashlib.md5(data[:5 * MIB]).hexdigest()}"'
    for bad, code in (({"Key": "src"}, "InvalidArgument"), ({"Key": "missing"}, "NoSuchKey")):
        with pytest.raises(ClientError) as e:
            s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=3,
                                CopySource={"Bucket": bucket, "Key": bad["Key"]},
                                CopySourceRange=f"bytes=0-{len(data)}")
        assert error_code(e) == code
    done = complete(s3, bucket, "dst", upload, copied)
    assert done["ETag"] == multipart_etag([data[:5 * MIB], data[5 * MIB:]])
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == data


def test_copy_object_copies_or_replaces_metadata_and_tags(s3, bucket):
    s3.put_object(Bucket=bucket, Key="orig", Body=b"payload", ContentType="text/plain",
                  Metadata={"a": "1"}, Tagging="t=1")
    md5 = f'"{hashlib.md5(b"payload").hexdigest()}"'
    r = s3.copy_object(Bucket=bucket, Key="same", CopySource={"Bucket": bucket, "Key": "orig"})
    assert r["CopyObjectResult"]["ETag"] == md5
    head = s3.head_object(Bucket=bucket, Key="same")
    assert (head["ContentType"], head["Metadata"]) == ("text/plain", {"a": "1"})
    assert s3.get_object_tagging(Bucket=bucket, Key="same")["TagSet"] == [{"Key": "t", "Value": "1"}]

    s3.copy_object(Bucket=bucket, Key="new", CopySource=f"{bucket}/orig", MetadataDirective="REPLACE",
                   ContentType="application/json", Metadata={"b": "2"}, TaggingDirective="REPLACE",
                   Tagging="u=2")
    got = s3.get_object(Bucket=bucket, Key="new")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"payload", "application/json", {"b": "2"})
    assert s3.get_object_tagging(Bucket=bucket, Key="new")["TagSet"] == [{"Key": "u", "Value": "2"}]

    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="orig", CopySource={"Bucket": bucket, "Key": "orig"})
    assert error_code(e) == "InvalidRequest"
    assert "copy an object to itself without changing the object's metadata" in e.value.response["Error"]["Message"]
    s3.copy_object(Bucket=bucket, Key="orig", CopySource={"Bucket": bucket, "Key": "orig"},
                   MetadataDirective="REPLACE", Metadata={"c": "3"})
    assert s3.head_object(Bucket=bucket, Key="orig")["Metadata"] == {"c": "3"}
    assert s3.get_object(Bucket=bucket, Key="orig")["Body"].read() == b"payload"

    for extra, code in (({"CopySourceIfMatch": '"0123"'}, "PreconditionFailed"),
                        ({"CopySourceIfNoneMatch": md5}, "PreconditionFailed")):
        with pytest.raises(ClientError) as e:
            s3.copy_object(Bucket=bucket, Key="cond", CopySource={"Bucket": bucket, "Key": "orig"}, **extra)
        assert error_code(e) == code
    s3.copy_object(Bucket=bucket, Key="cond", CopySource={"Bucket": bucket, "Key": "orig"}, CopySourceIfMatch=md5)
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})
    assert error_code(e) == "NoSuchKey"


def test_delete_objects_reports_each_key_and_quiet_only_errors(s3, bucket):
    for k in ("a", "b", "c", "d"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["a", "b", "never"] and not r.get("Errors")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}, {"Key": "k" * 1025}], "Quiet": True})
    assert not r.get("Deleted")
    assert [(e["Key"], e["Code"]) for e in r["Errors"]] == [("k" * 1025, "KeyTooLongError")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d"]
    with pytest.raises(ClientError) as e:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]})
    assert error_code(e) == "MalformedXML"


def test_object_tagging(s3, lone, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    tags = [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": ""}]
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": tags})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == tags
    assert s3.get_object(Bucket=bucket, Key="t")["TagCount"] == 2
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"x"

    bad = [
        ([{"Key": f"k{i}", "Value": "v"} for i in range(11)], "BadRequest"),
        ([{"Key": "k" * 129, "Value": "v"}], "InvalidTag"),
        ([{"Key": "k", "Value": "v" * 257}], "InvalidTag"),
        ([{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}], "InvalidTag"),
    ]
    for tag_set, code in bad:
        with pytest.raises(ClientError) as e:
            s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": tag_set})
        assert error_code(e) == code
    with pytest.raises(ClientError) as e:
        lone().put_object(Bucket=bucket, Key="u", Body=b"x", Tagging="&".join(f"k{i}=v" for i in range(11)))
    assert error_code(e) == "BadRequest"
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == tags

    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    with pytest.raises(ClientError) as e:
        s3.get_object_tagging(Bucket=bucket, Key="missing")
    assert error_code(e) == "NoSuchKey"


def test_a_part_replaced_during_completion_is_an_invalid_part_and_the_upload_remains(s3, server, bucket):
    """Completion copies the part files it listed; an UploadPart of the same
    number meanwhile replaces one (its file goes). That was answered
    NoSuchUpload while the upload remained, so a client never aborted it.
    The race is made certain here by removing the part's file."""
    before = object_files(server)
    upload, etags = upload_parts(s3, bucket, "raced", [b"a" * 1000])
    (part_file,) = object_files(server) - before
    (Path(server.data_dir) / "objects" / "data" / part_file).unlink()
    with pytest.raises(ClientError) as e:
        complete(s3, bucket, "raced", upload, [(1, etags[0])])
    assert error_code(e) == "InvalidPart"
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    s3.abort_multipart_upload(Bucket=bucket, Key="raced", UploadId=upload)


def test_a_completion_asked_again_with_the_same_parts_answers_as_the_first(s3, bucket):
    """An SDK retries a completion whose answer it lost, and transfer
    managers may race two: S3 answers both 200 with the object the parts made."""
    parts = [os.urandom(5 * MIB), b"tail"]
    upload, etags = upload_parts(s3, bucket, "twice.bin", parts)
    first = complete(s3, bucket, "twice.bin", upload, enumerate(etags, 1))
    again = complete(s3, bucket, "twice.bin", upload, enumerate(etags, 1))
    assert (again["ETag"], again["Location"]) == (first["ETag"], first["Location"])
    # Other parts than those completed: the upload is gone.
    with pytest.raises(ClientError) as e:
        complete(s3, bucket, "twice.bin", upload, [(1, etags[0])])
    assert error_code(e) == "NoSuchUpload"

    upload, etags = upload_parts(s3, bucket, "raced.bin", parts)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: complete(s3, bucket, "raced.bin", upload, enumerate(etags, 1)), range(4)))
    assert len({a["ETag"] for a in answers}) == 1
    assert s3.get_object(Bucket=bucket, Key="raced.bin")["Body"].read() == b"".join(parts)
