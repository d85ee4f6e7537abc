"""gRPC channels to our services, configured like the servers: TLS whenever the services serve it
(ES_TLS_CERT/ES_TLS_KEY set) or ES_TLS_CA names the CA to verify them with; with a CA, the client
presents ES_TLS_CERT/ES_TLS_KEY as its certificate (the servers then require one: mutual TLS), and
without one it verifies servers against the system's roots (or GRPC_DEFAULT_SSL_ROOTS_FILE_PATH). The
bearer token from ES_AUTH_TOKEN, and the same message-size limits."""

from __future__ import annotations

import collections

import grpc

from services.common.server import grpc_options
from services.common.settings import Limits, Settings


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                                            "compression")),
    grpc.ClientCallDetails,
):
    pass


def _with_token(details: grpc.ClientCallDetails, token: str) -> _CallDetails:
    metadata = list(details.metadata or [])
    metadata.append(("authorization", f"Bearer {token}"))
    return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                        getattr(details, "wait_for_ready", None), getattr(details, "compression", None))


class _TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(_with_token(details, self._token), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(_with_token(details, self._token), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(_with_token(details, self._token), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(_with_token(details, self._token), requests)


class _AioToken:
    """Adds the bearer token to a call's metadata. grpc.aio files a client interceptor under one call
    kind only (the first its class implements), so each kind gets an interceptor of its own."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {self._token}")
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)


class _AioUnaryUnaryToken(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _AioUnaryStreamToken(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _AioStreamUnaryToken(_AioToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, requests):
        return await continuation(self._details(details), requests)


class _AioStreamStreamToken(_AioToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, requests):
        return await continuation(self._details(details), requests)


def _aio_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    return [kind(token) for kind in (_AioUnaryUnaryToken, _AioUnaryStreamToken, _AioStreamUnaryToken,
                                     _AioStreamStreamToken)]


def _credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    if settings.tls_ca is None:
        # Server-only TLS: the services serve TLS and ask for no client certificate.
        return grpc.ssl_channel_credentials() if settings.tls_enabled else None
    with open(settings.tls_ca, "rb") as handle:
        root = handle.read()
    key = cert = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        with open(settings.tls_key, "rb") as handle:
            key = handle.read()
        with open(settings.tls_cert, "rb") as handle:
            cert = handle.read()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


def open_channel(address: str, settings: Settings, limits: Limits | None = None) -> grpc.Channel:
    """A blocking channel (CLI, tests, benchmarks)."""
    options = grpc_options(limits or Limits())
    credentials = _credentials(settings)
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    if settings.auth_token:
        channel = grpc.intercept_channel(channel, _TokenInterceptor(settings.auth_token))
    return channel


def open_aio_channel(address: str, settings: Settings, limits: Limits | None = None) -> grpc.aio.Channel:
    """An asyncio channel (one service calling another)."""
    options = grpc_options(limits or Limits())
    interceptors = _aio_token_interceptors(settings.auth_token) if settings.auth_token else None
    credentials = _credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
