"""A refused request must not poison its keep-alive connection: botocore
sends `Expect: 100-continue` with large bodies and withholds the body when
the answer comes first, so the server must close such a connection rather
than read the next request as the rest of this one."""

import socket
import urllib.parse

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import REGION, aws_client, unique_name


def test_a_refused_expect_continue_request_closes_its_connection(server):
    url = server.endpoint + "/no-such-bucket-here/key"
    headers = {"Expect": "100-continue", "Content-Length": "1048576", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    req = AWSRequest(method="PUT", url=url, headers=headers)
    S3SigV4Auth(Credentials(*server.credentials()), "s3", REGION).add_auth(req)
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        s.sendall(f"PUT /no-such-bucket-here/key HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):  # ends only when the server closes the connection
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 404 Not Found", answer[:300]
    assert b"NoSuchBucket" in answer and b"connection: close" in answer.lower()


class _UnsignedPayload(S3SigV4Auth):
    """Signs with `x-amz-content-sha256: UNSIGNED-PAYLOAD`, as SDKs do over TLS."""

    def payload(self, request):
        return "UNSIGNED-PAYLOAD"


def _stalled(server, method, path, headers, send=b""):
    """A connection that sends a request's head (and `send` of its body), then nothing."""
    req = AWSRequest(method=method, url=server.endpoint + path, headers=headers)
    _UnsignedPayload(Credentials(*server.credentials()), "s3", REGION).add_auth(req)
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode() + send)
    return s


def test_stalled_uploads_and_readers_leave_the_node_serving(server):
    """A PUT's body used to hold two threads of the node's blocking pool
    (512 threads, which every file read and write shares) until it ended,
    and a GET one until the client had read it all: 256 uploads that sent
    part of their body and stopped left no thread for anyone's file."""
    s3 = aws_client(server, "s3")
    bucket = unique_name("stall")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="big", Body=b"b" * (4 << 20))
    held = []
    try:
        for i in range(300):
            # Past the 64 KiB kept inline: the body goes to a file.
            headers = {"Content-Length": str(1 << 20), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
            held.append(_stalled(server, "PUT", f"/{bucket}/slow{i}", headers, b"a" * (70 << 10)))
        for _ in range(40):
            held.append(_stalled(server, "GET", f"/{bucket}/big", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}))
        patient = aws_client(server, "s3")
        assert patient.get_object(Bucket=bucket, Key="big")["Body"].read() == b"b" * (4 << 20)
        patient.put_object(Bucket=bucket, Key="new", Body=b"n" * (200 << 10))
        assert patient.head_object(Bucket=bucket, Key="new")["ContentLength"] == 200 << 10
    finally:
        for s in held:
            s.close()


def test_a_browser_form_upload_is_refused_before_its_body(server):
    """PostObject (a browser form's upload) is not implemented: answered at
    once, not after reading the file part, which `s3s` held in memory whole
    (up to 5 GB, before any check) to give the same answer."""
    host, port = urllib.parse.urlsplit(server.endpoint).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /some-bucket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {200 << 20}\r\n\r\n".encode())
        answer = b""  # the body never comes
        while b"</Error>" not in answer and (chunk := s.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 501 "), answer[:300]
    assert b"<Code>NotImplemented</Code>" in answer
