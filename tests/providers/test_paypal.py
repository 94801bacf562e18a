"""The PayPal Payouts adapter against a local server speaking PayPal's wire protocol."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from paypal_server import CLIENT_ID_DEFAULT, CLIENT_SECRET_DEFAULT, PayPalServer

from giftflow.adapters.providers.paypal import PayPalPayouts, format_amount
from giftflow.economy.providers import (
    PayoutProvider,
    PayoutRequest,
    PayoutState,
    PayoutStatus,
    ProviderFailure,
)

INT64_MAX = 2**63 - 1


@pytest.fixture
def server() -> Iterator[PayPalServer]:
    """A running local PayPal server."""
    with PayPalServer() as running:
        yield running


def make_adapter(server: PayPalServer, **overrides: object) -> PayPalPayouts:
    """An adapter for ``server``'s credentials, with ``overrides`` of its options."""
    options: dict[str, object] = {
        "base_url": server.base_url, "client_id": CLIENT_ID_DEFAULT,
        "client_secret": CLIENT_SECRET_DEFAULT, "timeout_s": 2.0, **overrides}
    return PayPalPayouts(**options)  # type: ignore[arg-type]


@pytest.fixture
def paypal(server: PayPalServer) -> Iterator[PayPalPayouts]:
    """An adapter talking to ``server``."""
    with make_adapter(server) as adapter:
        yield adapter


def payout(number: int = 1, *, amount_minor: int = 1250, currency: str = "USD",
           receiver: str = "creator@example.com", provider_ref: str = "") -> PayoutRequest:
    """Payout number ``number`` (key ``payout-key-<number>``, id ``po-<number>``)."""
    return PayoutRequest(
        payout_id=f"po-{number}", idempotency_key=f"payout-key-{number}", receiver=receiver,
        amount_minor=amount_minor, currency=currency, note="Your diamonds, cashed out",
        provider_ref=provider_ref)


def state(result: PayoutState | ProviderFailure) -> PayoutState:
    """``result``, which must be a state."""
    assert isinstance(result, PayoutState), result
    return result


def failure(result: PayoutState | ProviderFailure) -> ProviderFailure:
    """``result``, which must be a failure."""
    assert isinstance(result, ProviderFailure), result
    return result


def test_adapter_is_a_payout_provider(paypal):
    """The adapter satisfies the economy's PayoutProvider protocol under the name ``paypal``."""
    provider: PayoutProvider = paypal
    assert provider.name == "paypal"


def test_submit_creates_one_pending_batch(server, paypal):
    """A submit creates one batch with the payout's keys and answers PENDING with its batch id."""
    result = state(paypal.submit(payout()))
    assert result.status is PayoutStatus.PENDING
    assert result.provider_ref == server.batch_id_of("payout-key-1")
    [created] = server.payouts
    assert (created.sender_batch_id, created.sender_item_id) == ("payout-key-1", "po-1")
    assert (created.receiver, created.value, created.currency) == (
        "creator@example.com", "12.50", "USD")
    assert created.note == "Your diamonds, cashed out"
    creates = [request for request in server.requests if request.endpoint == "create"]
    assert [request.paypal_request_id for request in creates] == ["payout-key-1"]


def test_resubmit_finds_the_same_batch_and_pays_once(server, paypal):
    """A second submit with the same key is deduplicated by PayPal and answers the same batch."""
    first = state(paypal.submit(payout()))
    second = state(paypal.submit(payout()))
    assert second.provider_ref == first.provider_ref
    assert second.status is PayoutStatus.PENDING
    assert len(server.payouts) == 1
    assert [request.status for request in server.requests if request.endpoint == "create"] == [
        201, 400]


def test_resubmit_after_success_reports_success(server, paypal):
    """A resubmission of a payout that has been paid answers SUCCESS, never a failure."""
    paypal.submit(payout())
    server.set_status("payout-key-1", "SUCCESS")
    assert state(paypal.submit(payout())).status is PayoutStatus.SUCCESS
    assert len(server.payouts) == 1


def test_replayed_request_id_answers_the_same_batch(server):
    """When PayPal replays the original 201 for a repeated PayPal-Request-Id, it is one payout."""
    server.replay_request_ids = True
    with make_adapter(server) as paypal:
        first = state(paypal.submit(payout()))
        second = state(paypal.submit(payout()))
    assert second.provider_ref == first.provider_ref
    assert len(server.payouts) == 1


