"""Signed GETs over TLS: a certificate nobody vouches for is refused at once, a given CA works.

A small HTTPS server on 127.0.0.1 with a self-signed certificate made here
(openssl) answers every GET like S3 answers a missing key. The signed-GET
client must refuse it without retrying when it trusts the usual CAs, and reach
it when told to trust that certificate (``AWS_CA_BUNDLE``'s role).
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakecache.lake import gets

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class _NoSuchKey(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchKey)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _NoSuchKey.seen = []
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def _client(endpoint: str, verify: str | bool) -> gets.SignedGets:
    creds = gets.Credentials("AKEXAMPLE", "secret", "session-token")
    return gets.SignedGets(
        endpoint, "bucket", "eu-west-1", lambda: creds, timeout=10, attempts=4, verify=verify
    )


def test_an_unknown_certificate_is_refused_without_retries(
    https_server: tuple[str, Path],
) -> None:
    endpoint, _ = https_server
    client = _client(endpoint, True)
    with pytest.raises(gets.Unreachable) as caught:
        client.open("pfx/some key", 0, 10)
    assert caught.value.attempts == 1
    assert isinstance(caught.value.cause, ssl.SSLCertVerificationError)
    assert _NoSuchKey.seen == []  # no request went out
    client.close()


def test_a_given_ca_is_trusted_and_the_request_is_signed(https_server: tuple[str, Path]) -> None:
    endpoint, cert = https_server
    client = _client(endpoint, str(cert))
    with pytest.raises(gets.HTTPError) as caught:
        client.open("pfx/some key", 5, 10)
    assert (caught.value.status, caught.value.code) == (404, "NoSuchKey")
    (headers,) = _NoSuchKey.seen  # a 404 is an answer: not asked again
    assert headers["range"] == "bytes=5-14"
    assert headers["x-amz-security-token"] == "session-token"
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKEXAMPLE/")
    assert "/eu-west-1/s3/aws4_request" in auth
    assert "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token" in auth
    assert "secret" not in auth
    client.close()
