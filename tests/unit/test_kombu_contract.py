"""What workers.celery.app.SharedClientChannel relies on in kombu's private Redis channel API.

It overrides `Channel._create_client(asynchronous=False)`; if kombu renames it, changes its
parameters or stops building the client from `self.Client` and `self.pool`, the override
would silently stop applying (or break delivery): this test says so first.
"""

from __future__ import annotations

import inspect

from kombu.transport import redis as kombu_redis

from workers.celery.app import SharedClientChannel, SharedClientRedisTransport


def test_kombu_still_has_the_create_client_method_we_override() -> None:
    method = kombu_redis.Channel._create_client
    parameters = list(inspect.signature(method).parameters.values())
    assert [parameter.name for parameter in parameters] == ["self", "asynchronous"]
    assert parameters[1].default is False
    source = inspect.getsource(method)
    assert "self.Client(" in source
    assert "self.pool" in source and "self.async_pool" in source


def test_kombu_still_creates_clients_through_it() -> None:
    # conn_or_acquire (every command outside the event loop) goes through _create_client
    assert "self._create_client()" in inspect.getsource(kombu_redis.Channel.conn_or_acquire)


def test_our_transport_uses_our_channel() -> None:
    assert SharedClientRedisTransport.Channel is SharedClientChannel
    assert "_create_client" in SharedClientChannel.__dict__