@pytest.mark.parametrize(("moves", "expected"), [
    ([], PayoutStatus.PENDING),
    (["SUCCESS"], PayoutStatus.SUCCESS),
    (["DENIED"], PayoutStatus.DENIED),
    (["FAILED"], PayoutStatus.FAILED),
    (["SUCCESS", "RETURNED"], PayoutStatus.RETURNED),
    (["UNCLAIMED", "RETURNED"], PayoutStatus.RETURNED),
    (["SUCCESS", "REVERSED"], PayoutStatus.REVERSED),
    (["SUCCESS", "REFUNDED"], PayoutStatus.REVERSED),
    (["UNCLAIMED"], PayoutStatus.PENDING),
    (["ONHOLD"], PayoutStatus.PENDING),
    (["BLOCKED"], PayoutStatus.PENDING),
    (["UNCLAIMED", "SUCCESS"], PayoutStatus.SUCCESS),
])
def test_status_maps_paypal_item_statuses(server, paypal, moves, expected):
    """status() by provider_ref maps PayPal's item transaction_status to giftflow's status."""
    ref = state(paypal.submit(payout())).provider_ref
    for move in moves:
        server.set_status("payout-key-1", move)
    result = state(paypal.status(payout(provider_ref=ref)))
    assert (result.status, result.provider_ref) == (expected, ref)
    assert (moves[-1] if moves else "PENDING") in result.detail


def test_status_by_ref_only_reads(server, paypal):
    """status() with a provider_ref is one GET of that batch: it never posts a create."""
    ref = state(paypal.submit(payout())).provider_ref
    creates_before = server.count("create")
    server.set_status("payout-key-1", "SUCCESS")
    assert state(paypal.status(payout(provider_ref=ref))).status is PayoutStatus.SUCCESS
    assert server.count("create") == creates_before
    assert server.count("get") == 1


def test_status_of_unknown_batch_is_not_found(server, paypal):
    """status() for a provider_ref PayPal does not know answers not_found."""
    result = failure(paypal.status(payout(provider_ref="NOSUCHBATCH01")))
    assert result.code == "not_found"
    assert server.payouts == []


def test_status_without_ref_learns_the_batch(server, paypal):
    """status() without a provider_ref finds the batch through the deduplicated resubmission."""
    ref = state(paypal.submit(payout())).provider_ref
    server.set_status("payout-key-1", "DENIED")
    result = state(paypal.status(payout()))
    assert (result.status, result.provider_ref) == (PayoutStatus.DENIED, ref)
    assert len(server.payouts) == 1


def test_status_without_ref_of_never_received_payout_submits_it(server, paypal):
    """status() for a payout PayPal never received submits it (PENDING) rather than guess."""
    result = state(paypal.status(payout()))
    assert result.status is PayoutStatus.PENDING
    assert result.provider_ref == server.batch_id_of("payout-key-1")
    assert len(server.payouts) == 1


def test_server_error_is_unavailable_and_pays_nothing(server, paypal):
    """A 503 from PayPal is ``unavailable``; a later submit creates the payout exactly once."""
    server.fail_next(1, status=503, endpoint="create")
    assert failure(paypal.submit(payout())).code == "unavailable"
    assert server.payouts == []
    assert state(paypal.submit(payout())).status is PayoutStatus.PENDING
    assert len(server.payouts) == 1


def test_token_endpoint_outage_is_unavailable(server, paypal):
    """A 503 from the token endpoint is ``unavailable`` and no create is attempted."""
    server.fail_next(1, status=503, endpoint="token")
    assert failure(paypal.submit(payout())).code == "unavailable"
    assert server.count("create") == 0


def test_timeout_is_unavailable_then_status_learns_the_truth(server):
    """A create that PayPal ran but answered too late is ``unavailable``; status() then finds it."""
    with make_adapter(server, timeout_s=0.3) as paypal:
        paypal.status(payout(99))  # fetches the token, so the hang hits the create
        server.hang_next(1, seconds=2.0, endpoint="create")
        result = failure(paypal.submit(payout()))
        assert result.code == "unavailable"
        assert "timed out" in result.detail
        found = state(paypal.status(payout()))
    assert found.status is PayoutStatus.PENDING
    assert found.provider_ref == server.batch_id_of("payout-key-1")
    assert [p.sender_batch_id for p in server.payouts].count("payout-key-1") == 1


