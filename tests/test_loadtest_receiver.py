"""The load test's webhook receiver: answers every post, and tells a delivery repeated."""

from __future__ import annotations

import urllib.request

import pytest

from loadtest.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration


def post(url: str, webhook_id: str) -> int:
    request = urllib.request.Request(
        url, data=b'{"type": "order.shipped"}', headers={"webhook-id": webhook_id}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        status: int = answer.status
        return status


def test_the_receiver_counts_posts_and_repeated_webhook_ids() -> None:
    # Given the receiver on loopback
    with WebhookReceiver() as receiver:
        assert receiver.url.startswith("http://127.0.0.1:")
        # When two notifications are posted, one of them twice
        statuses = [post(receiver.url, webhook_id) for webhook_id in ("n1", "n2", "n1")]
        # Then each post is answered 204, three were received and one was a duplicate
        assert statuses == [204, 204, 204]
        assert (receiver.received, receiver.duplicates) == (3, 1)
