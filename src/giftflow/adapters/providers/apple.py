"""Apple App Store purchases: signed transactions and notifications verified, then mapped.

Verification is Apple's own ``app-store-server-library``
(:class:`appstoreserverlibrary.signed_data_verifier.SignedDataVerifier`): the JWS must be ES256
with an ``x5c`` chain of exactly three certificates that ends in one of the configured root
certificates (Apple Root CA - G3 in production), the leaf must carry the App Store receipt-signing
extension (OID ``1.2.840.113635.100.6.11.1``) and the intermediate the WWDR extension
(``1.2.840.113635.100.6.2.1``); the chain is checked at the payload's ``signedDate``; then the
bundle id (and, in production, the app's Apple id) and the environment must be the configured ones.
Only ``Sandbox`` and ``Production`` are accepted: the library skips signature verification for
``Xcode`` and ``LocalTesting``, so this adapter refuses to be built for them.

Orders. giftflow gives StoreKit an ``appAccountToken`` derived from the order id
(:func:`app_account_token`, a UUIDv5 under :data:`APP_ACCOUNT_TOKEN_NAMESPACE`). The app posts the
order id with the signed transaction; :meth:`AppleStorePurchases.parse_transaction` takes that
order id from the caller and accepts the transaction only if its ``appAccountToken`` is the one
derived from it (a transaction cannot be replayed against another order). Refund notifications
carry no order id giftflow can read back (the UUID is one-way), so their events have
``order_id == ""``: the economy resolves them by ``payment_ref``, the ``originalTransactionId``
(for consumables the same as the transaction id), which the purchase event stored on the order.

Amounts. Apple reports ``price`` in milliunits of ``currency`` (price × 1000). It becomes minor
units exactly with integer arithmetic by the currency's ISO 4217 exponent
(:func:`milliunits_to_minor`); a price that does not convert exactly, or that is not a JSON
integer in the signed payload, is ``malformed``. Apple refunds of consumables are full refunds:
a ``REFUND`` notification is ``REFUNDED`` for the whole price (the cumulative amount), unless it
says ``REFUND_PRORATED``, in which case it is ``price × revocationPercentage / 100000`` (Apple's
percentage is in milliunits), rounded down.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import (
    JWSTransactionDecodedPayload,
)
from appstoreserverlibrary.models.NotificationTypeV2 import NotificationTypeV2
from appstoreserverlibrary.models.RevocationType import RevocationType
from appstoreserverlibrary.models.Type import Type
from appstoreserverlibrary.signed_data_verifier import (
    SignedDataVerifier,
    VerificationException,
    VerificationStatus,
)
from cattrs.errors import CattrsError

from giftflow.economy.providers import PaymentEvent, PaymentEventKind

PROVIDER: Final = "apple"
"""The ``provider`` of every event this adapter makes."""

APP_ACCOUNT_TOKEN_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL,
                                                "urn:giftflow:app-account-token")
"""The UUIDv5 namespace of giftflow's ``appAccountToken`` values (fixed: changing it would orphan
every pending App Store purchase)."""

SIGNED_DATA_CHARS_MAX_DEFAULT: Final = 64 * 1024
"""Largest signed transaction or notification accepted; Apple's are a few kilobytes."""

MILLIUNITS_PER_UNIT: Final = 1000
"""Apple's ``price`` is the price in the currency's major unit × 1000."""

PERCENT_MILLIUNITS_WHOLE: Final = 100_000
"""``revocationPercentage`` of a full refund (100 % in milliunits)."""

CURRENCY_EXPONENTS: Final = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                     "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
"""ISO 4217 minor-unit exponents that are not 2 (every other three-letter code has 2)."""

_VERIFIED_ENVIRONMENTS: Final = frozenset({Environment.SANDBOX, Environment.PRODUCTION})

AppleRejectedCode = Literal[
    "bad_signature", "wrong_app", "wrong_environment", "wrong_order", "wrong_product",
    "not_consumable", "revoked", "malformed", "unavailable",
]


