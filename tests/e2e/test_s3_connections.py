"""A refused request must not poison its keep-alive connection: botocore
sends `Expect: 100-continue` with large bodies and withholds the body when
the answer comes first, so the server must close such a connection rather
than read the next request as the rest of this one."""

import socket
import urllib.parse

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import REGION


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
