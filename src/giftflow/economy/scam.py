"""Scam red flags in live chat (SPEC.md §2.4): a deterministic, explainable classifier.

:func:`classify_chat` flags chat lines that promise free coins, offer coin "generators" or
third-party resellers, or ask for passwords or "verification deposits". A flagged line is held on
the server for moderators and never reaches an overlay; the verdict says which rules fired and
on which fragments, so that a moderator sees why.

Matching works on a *skeleton* of the text (:func:`normalize_chat`): Unicode NFKC, casefold,
accents, zero-width and other format characters removed, Cyrillic and Greek look-alikes folded to
Latin, letters spelled out with spaces or dots joined ("f r e e"), leetspeak digits read as
letters inside words ("FR33 C0INS"), and every run of a repeated character collapsed to one
("frееееe" → "fre"). The keywords of the rules go through the same function, so each rule is
written in plain words and still matches the obfuscated forms.

A rule fires on a *combination*, never on one word: its slots must appear in order, with at most
``gap`` other words between neighbours (or glued together, as in a hashtag "#freecoins"). That is
what keeps "thanks for the coins!" and "I forgot my password lol" unflagged. The rules are data
(:data:`SCAM_RULES`); each one says why it exists.

Input is bounded: only the first :data:`CHAT_TEXT_CHARS_MAX` characters of a line are read, and
the skeleton is cut to the same length, so the cost of a verdict has a fixed ceiling.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

CHAT_TEXT_CHARS_MAX: Final = 2000
"""Characters of a chat line that are read; the rest is ignored (the skeleton is cut the same)."""

ReasonCode = Literal[
    "free_coins", "coin_generator", "reseller", "password_request", "verification_deposit",
]
"""Why a line is flagged; the codes are stable, for moderation tools and metrics."""

REASON_CODES: Final[tuple[ReasonCode, ...]] = (
    "free_coins", "coin_generator", "reseller", "password_request", "verification_deposit",
)
"""Every reason code, in the order a verdict lists them."""

RAW_PATTERN_PREFIX: Final = "re:"
"""A slot alternative starting with this is a regular expression on the skeleton, not words."""

_ZERO_WIDTH_CATEGORIES: Final = frozenset({"Cf", "Mn", "Me"})
"""Format characters (zero-width space/joiner, bidi marks, soft hyphen) and combining marks
(accents, strike-through overlays), all invisible or decorative: dropped from the skeleton."""

_LOOK_ALIKES: Final = str.maketrans({
    # Cyrillic letters that render like Latin ones (lower case: the text is casefolded first).
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ɡ": "g",
    # Greek letters that render like Latin ones.
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ϲ": "c",
})
"""Look-alike letters folded to the Latin letter they imitate ("frее" with Cyrillic е)."""

_LEET: Final = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t",
                              "@": "a"})
"""Digits (and ``@``) read as letters inside a word that also has letters ("c0ins", "fr33")."""

_SPELLED_OUT: Final = re.compile(r"(?<!\w)\w(?:[\s.\-_*·•|/\\]+\w(?!\w)){2,}")
"""Three or more single characters separated by spaces or punctuation: "f r e e", "c.o.i.n"."""

_SPELLED_OUT_SEPARATOR: Final = re.compile(r"[\s.\-_*·•|/\\]+")
_WHITESPACE: Final = re.compile(r"\s+")
_WORD_WITH_LETTERS: Final = re.compile(r"[\w@]*[^\W\d_][\w@]*")
_NUMBER_PREFIX: Final = re.compile(r"\d{2,}(?=[^\W\d_]+$)")
"""A quantity glued to a word ("100coins", "10k"): kept as digits, not read as leetspeak."""
_REPEATS: Final = re.compile(r"(.)\1+")


def _unleet(match: re.Match[str]) -> str:
    word = match.group(0)
    number = _NUMBER_PREFIX.match(word)
    kept = number.group(0) if number else ""
    return kept + word[len(kept):].translate(_LEET)


def normalize_chat(text: str) -> str:
    """The skeleton of a chat line that the rules match: obfuscation undone, length bounded.

    The steps, in order: cut to :data:`CHAT_TEXT_CHARS_MAX`; NFKC; casefold; decompose and drop
    format characters and combining marks; fold Cyrillic/Greek look-alikes to Latin; collapse
    whitespace; join spelled-out letters; read leetspeak digits inside words; collapse runs of a
    repeated character to one; cut again to :data:`CHAT_TEXT_CHARS_MAX` (NFKC can lengthen).
    """
    text = unicodedata.normalize("NFKC", text[:CHAT_TEXT_CHARS_MAX]).casefold()
    text = "".join(char for char in unicodedata.normalize("NFKD", text)
                   if unicodedata.category(char) not in _ZERO_WIDTH_CATEGORIES)
    text = _WHITESPACE.sub(" ", text.translate(_LOOK_ALIKES)).strip()
    text = _SPELLED_OUT.sub(lambda m: _SPELLED_OUT_SEPARATOR.sub("", m.group(0)), text)
    text = _WORD_WITH_LETTERS.sub(_unleet, text)
    return _REPEATS.sub(r"\1", text)[:CHAT_TEXT_CHARS_MAX]


@dataclass(frozen=True, slots=True)
class ScamRule:
    """One red flag: ``slots`` that must appear in order, close together, in a chat line.

    Each slot is a tuple of alternatives: plain words or phrases (normalized like the chat, so
    written plainly), or a regular expression on the skeleton when prefixed with ``re:``. At most
    ``gap`` words may stand between neighbouring slots, or none when they are glued together.
    ``not_after`` lists words that void a match when they come right before the first slot
    ("feel free"), ``not_before`` words that void it right after the first slot ("free to").
    With ``cross_clauses`` false, a gap may not contain ``.``, ``!``, ``?``, ``,``, ``;`` or
    ``:``.
    """

    name: str
    reason: ReasonCode
    why: str
    slots: tuple[tuple[str, ...], ...]
    gap: int = 2
    not_after: tuple[str, ...] = ()
    not_before: tuple[str, ...] = ()
    cross_clauses: bool = True


@dataclass(frozen=True, slots=True)
class ScamMatch:
    """A rule that fired, and the fragment of the skeleton it fired on (for moderators)."""

    reason: ReasonCode
    rule: str
    fragment: str


@dataclass(frozen=True, slots=True)
class ScamVerdict:
    """The classifier's answer for one chat line.

    ``flagged`` is true exactly when ``reasons`` is not empty. ``reasons`` holds each reason code
    once, in :data:`REASON_CODES` order; ``matches`` every rule that fired, in rule order.
    """

    flagged: bool
    reasons: tuple[ReasonCode, ...]
    matches: tuple[ScamMatch, ...]

    def __post_init__(self) -> None:
        if self.flagged != bool(self.reasons):
            raise ValueError("a verdict is flagged exactly when it has reasons")
        if set(self.reasons) != {match.reason for match in self.matches}:
            raise ValueError("a verdict's reasons are the reasons of its matches")


# Word lists shared by the rules. Plain words: normalize_chat turns them into skeletons.
_CURRENCY: Final = (
    "coin", "coins", "tiktok coins", "diamond", "diamonds", "gifts", "gems",
    "monedas", "moedas", "jetons", "münzen", "jeton", "elmas", "монеты", "монет", "алмазы",
)
_FREE: Final = ("free", "gratis", "grátis", "gratuit", "gratuits", "kostenlos", "bedava",
                "ücretsiz", "бесплатно", "бесплатные")
_GENERATOR: Final = ("generator", "generators", "gen", "hack", "hacks", "glitch", "glitches",
                     "cheat", "cheats", "exploit", "adder", "mod apk", "unlimited", "infinite")
_CHEAP: Final = ("cheap", "cheaper", "cheapest", "discount", "discounted", "half price",
                 "wholesale", "barato", "baratas", "baratos", "ucuz", "дешево")
_SELL: Final = ("sell", "selling", "seller", "sells", "resell", "reselling", "reseller",
                "vendo", "vendemos", "satılık", "продаю")
_RECHARGE: Final = ("recharge", "recharging", "top up", "topup", "refill")
_CONTACT: Final = ("dm me", "dm us", "pm me", "inbox me", "message me", "text me",
                   "contact me", "whatsapp", "telegram", "hmu")
_LINK: Final = (
    # A URL or a bare domain. Written for the skeleton: "http" has become "htp", "www" "w".
    r"re:htps?:/*[^\s]+",
    r"re:w\.[^\s]+",
    (r"re:[a-z0-9][a-z0-9-]*\.(?:com|net|org|shop|store|xyz|io|me|gg|site|online|top|link|ly"
     r"|cc|biz|info|pro|club|vip|live|ru|tk|ml|ga|sbs|ap)(?!\w)"),
    "link in bio", "link in my bio", "check my bio", "check bio", "bio link",
    "link in profile", "link in my profile",
)
_ASK: Final = ("send", "give", "tell", "share", "dm", "pm", "type", "write", "drop", "need",
               "what", "whats", "what is", "provide", "enter", "post", "text", "inbox",
               "manda", "mande", "envia", "envie", "dame", "gib", "envoie", "donne",
               "скинь", "отправь", "dime", "passa")
_YOUR: Final = ("your", "ur", "yr", "yo", "ya", "tu", "sua", "seu", "dein", "deine", "ton",
                "votre", "твой")
_CREDENTIAL: Final = (
    "password", "passwords", "passwd", "passcode", "pw", "pwd", "pin", "pin code", "login",
    "log in", "login details", "login info", "login code", "credentials", "account password",
    "email and password", "email password", "verification code", "security code", "sms code",
    "otp", "2fa", "2fa code", "contraseña", "senha", "passwort", "mot de passe", "пароль",
)
_ONE_TIME_CODE: Final = ("verification code", "verify code", "login code", "sms code",
                         "security code", "otp", "one time code", "2fa code", "6 digit code",
                         "authentication code", "auth code")
_VERIFY: Final = ("verification", "verify", "verifying", "activation", "activate",
                  "account activation", "validation", "validate", "unlock", "unlocking")
_DEPOSIT: Final = ("deposit", "deposits", "fee", "fees", "charge")
_PAY: Final = ("pay", "paying", "send", "sending", "transfer", "deposit", "wire")
_TO_RELEASE: Final = ("to unlock", "to release", "to verify", "to activate", "to withdraw",
                      "to claim", "to receive", "for verification", "for activation")
_PAYOUT: Final = ("payout", "payouts", "withdrawal", "withdrawals", "earnings", "funds",
                  "balance", "wallet", "account", "money", "cash", "winnings")
_NEGATION: Final = ("can t", "cant", "cannot", "don t", "dont", "not", "never", "no")

SCAM_RULES: Final[tuple[ScamRule, ...]] = (
    ScamRule(
        "free_then_currency", "free_coins",
        "A promise of coins, diamonds or gifts at no cost is the classic bait; the idioms "
        "'feel free to …' and 'free to …' are excluded because they promise nothing, and so "
        "is the game 'Free Fire' (its 'Free Fire diamonds' are ordinary gaming talk). Within "
        "one clause, so 'I'm free, send gifts later' stays clean.",
        (_FREE, _CURRENCY), gap=2, not_after=("feel",), not_before=("to", "of", "from", "fire"),
        cross_clauses=False),
    ScamRule(
        "currency_for_free", "free_coins",
        "The same promise word-order reversed ('coins for free', 'monedas gratis'), glued "
        "and within one sentence, so 'thanks for the coins! free stream later' and 'coins "
        "and free hugs' stay clean.",
        (_CURRENCY, ("for free", *_FREE)), gap=0, cross_clauses=False),
    ScamRule(
        "generator_then_currency", "coin_generator",
        "Coins cannot be generated, hacked or glitched into an account: any offer of a "
        "'generator', 'hack' or 'unlimited' coins is a lure for logins or malware.",
        (_GENERATOR, _CURRENCY), gap=2),
    ScamRule(
        "currency_then_generator", "coin_generator",
        "The usual spelling of the lure: 'coin generator', 'diamonds hack', 'coins glitch'.",
        (_CURRENCY, _GENERATOR), gap=1),
    ScamRule(
        "cheap_currency", "reseller",
        "Coins sold below the store price come from stolen cards or accounts; 'cheap coins' "
        "is the pitch of a third-party reseller.",
        (_CHEAP, _CURRENCY), gap=2),
    ScamRule(
        "currency_cheaper", "reseller",
        "The reseller pitch reversed, glued to the coins ('coins cheaper than the app'), so "
        "that 'coins were cheaper last year' is not flagged.",
        (_CURRENCY, ("cheaper", "cheapest", "for cheap", "for less", "at a discount",
                     "discounted", "half price", "wholesale")), gap=0),
    ScamRule(
        "sell_currency", "reseller",
        "Only the platform sells coins; anyone else 'selling coins' is a third-party "
        "reseller. A negation right before ('you can't sell coins') is not an offer.",
        (_SELL, _CURRENCY), gap=2, not_after=_NEGATION),
    ScamRule(
        "currency_for_sale", "reseller",
        "The offer as a listing: 'coins for sale'.",
        (_CURRENCY, ("for sale", "on sale", "available")), gap=1),
    ScamRule(
        "buy_currency_from_me", "reseller",
        "An invitation to buy coins from a person rather than the store; the verb is "
        "required so that gifting talk ('some coins from me!') is not flagged.",
        (("buy", "get", "order", "purchase", "grab"), _CURRENCY,
         ("from me", "from us", "through me", "via me", "from my shop", "from my store",
          "from my site")), gap=2),
    ScamRule(
        "recharge_cheaper", "reseller",
        "Discounted recharges ('recharge cheaper', 'top up at half price') are resold coins.",
        (_RECHARGE, _CHEAP), gap=2),
    ScamRule(
        "cheap_recharge", "reseller",
        "The same offer with the adjective first: 'cheap recharge', 'cheapest top up'.",
        (_CHEAP, _RECHARGE), gap=1),
    ScamRule(
        "contact_for_currency", "reseller",
        "A DM offer: 'dm me for coins', 'message me on telegram for cheap coins'. The 'for' "
        "(or 'to buy/get') is required, so 'dm me after the coins goal' is not flagged.",
        (_CONTACT, ("for", "to buy", "to get", "to order"), _CURRENCY), gap=2),
    ScamRule(
        "want_currency_contact", "reseller",
        "A DM offer as a question: 'need coins? dm me', 'want diamonds, whatsapp'.",
        (("want", "need", "buy"), _CURRENCY, _CONTACT), gap=2),
    ScamRule(
        "link_with_currency", "reseller",
        "A link or 'link in bio' next to coins points viewers to a third-party shop or a "
        "phishing page; legitimate purchases never leave the app.",
        (_LINK, _CURRENCY), gap=4),
    ScamRule(
        "currency_with_link", "reseller",
        "The same, coins first: 'cheap coins at c0inz.shop', 'free diamonds link in bio'.",
        (_CURRENCY, _LINK), gap=4),
    ScamRule(
        "ask_your_credential", "password_request",
        "Nobody legitimate asks for a password, login or one-time code in chat; the "
        "possessive ('your') is required, so 'I forgot my password' is not flagged.",
        (_ASK, _YOUR, _CREDENTIAL), gap=2),
    ScamRule(
        "ask_one_time_code", "password_request",
        "Asking for the verification/SMS code someone just received takes over the account "
        "('send me the 6 digit code').",
        (_ASK, _ONE_TIME_CODE), gap=3),
    ScamRule(
        "your_credential_please", "password_request",
        "The request without a verb: 'your password pls', 'ur login in dm'.",
        (_YOUR, _CREDENTIAL, ("please", "pls", "plz", "in dm", "to me", "to my dm",
                              "in my dm", "in private", "in inbox")), gap=1),
    ScamRule(
        "verification_deposit", "verification_deposit",
        "A 'verification deposit/fee' or 'activation fee' is advance-fee fraud: nothing on "
        "the platform is verified or unlocked by paying a person.",
        (_VERIFY, _DEPOSIT), gap=2),
    ScamRule(
        "deposit_to_verify", "verification_deposit",
        "The same demand with the payment first: 'deposit to verify', 'fee for activation'.",
        (_DEPOSIT, _VERIFY), gap=2),
    ScamRule(
        "pay_to_unlock_payout", "verification_deposit",
        "'Pay to unlock your payout', 'send $10 to verify your account': money demanded "
        "to release money. The target (payout, account, balance…) is required, so 'send "
        "roses to unlock the next goal' is not flagged.",
        (_PAY, _TO_RELEASE, _PAYOUT), gap=2),
    ScamRule(
        "deposit_to_withdraw", "verification_deposit",
        "A deposit demanded before a withdrawal, payout or prize can be claimed.",
        (("deposit",), ("withdraw", "withdrawal", "claim", "release", "receive", "payout",
                        "winnings", "prize")), gap=2),
)
"""The red-flag rules, grouped by reason code; each rule's ``why`` says why it exists."""