@dataclass(frozen=True, slots=True)
class AppleRejected:
    """Signed App Store data that must not be acted on.

    ``bad_signature``: the JWS, its certificate chain or its root does not verify.
    ``wrong_app``: signed by Apple for another bundle id (or app Apple id).
    ``wrong_environment``: a sandbox transaction on a production verifier or the reverse.
    ``wrong_order``: the transaction's ``appAccountToken`` is not the one of the order it was
    posted for. ``wrong_product``: another product than the one expected. ``not_consumable``:
    not a consumable purchase (coin packs are consumables), or a quantity other than 1.
    ``revoked``: the transaction was refunded or revoked already. ``malformed``: verified or not,
    the data is not what Apple sends (too large, missing fields, a price that is not an exact
    integer of milliunits, an unknown currency). ``unavailable``: an online revocation check could
    not be completed (only with ``enable_online_checks``); ask again later.
    """

    code: AppleRejectedCode
    detail: str
    ok: Literal[False] = False


_STATUS_CODES: Final[dict[VerificationStatus, AppleRejectedCode]] = {
    VerificationStatus.VERIFICATION_FAILURE: "bad_signature",
    VerificationStatus.INVALID_CERTIFICATE: "bad_signature",
    VerificationStatus.INVALID_CHAIN_LENGTH: "bad_signature",
    VerificationStatus.INVALID_CHAIN: "bad_signature",
    VerificationStatus.INVALID_APP_IDENTIFIER: "wrong_app",
    VerificationStatus.INVALID_ENVIRONMENT: "wrong_environment",
    VerificationStatus.RETRYABLE_VERIFICATION_FAILURE: "unavailable",
}


class _RejectedError(Exception):
    """Internal: carries a rejection out of the mapping helpers; never escapes the adapter."""

    def __init__(self, code: AppleRejectedCode, detail: str) -> None:
        super().__init__(detail)
        self.rejection = AppleRejected(code, detail)


def app_account_token(order_id: str) -> str:
    """The ``appAccountToken`` giftflow gives StoreKit for an order (a lower-case UUID string)."""
    if not order_id:
        raise ValueError("an order id is needed to derive its app account token")
    return str(uuid.uuid5(APP_ACCOUNT_TOKEN_NAMESPACE, order_id))


def currency_exponent(currency: str) -> int:
    """The ISO 4217 minor-unit exponent of a three-letter currency code (2 unless listed)."""
    return CURRENCY_EXPONENTS.get(currency, 2)


def milliunits_to_minor(price_milliunits: int, currency: str) -> int | None:
    """Apple's milliunit price in the currency's minor units, or ``None`` if not exact.

    USD 9.99 is ``9990`` milliunits and ``999`` cents; JPY 160 is ``160000`` and ``160``;
    KWD 1.250 is ``1250`` and ``1250`` fils. Integer arithmetic only.
    """
    exponent = currency_exponent(currency)
    scale = 10**exponent
    whole, rest = divmod(price_milliunits * scale, MILLIUNITS_PER_UNIT)
    return whole if rest == 0 else None


