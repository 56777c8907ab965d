"""The handler authors' API: what `streamscale.consumer` exports is a promise; guard it."""

from __future__ import annotations

import streamscale.consumer
from streamscale.consumer.messages import Message
from streamscale.consumer.sinks.base import TransientError
from streamscale.consumer.sinks.handler import Reject, batch


def test_the_public_api_is_exactly_what_handler_authors_need() -> None:
    # Adding a name is a decision (it must then stay); removing one breaks handlers.
    assert sorted(streamscale.consumer.__all__) == ["Message", "Reject", "TransientError", "batch"]


def test_the_exported_names_are_the_ones_the_consumer_acts_on() -> None:
    # A copy (not the same class) would make `raise Reject(...)` an ordinary failure.
    assert streamscale.consumer.Message is Message
    assert streamscale.consumer.Reject is Reject
    assert streamscale.consumer.TransientError is TransientError
    assert streamscale.consumer.batch is batch


def test_star_import_gives_the_public_api_only() -> None:
    namespace: dict[str, object] = {}
    exec("from streamscale.consumer import *", namespace)  # the statement under test
    assert sorted(k for k in namespace if not k.startswith("__")) == sorted(
        streamscale.consumer.__all__
    )
