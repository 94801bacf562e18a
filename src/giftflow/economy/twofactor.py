"""Two-factor authentication with TOTP (RFC 6238): enrolment, confirmation and verification.

SPEC: a TOTP code is required for payouts, limit increases and API-key creation over HTTP; each
code is accepted once, and failed attempts are rate-limited.

The module is pure domain code: it works on values and never touches storage or the wall clock.
The caller loads a :class:`TotpState`, passes the current time as ``now_ms``, stores the state it
gets back (in the same transaction as the action the code authorises), and acts on the
:data:`TwoFactorResult`. Expected failures are values with a stable code; only bugs and key or
configuration errors raise.

* The seed is stored encrypted (:class:`SeedCipher`, AES-256-GCM with a random nonce). The
  ciphertext is bound to the user id as associated data, so a seed copied into another user's
  row fails to decrypt instead of becoming that user's second factor.
* Once only (RFC 6238 §5.2): the state keeps the last accepted time step, and a code is accepted
  only when the step it matches is greater. That rejects the same code twice and also a different,
  older code once a newer one was accepted.
* Rate limit: failed attempts are counted in a fixed window that opens at the first failure;
  :attr:`TwoFactorPolicy.attempts_max` failures in the window lock the user out for
  :attr:`TwoFactorPolicy.lockout_ms`. While locked, no code is checked at all.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeVar

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from giftflow.invariants import invariant

ISSUER_NAME: Final = "giftflow"
"""The issuer shown by authenticator apps."""

CODE_DIGITS: Final = 6
"""Digits of a code; anything but exactly this many ASCII digits is an invalid code."""

_CODE_PATTERN: Final = re.compile(r"[0-9]{6}")

NO_STEP: Final = -1
"""``last_step`` of a state that never accepted a code."""

STEP_S_MAX: Final = 120
"""The longest time step pyotp accepts (NIST SP 800-63B: a new code at least every two minutes)."""

_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_FORMAT_VERSION: Final = b"\x01"
"""First byte of a stored seed: the format (AES-256-GCM, 12-byte nonce, AAD with the user id)."""

_AAD_PREFIX: Final = b"giftflow:totp-seed:v1:"

UserId = int | str
"""A user id as the caller stores it; ``5`` and ``"5"`` are the same user for the cipher."""

FailureCode = Literal[
    "two_factor_required",
    "two_factor_not_enrolled",
    "two_factor_invalid",
    "two_factor_reused",
    "two_factor_locked",
]
"""Why a code was refused; the codes are stable, for HTTP responses and metrics."""

FAILURE_CODES: Final[tuple[FailureCode, ...]] = (
    "two_factor_required",
    "two_factor_not_enrolled",
    "two_factor_invalid",
    "two_factor_reused",
    "two_factor_locked",
)
"""Every failure code."""


class TwoFactorKeyError(Exception):
    """A stored seed could not be decrypted, or the seed key is unusable.

    This is never a user's mistake: the key in the settings is wrong or was rotated without
    re-encrypting, or a seed row was copied to another user or damaged.
    """


class SeedCipher:
    """Encrypts TOTP seeds with AES-256-GCM, binding each ciphertext to its user id.

    A stored seed is ``version (1 byte) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)``; the
    nonce is random for each encryption and the associated data names the user.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
            raise TwoFactorKeyError(
                f"the TOTP seed key must be {_KEY_BYTES} bytes (see SeedCipher.generate_key)")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SeedCipher(<key hidden>)"

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key for the settings."""
        return AESGCM.generate_key(bit_length=_KEY_BYTES * 8)

    def encrypt(self, seed_base32: str, user_id: UserId) -> bytes:
        """The stored form of ``seed_base32`` for ``user_id`` (different at every call)."""
        invariant(bool(seed_base32) and seed_base32.isascii(), "a TOTP seed is ASCII base32")
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, seed_base32.encode("ascii"), _associated_data(user_id))
        return _FORMAT_VERSION + nonce + sealed

    def decrypt(self, seed_encrypted: bytes, user_id: UserId) -> str:
        """The base32 seed stored in ``seed_encrypted`` for ``user_id``.

        Raises:
            TwoFactorKeyError: the data is not a seed of this format, was encrypted under another
                key or for another user, or was altered.
        """
        header = len(_FORMAT_VERSION) + _NONCE_BYTES
        if len(seed_encrypted) <= header + _TAG_BYTES or not seed_encrypted.startswith(
                _FORMAT_VERSION):
            raise TwoFactorKeyError("the stored TOTP seed is not in the expected format")
        nonce = seed_encrypted[len(_FORMAT_VERSION):header]
        try:
            plain = self._aead.decrypt(nonce, seed_encrypted[header:], _associated_data(user_id))
        except InvalidTag:
            raise TwoFactorKeyError(
                "the stored TOTP seed does not decrypt for this user with this key (wrong or "
                "rotated key, a row copied from another user, or damaged data)") from None
        try:
            return plain.decode("ascii")
        except UnicodeDecodeError:
            raise TwoFactorKeyError("the stored TOTP seed is not ASCII base32") from None


def _associated_data(user_id: UserId) -> bytes:
    """The AAD binding a ciphertext to one user."""
    invariant(not isinstance(user_id, bool), "a user id is an int or a str, never a bool")
    text = str(user_id)
    invariant(bool(text), "a user id is not empty")
    return _AAD_PREFIX + text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class TwoFactorPolicy:
    """Rate limit and clock tolerance of code checks."""

    attempts_max: int = 5
    """Failed attempts within one window that lock the user out."""
    attempt_window_ms: int = 900_000
    """How long failures are remembered, from the first failure of the window."""
    lockout_ms: int = 900_000
    """How long a lockout lasts."""
    valid_window_steps: int = 1
    """Steps either side of the current one that are accepted (clock drift, typing time)."""
    step_s: int = 30
    """The TOTP time step (RFC 6238's X)."""

    def __post_init__(self) -> None:
        invariant(self.attempts_max >= 1, "attempts_max is at least 1")
        invariant(self.attempt_window_ms > 0, "attempt_window_ms is positive")
        invariant(self.lockout_ms > 0, "lockout_ms is positive")
        invariant(self.valid_window_steps >= 0, "valid_window_steps is not negative")
        invariant(0 < self.step_s <= STEP_S_MAX, f"step_s is in 1..{STEP_S_MAX}")


DEFAULT_POLICY: Final = TwoFactorPolicy()
"""The SPEC's policy: 5 failures in 15 minutes lock for 15 minutes; ±1 step of 30 s."""


@dataclass(frozen=True, slots=True)
class TotpState:
    """One user's TOTP enrolment, as the caller stores it."""

    seed_encrypted: bytes
    """The seed, encrypted by :class:`SeedCipher` for this user."""
    confirmed: bool
    """Whether the user proved the enrolment with a first valid code."""
    last_step: int
    """The last accepted time step (:data:`NO_STEP` if none): no step up to it is accepted."""
    failures: int
    """Failed attempts in the current window."""
    failure_window_start_ms: int
    """When the current failure window opened (its first failure)."""
    locked_until_ms: int
    """No code is checked before this time (0 when never locked)."""

    def __post_init__(self) -> None:
        invariant(self.last_step >= NO_STEP, "last_step is -1 or a time step")
        invariant(self.failures >= 0, "failures is not negative")
        invariant(self.locked_until_ms >= 0, "locked_until_ms is not negative")


@dataclass(frozen=True, slots=True)
class TwoFactorOk:
    """A code was accepted; ``step`` is the time step it matched (now the state's last step)."""

    step: int
    ok: Literal[True] = True


@dataclass(frozen=True, slots=True)
class TwoFactorFailure:
    """A code was refused, with a stable code.

    ``retry_after_ms`` is how long until a code is checked again (for ``two_factor_locked``; 0
    otherwise), suitable for a ``Retry-After`` header.
    """

    code: FailureCode
    detail: str
    retry_after_ms: int = 0
    ok: Literal[False] = False


TwoFactorResult = TwoFactorOk | TwoFactorFailure
"""The outcome of :func:`verify` or :func:`confirm`."""

_State = TypeVar("_State", TotpState, None)


def enroll(
    user_id: UserId,
    cipher: SeedCipher,
    now_ms: int,
    *,
    account_name: str | None = None,
    policy: TwoFactorPolicy = DEFAULT_POLICY,
) -> tuple[TotpState, str, str]:
    """Start an enrolment: a new seed, unconfirmed until :func:`confirm` sees a valid code.

    Returns the state to store, the ``otpauth://`` provisioning URI for a QR code (labelled
    ``account_name``, the user id by default, issuer ``giftflow``) and the base32 seed for manual
    entry. The URI and the seed are shown to the user once and never stored in clear.
    """
    invariant(now_ms >= 0, "now_ms is not negative")
    seed = pyotp.random_base32()
    uri = pyotp.TOTP(seed, interval=policy.step_s).provisioning_uri(
        name=account_name if account_name is not None else str(user_id),
        issuer_name=ISSUER_NAME)
    state = TotpState(
        seed_encrypted=cipher.encrypt(seed, user_id),
        confirmed=False,
        last_step=NO_STEP,
        failures=0,
        failure_window_start_ms=now_ms,
        locked_until_ms=0,
    )
    return state, uri, seed


def confirm(
    state: TotpState,
    user_id: UserId,
    code: str | None,
    cipher: SeedCipher,
    now_ms: int,
    policy: TwoFactorPolicy = DEFAULT_POLICY,
) -> tuple[TotpState, TwoFactorResult]:
    """Confirm an enrolment with a first valid code (rate-limited like :func:`verify`).

    On success the state is confirmed and the code's step is used up, so the confirming code
    cannot authorise a payout afterwards. On an already confirmed state this is :func:`verify`.
    """
    return _check(state, user_id, code, cipher, now_ms, policy)


def verify(
    state: _State,
    user_id: UserId,
    code: str | None,
    cipher: SeedCipher,
    now_ms: int,
    policy: TwoFactorPolicy = DEFAULT_POLICY,
) -> tuple[_State, TwoFactorResult]:
    """Check a code for an action that needs the second factor; store the returned state.

    ``state`` is ``None`` when the user has no enrolment. The checks, in order:
    ``two_factor_not_enrolled`` (no confirmed enrolment), ``two_factor_locked`` (locked out; the
    code is not looked at), ``two_factor_required`` (no code given: ``None`` or empty), then the
    code itself: ``two_factor_invalid`` (not exactly 6 digits, or no match in the current step
    ±``valid_window_steps``) or ``two_factor_reused`` (it matches only steps already used up).
    Invalid and reused codes count as failures; the failure that reaches ``attempts_max`` locks
    the user out and is answered ``two_factor_locked``. An accepted code resets the failures.
    """
    if state is None or not state.confirmed:
        return state, TwoFactorFailure(
            "two_factor_not_enrolled", "two-factor authentication is not set up for this user")
    return _check(state, user_id, code, cipher, now_ms, policy)


def current_step(now_ms: int, policy: TwoFactorPolicy = DEFAULT_POLICY) -> int:
    """The TOTP time step of ``now_ms`` (RFC 6238's T: Unix seconds divided by the step)."""
    invariant(now_ms >= 0, "now_ms is not negative")
    return now_ms // 1000 // policy.step_s


def _check(
    state: TotpState,
    user_id: UserId,
    code: str | None,
    cipher: SeedCipher,
    now_ms: int,
    policy: TwoFactorPolicy,
) -> tuple[TotpState, TwoFactorResult]:
    """Lockout, presence, format and match of ``code``; the common part of verify and confirm."""
    step_now = current_step(now_ms, policy)
    if now_ms < state.locked_until_ms:
        return state, _locked(state, now_ms)
    if not code:
        return state, TwoFactorFailure("two_factor_required", "a two-factor code is required")
    if state.failures and now_ms - state.failure_window_start_ms >= policy.attempt_window_ms:
        state = replace(state, failures=0, failure_window_start_ms=now_ms)
    if _CODE_PATTERN.fullmatch(code) is None:
        return _fail(state, now_ms, policy, "two_factor_invalid",
                     f"a two-factor code is exactly {CODE_DIGITS} digits")

    totp = pyotp.TOTP(cipher.decrypt(state.seed_encrypted, user_id), interval=policy.step_s)
    matched = NO_STEP
    for step in range(max(0, step_now - policy.valid_window_steps),
                      step_now + policy.valid_window_steps + 1):
        # Every candidate is compared (no early exit), each in constant time. The highest
        # matching step wins, so that one code matching two steps by chance is still used once.
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    if matched == NO_STEP:
        return _fail(state, now_ms, policy, "two_factor_invalid", "the two-factor code is wrong")
    if matched <= state.last_step:
        return _fail(state, now_ms, policy, "two_factor_reused",
                     "this two-factor code, or a newer one, was already used; wait for the next")

    accepted = replace(state, confirmed=True, last_step=matched, failures=0,
                       failure_window_start_ms=now_ms)
    invariant(accepted.last_step > state.last_step, "accepted steps strictly increase")
    return accepted, TwoFactorOk(step=matched)


def _fail(
    state: TotpState, now_ms: int, policy: TwoFactorPolicy, code: FailureCode, detail: str,
) -> tuple[TotpState, TwoFactorResult]:
    """Count a failed attempt, locking the user out when it is one too many."""
    failures = state.failures + 1
    window_start_ms = state.failure_window_start_ms if state.failures else now_ms
    if failures >= policy.attempts_max:
        locked = replace(state, failures=0, failure_window_start_ms=now_ms,
                         locked_until_ms=now_ms + policy.lockout_ms)
        return locked, _locked(locked, now_ms, reason=detail)
    return replace(state, failures=failures, failure_window_start_ms=window_start_ms), (
        TwoFactorFailure(code, detail))


def _locked(state: TotpState, now_ms: int, reason: str = "") -> TwoFactorFailure:
    """The lockout answer, with the time until codes are checked again."""
    retry_after_ms = state.locked_until_ms - now_ms
    invariant(retry_after_ms > 0, "a lockout answer is given only while locked")
    prefix = f"{reason}; " if reason else ""
    return TwoFactorFailure(
        "two_factor_locked",
        f"{prefix}too many failed two-factor attempts; try again in {retry_after_ms} ms",
        retry_after_ms=retry_after_ms)