class AppleStorePurchases:
    """Verifies App Store signed transactions and notifications and maps them onto events.

    ``root_certificates`` are the DER bytes of the trusted roots (Apple Root CA - G3 from
    https://www.apple.com/certificateauthority/ in production). ``environment`` is ``Sandbox``
    or ``Production``; production needs ``app_apple_id``. ``enable_online_checks`` makes the
    library ask Apple's OCSP responders whether a certificate was revoked (a network call on
    each new chain); off by default, which checks the chain at the payload's signing date.
    """

    def __init__(
        self,
        root_certificates: Sequence[bytes],
        *,
        bundle_id: str,
        environment: Environment | str,
        app_apple_id: int | None = None,
        enable_online_checks: bool = False,
        signed_data_chars_max: int = SIGNED_DATA_CHARS_MAX_DEFAULT,
    ) -> None:
        env = Environment(environment)
        if env not in _VERIFIED_ENVIRONMENTS:
            raise ValueError(f"environment {env.value!r} is not verified; use Sandbox or "
                             "Production")
        if not root_certificates:
            raise ValueError("at least one trusted root certificate is needed")
        if not bundle_id:
            raise ValueError("the bundle id must not be empty")
        if signed_data_chars_max <= 0:
            raise ValueError("signed_data_chars_max must be positive")
        self._verifier = SignedDataVerifier(
            list(root_certificates), enable_online_checks, env, bundle_id, app_apple_id)
        self._signed_data_chars_max = signed_data_chars_max

    def parse_transaction(
        self, signed_transaction: str, *, order_id: str, product_id: str | None = None
    ) -> PaymentEvent | AppleRejected:
        """Verify a signed transaction the app posted for ``order_id`` and map it to ``PAID``.

        ``product_id``, when given, is the App Store product the order's pack is sold as. The
        event's ``event_id`` is ``transaction:<transactionId>`` and its ``payment_ref`` the
        ``originalTransactionId``; amount and currency are Apple's, and the economy checks them
        against the order's price snapshot.
        """
        try:
            transaction = self._transaction(signed_transaction)
            return self._paid(transaction, signed_transaction, order_id, product_id)
        except _RejectedError as error:
            return error.rejection

    def parse_notification(self, signed_payload: str) -> PaymentEvent | AppleRejected | None:
        """Verify an App Store Server Notification V2 ``signedPayload`` and map it.

        ``REFUND`` → ``REFUNDED`` for the cumulative refunded amount (see the module), with
        ``event_id`` the ``notificationUUID``. Every other notification type (``REFUND_DECLINED``,
        ``REFUND_REVERSED``, ``CONSUMPTION_REQUEST``, subscription events, ``TEST``…) is verified
        and then ignored: ``None``.
        """
        try:
            self._check_size(signed_payload)
            notification = self._verifier.verify_and_decode_notification(signed_payload)
        except VerificationException as error:
            return _verification_rejection(error)
        except _RejectedError as error:
            return error.rejection
        except (CattrsError, ValueError, TypeError, KeyError, AttributeError) as error:
            # Verified, but the claims do not fit Apple's model (wrong JSON types).
            return AppleRejected("malformed", f"unreadable notification: {error}")
        if notification.notificationType is not NotificationTypeV2.REFUND:
            return None
        try:
            notification_id = _required(notification.notificationUUID, "notificationUUID")
            data = notification.data
            signed_transaction = data.signedTransactionInfo if data is not None else None
            transaction = self._transaction(
                _required(signed_transaction, "data.signedTransactionInfo"))
            price_minor, currency = _price(transaction, signed_transaction or "")
            return PaymentEvent(
                provider=PROVIDER,
                event_id=notification_id,
                kind=PaymentEventKind.REFUNDED,
                order_id="",
                payment_ref=_required(transaction.originalTransactionId,
                                      "originalTransactionId"),
                amount_minor=_refunded_minor(transaction, price_minor),
                currency=currency,
            )
        except _RejectedError as error:
            return error.rejection

    def _check_size(self, signed: str) -> None:
        if len(signed) > self._signed_data_chars_max:
            raise _RejectedError("malformed", f"signed data of {len(signed)} characters is over "
                                              f"{self._signed_data_chars_max}")

    def _transaction(self, signed_transaction: str) -> JWSTransactionDecodedPayload:
        """The verified transaction (chain, signature, bundle id and environment checked)."""
        self._check_size(signed_transaction)
        try:
            return self._verifier.verify_and_decode_signed_transaction(signed_transaction)
        except VerificationException as error:
            raise _RejectedError(_verification_rejection(error).code, str(error)) from error
        except (CattrsError, ValueError, TypeError, KeyError, AttributeError) as error:
            # Verified, but cattrs could not structure the claims into Apple's model.
            raise _RejectedError("malformed", f"unreadable transaction: {error}") from error

    def _paid(self, transaction: JWSTransactionDecodedPayload, signed_transaction: str,
              order_id: str, product_id: str | None) -> PaymentEvent:
        if not order_id:
            raise _RejectedError("wrong_order", "no order id was given with the transaction")
        token = (transaction.appAccountToken or "").lower()
        if token != app_account_token(order_id):
            raise _RejectedError("wrong_order",
                                 f"appAccountToken {token or '(none)'} is not order {order_id}'s")
        if product_id is not None and transaction.productId != product_id:
            raise _RejectedError("wrong_product",
                                 f"product {transaction.productId!r}, expected {product_id!r}")
        if transaction.type is not Type.CONSUMABLE:
            raise _RejectedError("not_consumable", f"type {transaction.rawType!r}")
        if transaction.quantity not in {None, 1}:
            raise _RejectedError("not_consumable", f"quantity {transaction.quantity}, not 1")
        if transaction.revocationDate is not None:
            raise _RejectedError("revoked",
                                 f"transaction revoked at {transaction.revocationDate} ms")
        transaction_id = _required(transaction.transactionId, "transactionId")
        price_minor, currency = _price(transaction, signed_transaction)
        return PaymentEvent(
            provider=PROVIDER,
            event_id=f"transaction:{transaction_id}",
            kind=PaymentEventKind.PAID,
            order_id=order_id,
            payment_ref=_required(transaction.originalTransactionId, "originalTransactionId"),
            amount_minor=price_minor,
            currency=currency,
        )


