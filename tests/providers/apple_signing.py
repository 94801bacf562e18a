"""Apple App Store test signing: a certificate chain in Apple's shape and ES256 JWS over it.

The chain is built with ``cryptography``: a self-signed root, an intermediate carrying the WWDR
extension (OID 1.2.840.113635.100.6.2.1) and a leaf carrying the receipt-signing extension
(OID 1.2.840.113635.100.6.11.1). Transactions and notifications are ES256 JWS with the three
certificates in the ``x5c`` header, signed with the leaf's key through PyJWT (the
``app-store-server-library``'s own dependency). An adapter that trusts :attr:`Chain.root_der`
verifies them like Apple's. Shared by the adapter tests and the economy's store-purchase tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from giftflow.adapters.providers.apple import app_account_token

BUNDLE_ID = "com.giftflow.app"
ORDER_ID = "ord_0123456789abcdef01234567"
PRODUCT_ID = "com.giftflow.coins.700"

LEAF_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
"""Apple's receipt-signing (Mac App Store / App Store) leaf extension."""
INTERMEDIATE_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")
"""Apple's WWDR intermediate extension."""
ASN1_NULL = b"\x05\x00"


@dataclass(frozen=True)
class Chain:
    """A test root, intermediate and leaf, and the leaf's signing key."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def root_der(self) -> bytes:
        """The root certificate as the verifier takes it (DER bytes)."""
        return self.root.public_bytes(serialization.Encoding.DER)

    @property
    def x5c(self) -> list[str]:
        """The JWS ``x5c`` header: base64 DER of leaf, intermediate, root."""
        return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
                for cert in (self.leaf, self.intermediate, self.root)]


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    apple_oid: x509.ObjectIdentifier | None,
    not_after: dt.datetime,
) -> x509.Certificate:
    """One certificate of the chain, with the extensions OpenSSL's strict mode requires."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "giftflow tests")])
    issuer_name = subject if issuer is None else issuer.subject
    issuer_public = key.public_key() if issuer is None else issuer_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                       critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public),
                       critical=False)
    )
    if apple_oid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(apple_oid, ASN1_NULL),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_chain(*, leaf_oid: bool = True, intermediate_oid: bool = True,
               leaf_not_after: dt.datetime | None = None) -> Chain:
    """A fresh chain in Apple's shape (the OIDs can be left out to test the checks)."""
    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    root_key = ec.generate_private_key(ec.SECP256R1())
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("Test Root CA", root_key, None, root_key, ca=True, apple_oid=None,
                        not_after=far)
    intermediate = _certificate(
        "Test WWDR", intermediate_key, root, root_key, ca=True,
        apple_oid=INTERMEDIATE_OID if intermediate_oid else None, not_after=far)
    leaf = _certificate(
        "Test App Store Signing", leaf_key, intermediate, intermediate_key, ca=False,
        apple_oid=LEAF_OID if leaf_oid else None, not_after=leaf_not_after or far)
    return Chain(root, intermediate, leaf, leaf_key)


def now_ms() -> int:
    """The current time in ms."""
    return int(time.time() * 1000)


def sign(chain: Chain, claims: dict[str, Any]) -> str:
    """An ES256 JWS over ``claims`` with the chain in ``x5c``, signed by the leaf."""
    return jwt.encode(claims, chain.leaf_key, algorithm="ES256", headers={"x5c": chain.x5c})


def transaction(**changes: Any) -> dict[str, Any]:
    """A sandbox consumable purchase of 9.99 USD for the test order."""
    claims: dict[str, Any] = {
        "transactionId": "2000000123456789",
        "originalTransactionId": "2000000123456789",
        "bundleId": BUNDLE_ID,
        "productId": PRODUCT_ID,
        "purchaseDate": now_ms() - 1000,
        "originalPurchaseDate": now_ms() - 1000,
        "quantity": 1,
        "type": "Consumable",
        "appAccountToken": app_account_token(ORDER_ID),
        "inAppOwnershipType": "PURCHASED",
        "signedDate": now_ms(),
        "environment": "Sandbox",
        "transactionReason": "PURCHASE",
        "storefront": "USA",
        "storefrontId": "143441",
        "price": 9990,
        "currency": "USD",
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


NOTIFICATION_UUID = "3b8b4d6e-2f1c-4c0e-9d7e-1a2b3c4d5e6f"
"""The default notification's ``notificationUUID``."""


def notification(chain: Chain, notification_type: str = "REFUND", *,
                 bundle_id: str = BUNDLE_ID, notification_uuid: str = NOTIFICATION_UUID,
                 **transaction_changes: Any) -> dict[str, Any]:
    """An App Store Server Notification V2 payload with a signed (revoked) transaction."""
    revoked = transaction(revocationDate=now_ms(), revocationReason=0, **transaction_changes)
    return {
        "notificationType": notification_type,
        "notificationUUID": notification_uuid,
        "data": {
            "bundleId": bundle_id,
            "environment": "Sandbox",
            "signedTransactionInfo": sign(chain, revoked),
        },
        "version": "2.0",
        "signedDate": now_ms(),
    }
