"""The span exporter posts through ``urllib3`` unless the environment asks for what only
``requests`` does (a proxy, ``.netrc`` credentials, a credential provider's session), verifying
against the CA bundle ``requests`` would - and either way a batch arrives whole, and a refusal
is a failed export, not an exception."""

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport
from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from autonomic.observability.otlp import FastOTLPSpanExporter

_ENVIRONMENT = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
    "all_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc of the machine's


class _Receiver(http.server.BaseHTTPRequestHandler):
    status = 200
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Handler", (_Receiver,), {"bodies": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", handler
    finally:
        server.shutdown()
        server.server_close()


def _spans(count: int) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for n in range(count):
        with tracer.start_as_current_span(f"span {n}", attributes={"n": n}):
            pass
    return list(memory.get_finished_spans())


def test_a_batch_posted_through_urllib3_arrives_whole(receiver):
    url, handler = receiver
    exporter = FastOTLPSpanExporter(endpoint=url)
    assert type(exporter._client._transport) is Urllib3HTTPTransport
    spans = _spans(3)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    (body,) = handler.bodies
    request = ExportTraceServiceRequest.FromString(body)
    names = [s.name for r in request.resource_spans for sc in r.scope_spans for s in sc.spans]
    assert names == ["span 0", "span 1", "span 2"]


def test_a_refused_batch_is_a_failed_export_not_an_exception(receiver):
    url, handler = receiver
    handler.status = 400  # not retryable: one request, then a failure
    exporter = FastOTLPSpanExporter(endpoint=url)
    assert exporter.export(_spans(1)) is SpanExportResult.FAILURE
    assert len(handler.bodies) == 1


def test_an_unreachable_receiver_is_a_failed_export():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    exporter = FastOTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=1)
    exporter._client._shutdown_event.set()  # no backoff wait between the retries
    assert exporter.export(_spans(1)) is SpanExportResult.FAILURE


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTPS_PROXY", "http://127.0.0.1:3128"),
        ("HTTP_PROXY", "http://127.0.0.1:3128"),
    ],
)
def test_what_only_requests_reads_from_the_environment_keeps_requests(
    receiver, monkeypatch, variable, value
):
    url, _ = receiver
    monkeypatch.setenv(variable, value)
    exporter = FastOTLPSpanExporter(endpoint=url)
    assert type(exporter._client._transport) is RequestsHTTPTransport


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_environments_ca_bundle_is_what_urllib3_verifies_against(
    receiver, monkeypatch, tmp_path, variable
):
    url, _ = receiver
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    monkeypatch.setenv(variable, str(bundle))
    transport = FastOTLPSpanExporter(endpoint=url)._client._transport
    assert type(transport) is Urllib3HTTPTransport
    assert transport._pool.connection_pool_kw["ca_certs"] == str(bundle)


def test_a_configured_certificate_wins_over_the_environments_bundle(receiver, monkeypatch):
    url, _ = receiver
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/somewhere/else.pem")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ssl/certs/ca-certificates.crt")
    transport = FastOTLPSpanExporter(endpoint=url)._client._transport
    assert transport._pool.connection_pool_kw["ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"


def test_a_proxy_the_endpoint_bypasses_does_not_keep_requests(receiver, monkeypatch):
    url, _ = receiver
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    exporter = FastOTLPSpanExporter(endpoint=url)
    assert type(exporter._client._transport) is Urllib3HTTPTransport


def test_netrc_credentials_for_the_endpoint_keep_requests(receiver, monkeypatch, tmp_path):
    url, _ = receiver
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    exporter = FastOTLPSpanExporter(endpoint=url)
    assert type(exporter._client._transport) is RequestsHTTPTransport


def test_a_configured_certificate_reaches_urllib3(receiver, monkeypatch):
    url, _ = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ssl/certs/ca-certificates.crt")
    exporter = FastOTLPSpanExporter(endpoint=url)
    transport = exporter._client._transport
    assert type(transport) is Urllib3HTTPTransport
    assert transport._pool.connection_pool_kw["ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"


def test_without_a_configured_certificate_urllib3_trusts_what_requests_trusted(receiver):
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    url, _ = receiver
    transport = FastOTLPSpanExporter(endpoint=url)._client._transport
    assert type(transport) is Urllib3HTTPTransport
    assert transport._pool.connection_pool_kw["ca_certs"] == DEFAULT_CA_BUNDLE_PATH


def test_a_session_of_the_callers_own_is_kept(receiver):
    import requests

    url, _ = receiver
    session = requests.Session()
    exporter = FastOTLPSpanExporter(endpoint=url, session=session)
    transport = exporter._client._transport
    assert type(transport) is RequestsHTTPTransport
    assert transport._session is session


def _self_signed(directory: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "receiver.pem", directory / "receiver.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def test_an_https_receiver_is_trusted_by_the_configured_certificate_only(tmp_path, monkeypatch):
    import ssl

    cert_file, key_file = _self_signed(tmp_path)
    handler = type("Handler", (_Receiver,), {"bodies": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        untrusted = FastOTLPSpanExporter(endpoint=url, timeout=2)
        untrusted._client._shutdown_event.set()  # no backoff wait between the retries
        assert untrusted.export(_spans(1)) is SpanExportResult.FAILURE
        assert handler.bodies == []  # refused at the handshake: nothing was sent
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", cert_file)
        trusted = FastOTLPSpanExporter(endpoint=url, timeout=2)
        assert type(trusted._client._transport) is Urllib3HTTPTransport
        assert trusted.export(_spans(2)) is SpanExportResult.SUCCESS
        assert len(handler.bodies) == 1
    finally:
        server.shutdown()
        server.server_close()
