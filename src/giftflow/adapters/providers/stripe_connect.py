"""Stripe Connect payouts: a creator's payout is a Transfer to their connected account.

``submit`` creates ``POST /v1/transfers`` (amount in minor units, lower-case currency,
``destination`` = the creator's connected account ``acct_…`` taken from ``PayoutRequest.receiver``,
``transfer_group`` and ``metadata[payout_id]`` = the payout id) with the payout's
``Idempotency-Key``, so a repeated submit replays Stripe's stored answer instead of paying again.
``status`` retrieves the transfer by ``provider_ref``, or, when the submit never learnt it (a
timeout), lists the transfers of the payout's ``transfer_group``: an empty list means Stripe never
received the payout (``not_found``).

A transfer to a connected account moves the money at once, so a created transfer is ``SUCCESS``;
a fully reversed one is ``REVERSED`` (a partial reversal stays ``SUCCESS`` with a detail).

Errors become :class:`ProviderFailure` values. ``unavailable`` (the payout may or may not exist):
connection errors and timeouts, 5xx, rate limits, unknown errors, an idempotency conflict (the
key was already used with other parameters, so something exists under it; ``status`` tells what),
and a wrong API key or missing permissions: an operator's configuration fault, retried once it is
fixed, which must never void a creator's payout (the PayPal adapter treats bad credentials alike).
``rejected`` (nothing was paid): invalid requests such as an unknown destination.
``not_found``: HTTP 404.
"""

from __future__ import annotations

import stripe
from stripe.params import TransferCreateParams

from giftflow.economy.providers import (
    PayoutRequest,
    PayoutState,
    PayoutStatus,
    ProviderFailure,
)

HTTP_NOT_FOUND = 404
TIMEOUT_S_DEFAULT = 30.0
"""Per-request timeout of the default HTTP client, in seconds."""
LIST_LIMIT_COUNT = 10
"""Transfers listed per payout group; one is expected, more means a double payment to look at."""


class StripeConnectPayouts:
    """:class:`~giftflow.economy.providers.PayoutProvider` over Stripe Connect transfers.

    ``api_key`` is the platform's secret key; ``base_url`` overrides ``https://api.stripe.com``
    (tests point it at a local server); ``timeout_s`` bounds each HTTP request;
    ``max_network_retries`` lets the ``stripe`` package retry connection errors and 5xx itself
    (safe, since every create carries an idempotency key; 0 leaves retrying to the economy);
    ``http_client`` replaces the default ``stripe.RequestsClient`` (then ``timeout_s`` is unused).
    """

    def __init__(
        self,
        api_key: str,
        *,
        name: str = "bank",
        base_url: str | None = None,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        max_network_retries: int = 0,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the Stripe API key must not be empty")
        self._name = name
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url} if base_url else None,
            max_network_retries=max_network_retries,
            http_client=http_client or stripe.RequestsClient(timeout=timeout_s),
        )

    @property
    def name(self) -> str:
        """The payout method creators choose for this provider."""
        return self._name

    def submit(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """Create the transfer; a repeat with the same idempotency key returns the same one."""
        if request.amount_minor <= 0:
            return ProviderFailure("rejected", f"amount {request.amount_minor} is not positive")
        params: TransferCreateParams = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "destination": request.receiver,
            "transfer_group": request.payout_id,
            "metadata": {"payout_id": request.payout_id},
        }
        if request.note:
            params["description"] = request.note
        try:
            transfer = self._client.v1.transfers.create(
                params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.StripeError as error:
            return _failure(error)
        return _state(transfer)

    def status(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """The transfer's state, found by ``provider_ref`` or else by the payout's group."""
        try:
            if request.provider_ref:
                return _state(self._client.v1.transfers.retrieve(request.provider_ref))
            found = self._client.v1.transfers.list(
                {"transfer_group": request.payout_id, "limit": LIST_LIMIT_COUNT}
            ).data
        except stripe.StripeError as error:
            return _failure(error)
        if not found:
            return ProviderFailure("not_found", f"no transfer in group {request.payout_id!r}")
        state = _state(found[0])
        if len(found) > 1:
            ids = ", ".join(transfer.id for transfer in found)
            return PayoutState(state.status, state.provider_ref, f"several transfers: {ids}")
        return state


def _state(transfer: stripe.Transfer) -> PayoutState:
    """A transfer's payout state: paid at once, unless fully reversed since."""
    if transfer.reversed or (transfer.amount > 0 and transfer.amount_reversed >= transfer.amount):
        return PayoutState(PayoutStatus.REVERSED, transfer.id, "transfer reversed")
    detail = (
        f"partially reversed: {transfer.amount_reversed} of {transfer.amount}"
        if transfer.amount_reversed
        else ""
    )
    return PayoutState(PayoutStatus.SUCCESS, transfer.id, detail)


def _failure(error: stripe.StripeError) -> ProviderFailure:
    """Classify a ``stripe`` error by whether the payout can have been received."""
    detail = f"{type(error).__name__}: {error.user_message or error}"
    if isinstance(error, stripe.APIConnectionError | stripe.IdempotencyError):
        return ProviderFailure("unavailable", detail)
    if error.http_status == HTTP_NOT_FOUND:
        return ProviderFailure("not_found", detail)
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        return ProviderFailure("unavailable", detail)
    if isinstance(error, stripe.InvalidRequestError):
        return ProviderFailure("rejected", detail)
    return ProviderFailure("unavailable", detail)