def _alternatives(slot: tuple[str, ...]) -> str:
    """One slot as a regex alternation: raw patterns as given, words as escaped skeletons."""
    patterns: list[str] = []
    for alternative in slot:
        if alternative.startswith(RAW_PATTERN_PREFIX):
            patterns.append(alternative.removeprefix(RAW_PATTERN_PREFIX))
        else:
            words = normalize_chat(alternative).split(" ")
            patterns.append(r"\W?".join(re.escape(word) for word in words))
    return "(?:" + "|".join(sorted(set(patterns), key=lambda p: (-len(p), p))) + ")"


def _fixed_width(words: str) -> str:
    """Words as a fixed-width pattern (for a look-behind): any one non-word character between."""
    return r"\W".join(re.escape(word) for word in normalize_chat(words).split(" "))


@functools.cache
def _compile(rule: ScamRule) -> re.Pattern[str]:
    """The pattern of ``rule``; each gap is up to ``gap`` words, or nothing (glued slots)."""
    nonword = r"\W" if rule.cross_clauses else r"[^\w.!?,;:]"
    gap = rf"(?:(?!\w){nonword}*(?:\w+{nonword}+){{0,{rule.gap}}}?|)"
    guards_before = "".join(rf"(?<!(?<!\w){_fixed_width(word)}\W)" for word in rule.not_after)
    guards_after = "".join(rf"(?!\W{_fixed_width(word)}(?!\w))" for word in rule.not_before)
    first, *rest = (_alternatives(slot) for slot in rule.slots)
    body = guards_before + first + guards_after + "".join(gap + slot for slot in rest)
    return re.compile(rf"(?<!\w){body}(?!\w)")


def classify_chat(text: str, rules: tuple[ScamRule, ...] = SCAM_RULES) -> ScamVerdict:
    """Whether a chat line is a scam red flag (SPEC.md §2.4), with the rules and fragments.

    Deterministic and local: no network, no model. Only the first :data:`CHAT_TEXT_CHARS_MAX`
    characters are read.
    """
    skeleton = normalize_chat(text)
    matches: list[ScamMatch] = []
    for rule in rules:
        found = _compile(rule).search(skeleton)
        if found is not None:
            matches.append(ScamMatch(reason=rule.reason, rule=rule.name,
                                     fragment=found.group(0)))
    fired = {match.reason for match in matches}
    reasons = tuple(code for code in REASON_CODES if code in fired)
    return ScamVerdict(flagged=bool(reasons), reasons=reasons, matches=tuple(matches))
