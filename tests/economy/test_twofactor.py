"""Two-factor authentication (TOTP): enrolment, once-only codes, the rate limit, seed encryption."""

from __future__ import annotations

import base64

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from giftflow.economy.twofactor import (
    FAILURE_CODES,
    NO_STEP,
    SeedCipher,
    TotpState,
    TwoFactorFailure,
    TwoFactorKeyError,
    TwoFactorOk,
    TwoFactorPolicy,
    confirm,
    current_step,
    enroll,
    verify,
)
from giftflow.invariants import InvariantViolation

KEY = bytes(range(32))
CIPHER = SeedCipher(KEY)
USER = 42
POLICY = TwoFactorPolicy()
T0_MS = 1_700_000_010_000
"""A time at the very start of a 30-second step."""
STEP_MS = POLICY.step_s * 1000
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def code_at(seed: str, step: int) -> str:
    """The code of ``seed`` for time step ``step``, computed by pyotp from a time."""
    return pyotp.TOTP(seed).at(step * POLICY.step_s)


def confirmed_state(seed: str = SEED, user_id: int | str = USER) -> TotpState:
    """A confirmed enrolment of ``seed`` that never accepted a code."""
    return TotpState(seed_encrypted=CIPHER.encrypt(seed, user_id), confirmed=True,
                     last_step=NO_STEP, failures=0, failure_window_start_ms=0, locked_until_ms=0)


def check(state: TotpState, code: str | None, now_ms: int,
          policy: TwoFactorPolicy = POLICY) -> tuple[TotpState, TwoFactorOk | TwoFactorFailure]:
    """``verify`` for :data:`USER` with :data:`CIPHER`."""
    return verify(state, USER, code, CIPHER, now_ms, policy)


def failure_code(result: TwoFactorOk | TwoFactorFailure) -> str:
    """The failure code of ``result`` ("ok" when it is a success)."""
    return "ok" if isinstance(result, TwoFactorOk) else result.code


def test_enroll_then_confirm() -> None:
    """An enrolment is unusable until confirmed by a valid code, whose step is then used up."""
    state, uri, seed = enroll(USER, CIPHER, T0_MS, account_name="ana@example.com")
    assert not state.confirmed and state.last_step == NO_STEP and state.failures == 0
    assert uri.startswith("otpauth://totp/") and f"secret={seed}" in uri
    assert "issuer=giftflow" in uri and "ana%40example.com" in uri
    step = current_step(T0_MS)
    code = code_at(seed, step)

    _, early = verify(state, USER, code, CIPHER, T0_MS)
    assert failure_code(early) == "two_factor_not_enrolled"
    state, wrong = confirm(state, USER, "000000" if code != "000000" else "111111", CIPHER, T0_MS)
    assert failure_code(wrong) == "two_factor_invalid" and not state.confirmed
    state, result = confirm(state, USER, code, CIPHER, T0_MS)
    assert result == TwoFactorOk(step=step)
    assert state.confirmed and state.last_step == step and state.failures == 0
    _, again = verify(state, USER, code, CIPHER, T0_MS + 1000)
    assert failure_code(again) == "two_factor_reused"


def test_enroll_labels_the_uri_with_the_user_id_by_default() -> None:
    """Without an account name, the provisioning URI is labelled with the user id."""
    _, uri, _ = enroll(USER, CIPHER, T0_MS)
    assert uri.startswith(f"otpauth://totp/giftflow:{USER}?")


def test_verify_without_enrolment() -> None:
    """A user with no enrolment (state None) gets two_factor_not_enrolled and no state."""
    state, result = verify(None, USER, "123456", CIPHER, T0_MS)
    assert state is None and failure_code(result) == "two_factor_not_enrolled"


def test_valid_code_accepted() -> None:
    """The code of the current step is accepted and its step recorded as the last step."""
    step = current_step(T0_MS)
    state, result = check(confirmed_state(), code_at(SEED, step), T0_MS + 5000)
    assert result == TwoFactorOk(step=step) and state.last_step == step


def test_codes_of_neighbouring_steps_are_accepted_but_not_further() -> None:
    """Codes of the current step ±1 are accepted; a code two steps away is invalid."""
    step = current_step(T0_MS)
    for offset in (-1, 1):
        _, result = check(confirmed_state(), code_at(SEED, step + offset), T0_MS)
        assert result == TwoFactorOk(step=step + offset)
    for offset in (-2, 2):
        _, result = check(confirmed_state(), code_at(SEED, step + offset), T0_MS)
        assert failure_code(result) == "two_factor_invalid"


def test_same_code_again_is_reused() -> None:
    """An accepted code is refused as two_factor_reused when sent again, even a step later."""
    step = current_step(T0_MS)
    code = code_at(SEED, step)
    state, first = check(confirmed_state(), code, T0_MS)
    assert first.ok
    state, second = check(state, code, T0_MS + 2000)
    assert failure_code(second) == "two_factor_reused"
    _, later = check(state, code, T0_MS + STEP_MS)
    assert failure_code(later) == "two_factor_reused"


