"""Refunds and chargebacks: taking back a purchase in SPEC.md §2.1's order, and won disputes.

A refund (``amount_refunded`` is cumulative) reverses that share of the lot's coins, rounded down;
a dispute reverses what it disputes. :func:`giftflow.economy.lots.plan_reversal` decides what comes
back from where: the lot's unspent coins from the wallet, then the diamonds its spent coins earned
from creators' held balances, then the rest under the buyer's region's policy (``debt``: the buyer
owes the coins; ``absorb``: chargeback loss). The plan is stored with the reversal, so that a won
dispute restores exactly what was taken.

On the cash side the money goes back to the provider, and the tax and app-store commission that
the sale booked come back pro rata (rounded down); card fees are not returned by processors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson

from giftflow.economy import accounts as acc
from giftflow.economy import codes
from giftflow.economy.lots import ReversalPlan, SpentPiece, plan_reversal
from giftflow.economy.ports import EconomyTx, Row
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.invariants import invariant
from giftflow.ledger import Applied, Failure, Operation, Result, TransferRequest

if TYPE_CHECKING:
    from giftflow.economy.service import EconomyService

WAITING_FOR_PURCHASE: Final = codes.WAITING_FOR_PURCHASE


def handle_reversal_event(service: EconomyService, event: PaymentEvent) -> Result:
    """Apply a refund or dispute notification (see the module's description)."""
    result = service.run(lambda tx: _handle(service, tx, event))
    if isinstance(result, Failure):
        return result
    return result


def _key(event: PaymentEvent) -> str:
    if event.kind is PaymentEventKind.REFUNDED:
        return f"refund:{event.payment_ref}:{event.amount_minor}"
    return f"dispute:{event.payment_ref}:{event.kind.value}"


def _handle(service: EconomyService, tx: EconomyTx, event: PaymentEvent) -> Result:
    scope, key = f"provider:{event.provider}", _key(event)
    fields = {"kind": event.kind.value, "payment_ref": event.payment_ref,
              "amount_minor": event.amount_minor, "currency": event.currency}
    if tx.key_states([(scope, key)])[(scope, key)] != "new":
        return service.single(tx, Operation(scope, key, "reversal", fields, ()))
    orders = tx.rows("orders", {"provider": event.provider, "payment_ref": event.payment_ref},
                     lock=True)
    if not orders or orders[0]["status"] != "paid":
        service.record_event(tx, event, "waiting")
        tx.commit()
        return Failure(WAITING_FOR_PURCHASE,
                       f"payment {event.payment_ref} is not credited yet; this waits for it")
    order = orders[0]
    tx.rows("users", {"id": order["buyer_id"]}, lock=True)
    work = _Reversal(service, tx, order, event)
    operation = work.operation(scope, key, fields)
    result = service.single(tx, operation)
    service.record_event(tx, event, "done")
    if isinstance(result, Applied):
        work.stage()
        if not result.replayed and event.kind in (PaymentEventKind.REFUNDED,
                                                  PaymentEventKind.DISPUTE_OPENED):
            service.emit(tx, "purchase_refunded", order["buyer_id"], {
                "order_id": order["id"], "cause": event.kind.value,
                "amount_minor": event.amount_minor, "currency": event.currency,
                "coins": work.response.get("coins", 0)})
    tx.commit()
    return result


class _Reversal:
    """One refund or dispute of one order: its plan, its legs and its writes."""

    def __init__(self, service: EconomyService, tx: EconomyTx, order: Row,
                 event: PaymentEvent) -> None:
        self.service = service
        self.tx = tx
        self.order = order
        self.event = event
        self.lot = tx.rows("lots", {"id": order["id"]}, lock=True)[0]
        self.region = service.economy.region(order["region"])
        self.stages: list[Any] = []
        self.response: dict[str, Any] = {}

    def operation(self, scope: str, key: str, fields: dict[str, Any]) -> Operation:
        event, order = self.event, self.order
        if event.currency != order["currency"]:
            return Operation(scope, key, "reversal", fields, (), refusal=(
                codes.PAYMENT_MISMATCH, f"{event.currency} for an order in {order['currency']}"))
        legs: list[TransferRequest] = []
        if event.kind is PaymentEventKind.REFUNDED:
            legs = self._refund()
        elif event.kind is PaymentEventKind.DISPUTE_OPENED:
            legs = self._dispute()
        elif event.kind is PaymentEventKind.DISPUTE_WON:
            legs = self._won()
        else:
            self.response = {"order_id": order["id"], "dispute": "lost"}
        response = {"order_id": order["id"], **self.response}
        return Operation(scope, key, "reversal", fields, legs,
                         actor=f"provider:{event.provider}", respond=lambda _: response)

    # -- what each notification takes back -----------------------------------------------------

    def _refund(self) -> list[TransferRequest]:
        order, price, lot = self.order, self.order["price_minor"], self.lot
        # Money a chargeback already took back cannot be refunded again.
        refunded = min(self.event.amount_minor, price - order["disputed_minor"])
        before = order["refunded_minor"]
        if refunded <= before:
            self.response = {"coins": 0, "note": "nothing more to refund"}
            return []
        coins = min(order["coins"] * refunded // price - order["coins"] * before // price,
                    lot["coins"] - lot["reversed_coins"])
        self.stages.append(("orders", {"refunded_minor": refunded}))
        options = self.service.options
        if before == 0:
            since = self.service.clock_ms() - options.risk_refunds_window_ms
            earlier = self.tx.rows("orders", {"buyer_id": order["buyer_id"],
                                              "refunded_minor >": 0, "paid_at_ms >=": since},
                                   limit=options.risk_refunds_max)
            if len(earlier) + 1 >= options.risk_refunds_max:
                reason = (f"{len(earlier) + 1} refunded orders within "
                          f"{options.risk_refunds_window_ms // 86_400_000} days")
                self.stages.append(("hold", "refund_history", reason))
        return self._reverse("refund", coins, refunded - before)

    def _dispute(self) -> list[TransferRequest]:
        order, price, lot = self.order, self.order["price_minor"], self.lot
        disputed = min(self.event.amount_minor, price - order["refunded_minor"])
        coins = min(order["coins"] * disputed // price, lot["coins"] - lot["reversed_coins"])
        self.stages.append(("orders", {"disputed_minor": disputed}))
        self.stages.append(("hold", "chargeback",
                            (f"chargeback on order {order['id']} ({disputed} "
                            f"{order['currency']} minor units)")))
        return self._reverse("dispute", coins, max(disputed, 0))

    def _reverse(self, cause: str, coins: int, cash_minor: int) -> list[TransferRequest]:
        lot, order = self.lot, self.order
        pieces = self._pieces()
        creators = sorted({piece.creator_id for piece in pieces})
        held_ids = self.service.ids([acc.held(c) for c in creators])
        balances = self.tx.balances(held_ids, lock=True)
        held = {c: balances[i].available if i in balances else 0
                for c, i in zip(creators, held_ids, strict=True)}
        plan = plan_reversal(coins, lot["remaining"], pieces, held)
        fee = order["price_minor"] - lot["net_minor"] - self._tax()
        cash = {"cash": cash_minor,
                "tax": self._tax() * cash_minor // order["price_minor"],
                "fee": (fee * cash_minor // order["price_minor"]
                        if order["channel"] != "web" else 0)}
        stored = {"cause": cause, "policy": self.region.refund_policy, "coins": plan.coins,
                  "unspent": plan.unspent, "left": plan.left, **cash,
                  "recoveries": [[r.gift_id, r.creator_id, r.coins, r.coins_recovered,
                                  r.diamonds] for r in plan.recoveries]}
        self.stages.append(("reversal", cause, stored))
        self.response = {"coins": plan.coins, "unspent": plan.unspent,
                         "recovered_diamonds": sum(r.diamonds for r in plan.recoveries),
                         "left": plan.left, "policy": self.region.refund_policy,
                         "gifts_reversed": len(plan.recoveries)}
        return self._legs(plan_from(stored), cash, forward=True)

    def _won(self) -> list[TransferRequest]:
        rows = self.tx.rows("reversals", {"order_id": self.order["id"], "cause": "dispute",
                                          "restored": 0})
        legs: list[TransferRequest] = []
        for row in rows:
            stored = orjson.loads(row["plan"])
            plan = plan_from(stored)
            legs += self._legs(plan, stored, forward=False)
            self.stages.append(("restore", row["id"], stored))
        self.stages.append(("orders", {"disputed_minor": 0}))
        self.response = {"restored": len(rows)}
        return legs

    def _tax(self) -> int:
        receipts = self.tx.rows("receipts", {"order_id": self.order["id"]})
        return int(receipts[0]["tax_minor"]) if receipts else 0

    def _pieces(self) -> list[SpentPiece]:
        tx, options = self.tx, self.service.options
        rows = tx.rows("gift_lots", {"lot_id": self.lot["id"]},
                       limit=options.reversal_pieces_max + 1)
        invariant(len(rows) <= options.reversal_pieces_max,
                  "more gift pieces than reversal_pieces_max")
        gifts = {}
        for start in range(0, len(rows), 1000):
            ids = [row["gift_id"] for row in rows[start:start + 1000]]
            gifts.update({g["id"]: g for g in tx.rows_in("gifts", "id", ids)})
        pieces = [SpentPiece(row["gift_id"], gifts[row["gift_id"]]["creator_id"],
                             row["coins"] - row["reversed_coins"],
                             gifts[row["gift_id"]]["coins"], gifts[row["gift_id"]]["diamonds"],
                             gifts[row["gift_id"]]["diamonds"]
                             - gifts[row["gift_id"]]["reversed_diamonds"],
                             bool(gifts[row["gift_id"]]["released"]))
                  for row in rows if row["coins"] > row["reversed_coins"]]
        # Newest first; gifts of one batch share a timestamp, so the id breaks ties the same way
        # on every store.
        pieces.sort(key=lambda p: (gifts[p.gift_id]["created_at_ms"], p.gift_id), reverse=True)
        return pieces

    # -- legs -------------------------------------------------------------------------------------

    def _legs(self, plan: ReversalPlan, cash: dict[str, Any], *,
              forward: bool) -> list[TransferRequest]:
        service, order = self.service, self.order
        owner, currency = self.lot["owner"], order["currency"]
        moves: list[tuple[acc.AccountKey, acc.AccountKey, int]] = [
            (acc.wallet(owner), acc.COIN_ISSUANCE, plan.unspent),
            (acc.COIN_REDEEMED, acc.COIN_ISSUANCE,
             sum(r.coins_recovered for r in plan.recoveries)),
        ]
        diamonds: dict[str, int] = {}
        for recovery in plan.recoveries:
            diamonds[recovery.creator_id] = diamonds.get(recovery.creator_id, 0) + recovery.diamonds
        moves += [(acc.held(creator), acc.DIAMOND_ISSUANCE, amount)
                  for creator, amount in sorted(diamonds.items())]
        sink = acc.coin_debt(owner) if cash.get("policy", self.region.refund_policy) == "debt" \
            else acc.COIN_LOSS
        moves.append((sink, acc.COIN_ISSUANCE, plan.left))
        provider = self.event.provider
        moves += [
            (acc.cash(currency), acc.provider_clearing(currency, provider), cash["cash"]),
            (acc.tax(currency), acc.cash(currency), cash["tax"]),
            (acc.store_fees(currency, provider), acc.cash(currency), cash["fee"]),
        ]
        code = "reversal" if forward else "restore"
        if not forward:
            moves = [(credit, debit, amount) for debit, credit, amount in moves]
        service.book.open({key for move in moves for key in move[:2]})
        return [service.leg(debit, credit, amount, code) for debit, credit, amount in moves
                if amount > 0]

    # -- writes -----------------------------------------------------------------------------------

    def stage(self) -> None:
        tx, service, order = self.tx, self.service, self.order
        for stage in self.stages:
            if stage[0] == "orders":
                tx.update("orders", {"id": order["id"]}, stage[1])
            elif stage[0] == "hold":
                service.hold(tx, order["buyer_id"], stage[1], stage[2])
            elif stage[0] == "reversal":
                self._stage_reversal(stage[1], stage[2], sign=1)
                tx.insert("reversals", {
                    "id": f"rev_{tx.next_ids(1)}", "order_id": order["id"], "cause": stage[1],
                    "coins": stage[2]["coins"], "plan": orjson.dumps(stage[2]).decode(),
                    "created_at_ms": service.clock_ms()})
            elif stage[0] == "restore":
                self._stage_reversal("dispute_won", stage[2], sign=-1)
                tx.update("reversals", {"id": stage[1]}, {"restored": 1})

    def _stage_reversal(self, cause: str, stored: dict[str, Any], *, sign: int) -> None:
        tx, lot = self.tx, self.lot
        tx.add("lots", {"id": lot["id"]}, {"remaining": -sign * stored["unspent"],
                                           "reversed_coins": sign * stored["coins"]})
        recoveries = stored["recoveries"]
        targets = {row["id"]: f"{row['target_kind']}:{row['target_id']}" for row in tx.rows_in(
            "gifts", "id", [r[0] for r in recoveries])} if recoveries else {}
        kind = "gift_reversed" if sign > 0 else "gift_restored"
        room_events = []
        for gift_id, creator_id, coins, _, diamonds in recoveries:
            tx.add("gift_lots", {"gift_id": gift_id, "lot_id": lot["id"]},
                   {"reversed_coins": sign * coins})
            tx.add("gifts", {"id": gift_id}, {"reversed_diamonds": sign * diamonds})
            if sign > 0:
                tx.update("gifts", {"id": gift_id}, {"reversed": 1})
            data = {"gift": gift_id, "creator": creator_id, "coins": coins,
                    "diamonds": diamonds, "cause": cause}
            self.service.emit(tx, kind, str(gift_id), data)
            room_events.append((targets[gift_id], kind, data))
        if room_events:
            self.service.stage_events(tx, room_events, self.service.clock_ms())


def plan_from(stored: dict[str, Any]) -> ReversalPlan:
    """A stored reversal plan back as a :class:`ReversalPlan`."""
    from giftflow.economy.lots import Recovery  # noqa: PLC0415

    return ReversalPlan(stored["coins"], stored["unspent"],
                        tuple(Recovery(*r) for r in stored["recoveries"]), stored["left"])