def test_slow_status_read_is_unavailable(server):
    """A batch read that outlasts the timeout is ``unavailable``, not a guess."""
    with make_adapter(server, timeout_s=0.3) as paypal:
        ref = state(paypal.submit(payout())).provider_ref
        server.hang_next(1, seconds=2.0, endpoint="get")
        assert failure(paypal.status(payout(provider_ref=ref))).code == "unavailable"


def test_dropped_response_then_resubmit_and_status_pay_once(server, paypal):
    """A create whose answer is lost is ``unavailable``; resubmit and status find one payout."""
    paypal.status(payout(99))  # token, and an unrelated payout
    server.drop_next(1, endpoint="create")
    assert failure(paypal.submit(payout())).code == "unavailable"
    again = state(paypal.submit(payout()))
    ref = server.batch_id_of("payout-key-1")
    assert (again.status, again.provider_ref) == (PayoutStatus.PENDING, ref)
    server.set_status("payout-key-1", "SUCCESS")
    assert state(paypal.status(payout())).status is PayoutStatus.SUCCESS
    assert [p.sender_batch_id for p in server.payouts].count("payout-key-1") == 1


def test_accepted_payout_whose_status_read_fails_stays_pending(server, paypal):
    """A duplicate answer followed by a failed batch read is PENDING with the ref, not a failure."""
    ref = state(paypal.submit(payout())).provider_ref
    server.fail_next(1, status=503, endpoint="get")
    result = state(paypal.submit(payout()))
    assert (result.status, result.provider_ref) == (PayoutStatus.PENDING, ref)


def test_bad_credentials_are_unavailable(server):
    """Refused client credentials are ``unavailable``: a configuration fault, retried once fixed."""
    with make_adapter(server, client_secret=CLIENT_SECRET_DEFAULT + "-wrong") as paypal:
        result = failure(paypal.submit(payout()))
    assert result.code == "unavailable"
    assert "credentials" in result.detail
    assert CLIENT_SECRET_DEFAULT not in result.detail
    assert server.count("create") == 0
    assert server.payouts == []


def test_validation_error_is_rejected(server, paypal):
    """PayPal's VALIDATION_ERROR (a receiver that is not an email) is ``rejected``."""
    result = failure(paypal.submit(payout(receiver="not-an-email")))
    assert result.code == "rejected"
    assert "VALIDATION_ERROR" in result.detail
    assert server.payouts == []


def test_insufficient_funds_is_rejected(server, paypal):
    """PayPal's 422 INSUFFICIENT_FUNDS is ``rejected`` and nothing is paid."""
    server.reject_next_create(http_status=422, name="INSUFFICIENT_FUNDS")
    result = failure(paypal.submit(payout()))
    assert result.code == "rejected"
    assert "INSUFFICIENT_FUNDS" in result.detail
    assert server.payouts == []


def test_unsupported_currency_and_bad_amount_rejected_locally(server, paypal):
    """A currency PayPal does not pay out, or a non-positive amount, is rejected before any call."""
    assert failure(paypal.submit(payout(currency="XTS"))).code == "rejected"
    assert failure(paypal.submit(payout(amount_minor=0))).code == "rejected"
    assert server.requests == []


@pytest.mark.parametrize(("amount_minor", "currency", "value"), [
    (1, "USD", "0.01"),
    (10, "USD", "0.10"),
    (100, "EUR", "1.00"),
    (123456, "USD", "1234.56"),
    (INT64_MAX, "USD", "92233720368547758.07"),
    (INT64_MAX - 1, "EUR", "92233720368547758.06"),
    (1, "JPY", "1"),
    (1234, "JPY", "1234"),
    (INT64_MAX, "JPY", "9223372036854775807"),
    (99, "HUF", "99"),
])
def test_amounts_are_exact_decimal_strings(server, paypal, amount_minor, currency, value):
    """Minor units become PayPal's decimal string exactly, up to int64, and the server reads back
    the same minor units.
    """
    assert format_amount(amount_minor, currency) == value
    state(paypal.submit(payout(amount_minor=amount_minor, currency=currency)))
    [created] = server.payouts
    assert (created.value, created.currency, created.amount_minor) == (
        value, currency, amount_minor)


def test_format_amount_refuses_unknown_currency_and_negative():
    """format_amount raises for a currency PayPal does not pay out and for a negative amount."""
    with pytest.raises(ValueError, match="XTS"):
        format_amount(1, "XTS")
    with pytest.raises(ValueError, match="negative"):
        format_amount(-1, "USD")


def test_token_is_cached(server, paypal):
    """One token serves many calls while it is valid."""
    for number in range(3):
        paypal.submit(payout(number))
    assert server.count("token") == 1