def test_older_valid_code_after_a_newer_one_is_reused() -> None:
    """After the next step's code is accepted, the (different) current step's code is refused."""
    step = current_step(T0_MS)
    state, newer = check(confirmed_state(), code_at(SEED, step + 1), T0_MS)
    assert newer == TwoFactorOk(step=step + 1)
    older = code_at(SEED, step)
    assert older != code_at(SEED, step + 1)
    state, result = check(state, older, T0_MS + 1000)
    assert failure_code(result) == "two_factor_reused" and state.last_step == step + 1
    _, following = check(state, code_at(SEED, step + 2), T0_MS + STEP_MS)
    assert following == TwoFactorOk(step=step + 2)


def wrong_code(step: int) -> str:
    """A well-formed code that matches none of the steps around ``step``."""
    valid = {code_at(SEED, step + offset) for offset in range(-3, 4)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)


def test_failures_lock_out_and_the_lock_ends() -> None:
    """Wrong codes are counted; the 5th locks for lockout_ms (even a right code is refused),
    and after the lockout a right code is accepted.
    """
    step = current_step(T0_MS)
    state = confirmed_state()
    for attempt in range(1, 5):
        state, result = check(state, wrong_code(step), T0_MS + attempt)
        assert failure_code(result) == "two_factor_invalid" and state.failures == attempt
    state, fifth = check(state, wrong_code(step), T0_MS + 5)
    assert isinstance(fifth, TwoFactorFailure) and fifth.code == "two_factor_locked"
    assert fifth.retry_after_ms == POLICY.lockout_ms
    assert state.locked_until_ms == T0_MS + 5 + POLICY.lockout_ms

    during = T0_MS + 5 + POLICY.lockout_ms - 1
    locked_state, locked = check(state, code_at(SEED, current_step(during)), during)
    assert isinstance(locked, TwoFactorFailure) and locked.code == "two_factor_locked"
    assert locked.retry_after_ms == 1 and locked_state == state

    after = T0_MS + 5 + POLICY.lockout_ms
    state, result = check(state, code_at(SEED, current_step(after)), after)
    assert result == TwoFactorOk(step=current_step(after)) and state.failures == 0


def test_failures_are_forgotten_after_the_window() -> None:
    """Failures older than attempt_window_ms do not count towards a lockout."""
    step = current_step(T0_MS)
    state = confirmed_state()
    for attempt in range(4):
        state, _ = check(state, wrong_code(step), T0_MS + attempt)
    later = T0_MS + POLICY.attempt_window_ms
    state, result = check(state, wrong_code(current_step(later)), later)
    assert failure_code(result) == "two_factor_invalid" and state.failures == 1
    assert state.failure_window_start_ms == later


def test_reused_codes_count_as_failures() -> None:
    """Replaying an accepted code is a failed attempt for the rate limit."""
    step = current_step(T0_MS)
    code = code_at(SEED, step)
    state, _ = check(confirmed_state(), code, T0_MS)
    for attempt in range(1, 5):
        state, result = check(state, code, T0_MS + attempt)
        assert failure_code(result) == "two_factor_reused" and state.failures == attempt
    _, result = check(state, code, T0_MS + 5)
    assert failure_code(result) == "two_factor_locked"


def test_successful_code_resets_failures() -> None:
    """An accepted code clears the failures counted so far."""
    step = current_step(T0_MS)
    state = confirmed_state()
    for attempt in range(4):
        state, _ = check(state, wrong_code(step), T0_MS + attempt)
    assert state.failures == 4
    state, result = check(state, code_at(SEED, step), T0_MS + 10)
    assert result.ok and state.failures == 0
    state, result = check(state, wrong_code(step + 1), T0_MS + STEP_MS)
    assert failure_code(result) == "two_factor_invalid" and state.failures == 1


@pytest.mark.parametrize("code", [
    "12345", "1234567", "abcdef", "12345a", " 123456", "123456 ", "123 456", "123456\n",
    "١٢٣٤٥٦", "１２３４５６",
])
def test_malformed_codes_are_invalid_failures(code: str) -> None:
    """Anything but exactly 6 ASCII digits is two_factor_invalid and counts as a failure."""
    state, result = check(confirmed_state(), code, T0_MS)
    assert failure_code(result) == "two_factor_invalid" and state.failures == 1


@pytest.mark.parametrize("code", [None, ""])
def test_missing_code_is_required_and_not_a_failure(code: str | None) -> None:
    """No code (None or empty) is two_factor_required and leaves the state unchanged."""
    state = confirmed_state()
    after, result = check(state, code, T0_MS)
    assert failure_code(result) == "two_factor_required" and after == state


def test_failure_codes_are_the_stable_set() -> None:
    """The failure codes are exactly the five documented ones."""
    assert set(FAILURE_CODES) == {
        "two_factor_required", "two_factor_not_enrolled", "two_factor_invalid",
        "two_factor_reused", "two_factor_locked"}


