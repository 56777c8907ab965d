"""The shared error hierarchy and the Redis retry classification, against a real Redis."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from streamscale.core.errors import (
    ConfigError,
    StreamscaleError,
    TransientError,
    is_redis_retryable,
)
from tests.support.servers import RedisServer, free_port


def test_config_and_transient_errors_share_the_root_the_cli_catches() -> None:
    assert issubclass(ConfigError, StreamscaleError)
    assert issubclass(TransientError, StreamscaleError)
    assert not issubclass(ConfigError, TransientError)


def _error_of(call: object) -> BaseException:
    assert callable(call)
    with pytest.raises(Exception) as info:
        call()
    return info.value


@pytest.mark.timeout(30)
def test_no_answer_is_retryable_a_refusal_is_not(redis_server: RedisServer) -> None:
    nobody = redis.Redis(port=free_port(), socket_connect_timeout=1)
    assert is_redis_retryable(_error_of(nobody.ping))

    admin = redis.Redis.from_url(redis_server.url)
    admin.acl_setuser("reader", enabled=True, passwords=["+secret"], commands=["+ping"], keys=["*"])
    try:
        limited = redis.Redis(
            host="127.0.0.1", port=redis_server.port, username="reader", password="secret"
        )
        denied = _error_of(lambda: limited.xlen("events"))
        assert isinstance(denied, NoPermissionError)
        assert not is_redis_retryable(denied)

        wrong = redis.Redis(
            host="127.0.0.1", port=redis_server.port, username="reader", password="wrong"
        )
        refused = _error_of(wrong.ping)
        # redis-py derives AuthenticationError from ConnectionError: it must still not retry.
        assert isinstance(refused, AuthenticationError)
        assert not is_redis_retryable(refused)

        admin.set("plain", "x")
        wrong_type = _error_of(lambda: admin.xlen("plain"))
        assert isinstance(wrong_type, ResponseError)
        assert not is_redis_retryable(wrong_type)
    finally:
        admin.acl_deluser("reader")
        admin.close()