def _verification_rejection(error: VerificationException) -> AppleRejected:
    code = _STATUS_CODES.get(error.status, "bad_signature")
    return AppleRejected(code, f"App Store data did not verify: {error.status.name}")


def _required(value: str | None, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _RejectedError("malformed", f"{name} is missing")
    return value


def _signed_claims(signed: str) -> dict[str, object]:
    """The JSON claims of a JWS that the library has verified (read raw for their JSON types)."""
    try:
        payload = signed.split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error) as error:
        raise _RejectedError("malformed", f"unreadable JWS payload: {error}") from error
    if not isinstance(decoded, dict):
        raise _RejectedError("malformed", "the JWS payload is not a JSON object")
    return decoded


def _price(transaction: JWSTransactionDecodedPayload, signed: str) -> tuple[int, str]:
    """The transaction's price in minor units and its currency, exactly.

    The library's model would truncate a JSON float into an int, so the price's JSON type is
    checked on the signed claims themselves.
    """
    raw_price = _signed_claims(signed).get("price")
    if type(raw_price) is not int or raw_price < 0 or transaction.price != raw_price:
        raise _RejectedError("malformed", f"price {raw_price!r} is not integer milliunits")
    currency = transaction.currency
    if (not isinstance(currency, str) or len(currency) != 3  # noqa: PLR2004 (ISO 4217)
            or not currency.isascii() or not currency.isalpha() or not currency.isupper()):
        raise _RejectedError("malformed", f"currency {currency!r} is not an ISO 4217 code")
    price_minor = milliunits_to_minor(raw_price, currency)
    if price_minor is None:
        raise _RejectedError("malformed",
                             f"price {raw_price} milliunits is not a whole amount of {currency}")
    return price_minor, currency


def _refunded_minor(transaction: JWSTransactionDecodedPayload, price_minor: int) -> int:
    """The cumulative refunded amount: the whole price, or the prorated share when Apple says so."""
    if transaction.revocationType is not RevocationType.REFUND_PRORATED:
        return price_minor
    percentage = transaction.revocationPercentage
    if type(percentage) is not int or not 0 <= percentage <= PERCENT_MILLIUNITS_WHOLE:
        raise _RejectedError("malformed", f"revocationPercentage {percentage!r}")
    return price_minor * percentage // PERCENT_MILLIUNITS_WHOLE