def test_seed_ciphertext_does_not_contain_the_seed() -> None:
    """The stored seed holds neither the base32 text nor the raw secret, and differs each time."""
    first = CIPHER.encrypt(SEED, USER)
    second = CIPHER.encrypt(SEED, USER)
    assert first != second
    for blob in (first, second):
        assert SEED.encode() not in blob and base64.b32decode(SEED) not in blob
        assert CIPHER.decrypt(blob, USER) == SEED


def test_decrypt_with_another_user_or_key_fails() -> None:
    """A seed decrypts only for its user with its key; otherwise TwoFactorKeyError."""
    blob = CIPHER.encrypt(SEED, USER)
    assert CIPHER.decrypt(blob, str(USER)) == SEED
    with pytest.raises(TwoFactorKeyError):
        CIPHER.decrypt(blob, USER + 1)
    with pytest.raises(TwoFactorKeyError):
        SeedCipher(SeedCipher.generate_key()).decrypt(blob, USER)
    with pytest.raises(TwoFactorKeyError):
        verify(confirmed_state(), USER + 1, "123456", CIPHER, T0_MS)


@pytest.mark.parametrize("blob", [
    b"", b"\x01", b"\x02" + bytes(60), b"\x01" + bytes(28),
])
def test_decrypt_of_damaged_data_fails(blob: bytes) -> None:
    """Empty, truncated, unknown-version or forged data raises TwoFactorKeyError."""
    with pytest.raises(TwoFactorKeyError):
        CIPHER.decrypt(blob, USER)


def test_flipped_ciphertext_bit_fails() -> None:
    """Altering one bit of a stored seed makes it fail to decrypt."""
    blob = bytearray(CIPHER.encrypt(SEED, USER))
    blob[-1] ^= 1
    with pytest.raises(TwoFactorKeyError):
        CIPHER.decrypt(bytes(blob), USER)


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(33)])
def test_cipher_rejects_keys_of_the_wrong_length(key: bytes) -> None:
    """Only a 32-byte key is accepted."""
    with pytest.raises(TwoFactorKeyError):
        SeedCipher(key)


def test_generated_keys_are_random_and_the_key_is_not_shown() -> None:
    """generate_key makes distinct 32-byte keys; a cipher's repr does not show its key."""
    first, second = SeedCipher.generate_key(), SeedCipher.generate_key()
    assert len(first) == 32 and first != second
    assert repr(CIPHER) == "SeedCipher(<key hidden>)"


@pytest.mark.parametrize("field_value", [
    {"attempts_max": 0}, {"attempt_window_ms": 0}, {"lockout_ms": -1},
    {"valid_window_steps": -1}, {"step_s": 0}, {"step_s": 121},
])
def test_policy_limits_are_checked(field_value: dict[str, int]) -> None:
    """A policy with a non-positive limit or an out-of-range step is a bug."""
    with pytest.raises(InvariantViolation):
        TwoFactorPolicy(**field_value)


ATTEMPT = st.tuples(
    st.integers(min_value=-90_000, max_value=120_000),
    st.one_of(
        st.tuples(st.just("step"), st.integers(min_value=-2, max_value=2)),
        st.tuples(st.just("random"), st.integers(min_value=0, max_value=999_999)),
        st.tuples(st.just("replay"), st.integers(min_value=0, max_value=10)),
    ),
)


@settings(max_examples=200, deadline=None)
@given(attempts=st.lists(ATTEMPT, max_size=40), attempts_max=st.integers(1, 6),
       lockout_ms=st.integers(1, 200_000))
def test_no_step_is_accepted_twice(attempts: list[tuple[int, tuple[str, int]]],
                                   attempts_max: int, lockout_ms: int) -> None:
    """For any sequence of (time, code) attempts, accepted steps strictly increase (so none is
    accepted twice), an accepted code is that step's code, and nothing is accepted while locked.
    """
    policy = TwoFactorPolicy(attempts_max=attempts_max, lockout_ms=lockout_ms,
                             attempt_window_ms=300_000)
    state = confirmed_state()
    now_ms = T0_MS
    accepted: list[int] = []
    sent: list[str] = []
    for delta_ms, (kind, value) in attempts:
        now_ms = max(0, now_ms + delta_ms)
        if kind == "step":
            code = code_at(SEED, current_step(now_ms, policy) + value)
        elif kind == "random":
            code = f"{value:06d}"
        else:
            code = sent[-1 - value % len(sent)] if sent else "000000"
        sent.append(code)
        before = state
        state, result = verify(state, USER, code, CIPHER, now_ms, policy)
        if isinstance(result, TwoFactorOk):
            assert now_ms >= before.locked_until_ms
            assert not accepted or result.step > accepted[-1]
            assert state.last_step == result.step and code == code_at(SEED, result.step)
            assert abs(result.step - current_step(now_ms, policy)) <= policy.valid_window_steps
            accepted.append(result.step)
        else:
            assert state.last_step == before.last_step
    assert len(set(accepted)) == len(accepted)


def test_int_and_str_user_ids_are_the_same_user() -> None:
    """The cipher binds to the user id's text, so 42 and "42" name the same user."""
    state = confirmed_state(user_id="42")
    _, result = verify(state, 42, code_at(SEED, current_step(T0_MS)), CIPHER, T0_MS)
    assert result.ok