def test_token_refreshed_on_401(server, paypal):
    """When PayPal refuses the cached token (401), the adapter gets a new one and retries once."""
    paypal.submit(payout(1))
    server.expire_tokens()
    assert state(paypal.submit(payout(2))).status is PayoutStatus.PENDING
    assert server.count("token") == 2
    assert [r.status for r in server.requests if r.endpoint == "create"] == [201, 401, 201]
    assert len(server.payouts) == 2


def test_token_refreshed_before_it_expires(server):
    """A token is replaced ``token_refresh_margin_s`` before its ``expires_in`` runs out."""
    now = [1000.0]
    server.token_ttl_s = 600
    with make_adapter(server, clock=lambda: now[0], token_refresh_margin_s=60.0) as paypal:
        paypal.submit(payout(1))
        now[0] += 539.0
        paypal.submit(payout(2))
        assert server.count("token") == 1
        now[0] += 2.0
        paypal.submit(payout(3))
        assert server.count("token") == 2
    assert all(request.status != 401 for request in server.requests)


def test_oversize_response_is_unavailable(server):
    """An answer larger than ``response_bytes_max`` is not parsed: ``unavailable``."""
    with make_adapter(server, response_bytes_max=4096) as paypal:
        ref = state(paypal.submit(payout())).provider_ref
        server.pad_next(1, pad_bytes=10_000, endpoint="get")
        result = failure(paypal.status(payout(provider_ref=ref)))
    assert result.code == "unavailable"
    assert "4096 bytes" in result.detail


def test_connection_refused_is_unavailable():
    """No server at the address is ``unavailable``."""
    with PayPalServer() as gone:
        base_url = gone.base_url
    with PayPalPayouts(base_url=base_url, client_id="a",
                       client_secret=CLIENT_SECRET_DEFAULT,
                       timeout_s=1.0) as paypal:
        assert failure(paypal.submit(payout())).code == "unavailable"


def test_batch_of_another_payout_is_not_taken_as_this_one(server, paypal):
    """A key reused for a different payout never reports the other payout's state as this one's."""
    paypal.submit(payout())
    server.set_status("payout-key-1", "SUCCESS")
    impostor = PayoutRequest(payout_id="po-other", idempotency_key="payout-key-1",
                             receiver="creator@example.com", amount_minor=1250, currency="USD")
    result = failure(paypal.submit(impostor))
    assert result.code == "unavailable"
    assert "po-other" in result.detail
    assert len(server.payouts) == 1


def test_injected_transport_is_used():
    """A transport injected into the constructor carries the calls (no server needed)."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                             "expires_in": 3600})
        return httpx.Response(201, json={"batch_header": {"payout_batch_id": "BATCH1",
                                                          "batch_status": "PENDING"}})

    with PayPalPayouts(base_url="https://api-m.sandbox.paypal.com", client_id="a",
                       client_secret=CLIENT_SECRET_DEFAULT,
                       transport=httpx.MockTransport(handler)) as paypal:
        result = state(paypal.submit(payout()))
    assert result.provider_ref == "BATCH1"
    assert seen == ["/v1/oauth2/token", "/v1/payments/payouts"]


def test_duplicate_without_link_is_unavailable():
    """A duplicate answer that does not link the batch is ``unavailable``, never ``rejected``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                             "expires_in": 3600})
        return httpx.Response(400, json={
            "name": "USER_BUSINESS_ERROR", "message": "User business error.",
            "details": [{"field": "SENDER_BATCH_ID", "issue": "Duplicate batch request"}]})

    with PayPalPayouts(base_url="https://api-m.sandbox.paypal.com", client_id="a",
                       client_secret=CLIENT_SECRET_DEFAULT,
                       transport=httpx.MockTransport(handler)) as paypal:
        assert failure(paypal.submit(payout())).code == "unavailable"


def test_duplicate_request_id_is_unavailable():
    """DUPLICATE_REQUEST_ID (a concurrent twin of the create may succeed) is ``unavailable``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                             "expires_in": 3600})
        return httpx.Response(400, json={
            "name": "DUPLICATE_REQUEST_ID",
            "message": "The value of PayPal-Request-Id header has already been used."})

    with PayPalPayouts(base_url="https://api-m.sandbox.paypal.com", client_id="a",
                       client_secret=CLIENT_SECRET_DEFAULT,
                       transport=httpx.MockTransport(handler)) as paypal:
        assert failure(paypal.submit(payout())).code == "unavailable"
