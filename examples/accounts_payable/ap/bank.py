"""The demo's accounts-payable tools and the simulated bank they pay through.

The bank is a real table: a payment is one row keyed by the step's idempotency key, so a
retried `pay_vendor` (after a crash between paying and reporting) returns the first
receipt instead of paying twice. `settle_seconds` simulates a slow bank call.

`refund_vendor` is `pay_vendor`'s declared compensation: it refunds the payment made
under the key in `tool_context().compensates`, once per payment (a second refund of the
same payment, under any key, returns the first refund).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy import Engine, Float, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from tether import AppContext, tool, tool_context
from tether.core.db import Base, create_tables  # the bank's tables live beside Tether's


class PaymentRow(Base):
    __tablename__ = "demo_bank_payments"

    idempotency_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    receipt_id: Mapped[str] = mapped_column(String(64))
    vendor: Mapped[str] = mapped_column(String(255))
    amount: Mapped[float] = mapped_column(Float)
    invoice_id: Mapped[str] = mapped_column(String(255))
    paid_at: Mapped[str] = mapped_column(String(40))


class RefundRow(Base):
    __tablename__ = "demo_bank_refunds"

    idempotency_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    payment_key: Mapped[str] = mapped_column(String(512), unique=True)
    refund_id: Mapped[str] = mapped_column(String(64))
    receipt_id: Mapped[str] = mapped_column(String(64))
    vendor: Mapped[str] = mapped_column(String(255))
    amount: Mapped[float] = mapped_column(Float)
    invoice_id: Mapped[str] = mapped_column(String(255))
    refunded_at: Mapped[str] = mapped_column(String(40))


class BankError(Exception):
    """The bank cannot do what was asked; the message names the key."""


class Payment(BaseModel):
    vendor: str
    amount: float = Field(gt=0)
    invoice_id: str
    currency: str = "USD"


class Receipt(BaseModel):
    receipt_id: str
    vendor: str
    amount: float
    invoice_id: str


class Refund(BaseModel):
    refund_id: str
    receipt_id: str
    vendor: str
    amount: float
    invoice_id: str


class BankChange(BaseModel):
    vendor: str
    new_account: str


class BankChangeResult(BaseModel):
    vendor: str
    changed: bool


class Bank:
    """A simulated bank: payments are rows, idempotent by key."""

    def __init__(self, engine: Engine, settle_seconds: float = 0.0) -> None:
        self.engine = engine
        self.settle_seconds = settle_seconds
        create_tables(engine)

    def pay(self, key: str, payment: Payment) -> Receipt:
        """Pay once per key; a repeated key returns the first payment's receipt."""
        for _ in range(2):
            try:
                with Session(self.engine) as session, session.begin():
                    row = session.get(PaymentRow, key)
                    if row is None:
                        row = PaymentRow(
                            idempotency_key=key,
                            receipt_id="rcpt-" + hashlib.sha256(key.encode()).hexdigest()[:12],
                            vendor=payment.vendor,
                            amount=payment.amount,
                            invoice_id=payment.invoice_id,
                            paid_at=datetime.now(UTC).isoformat(),
                        )
                        session.add(row)
                    return Receipt.model_validate(row, from_attributes=True)
            except IntegrityError:  # a concurrent retry paid first: read its receipt
                continue
        raise RuntimeError(f"payment {key!r} neither inserted nor found")

    def refund(self, key: str, payment_key: str) -> Refund:
        """Refund the payment made under `payment_key`, once; BankError when there is none."""
        for _ in range(2):
            try:
                with Session(self.engine) as session, session.begin():
                    row = session.execute(
                        select(RefundRow).where(RefundRow.payment_key == payment_key)
                    ).scalar_one_or_none()
                    if row is None:
                        paid = session.get(PaymentRow, payment_key)
                        if paid is None:
                            raise BankError(
                                f"no payment was made under key {payment_key!r}; nothing to "
                                "refund — check the step it compensates"
                            )
                        row = RefundRow(
                            idempotency_key=key,
                            payment_key=payment_key,
                            refund_id="rfnd-" + hashlib.sha256(key.encode()).hexdigest()[:12],
                            receipt_id=paid.receipt_id,
                            vendor=paid.vendor,
                            amount=paid.amount,
                            invoice_id=paid.invoice_id,
                            refunded_at=datetime.now(UTC).isoformat(),
                        )
                        session.add(row)
                    return Refund.model_validate(row, from_attributes=True)
            except IntegrityError:  # a concurrent retry refunded first: read its refund
                continue
        raise BankError(f"refund {key!r} neither inserted nor found")

    def refunds(self, invoice_id: str | None = None) -> list[Refund]:
        stmt = select(RefundRow).order_by(RefundRow.refunded_at)
        if invoice_id is not None:
            stmt = stmt.where(RefundRow.invoice_id == invoice_id)
        with Session(self.engine) as session:
            return [
                Refund.model_validate(r, from_attributes=True)
                for r in session.execute(stmt).scalars()
            ]

    def payments(self, invoice_id: str | None = None) -> int:
        stmt = select(func.count()).select_from(PaymentRow)
        if invoice_id is not None:
            stmt = stmt.where(PaymentRow.invoice_id == invoice_id)
        with Session(self.engine) as session:
            return int(session.execute(stmt).scalar_one())


class PaymentTools:
    """Tools of the accounts-payable agent."""

    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    @classmethod
    def from_app(cls, context: AppContext) -> PaymentTools:
        """Built by the worker: the demo bank's tables live in Tether's database."""
        return cls(Bank(context.engine, settle_seconds=context.settings.bank_settle_seconds))

    @tool(
        action="payments.pay",
        resource="vendor/{vendor}",
        context={"amount": float},
        side_effect=True,
        idempotent=True,
        compensate="refund_vendor",
        title="Pay {amount:$} to {vendor} for {invoice_id}",
        key_fields=("amount:$", "vendor", "invoice_id", "currency"),
        editable=("amount",),
    )
    async def pay_vendor(self, args: Payment) -> Receipt:
        key = tool_context().idempotency_key
        receipt = await asyncio.to_thread(self.bank.pay, key, args)
        if self.bank.settle_seconds:
            await asyncio.sleep(self.bank.settle_seconds)
        return receipt

    @tool(
        action="payments.refund",
        resource="vendor/{vendor}",
        context={"amount": float},
        side_effect=True,
        idempotent=True,
    )
    async def refund_vendor(self, args: Payment) -> Refund:
        """Undo `pay_vendor`: refund the payment of the step being compensated."""
        ctx = tool_context()
        if not ctx.compensates:
            raise BankError(
                f"refund_vendor for invoice {args.invoice_id!r} names no payment; it runs "
                "only as pay_vendor's compensation, when a reviewer flags the payment"
            )
        return await asyncio.to_thread(self.bank.refund, ctx.idempotency_key, ctx.compensates)

    @tool(
        action="vendors.update_bank_details",
        resource="vendor/{vendor}",
        context=(),  # the policy decides on who, not on the account number
        side_effect=True,
    )
    async def update_bank_details(self, args: BankChange) -> BankChangeResult:
        return BankChangeResult(vendor=args.vendor, changed=True)

    @tool(action="bench.touch", resource="vendor/{vendor}", context=())
    async def touch(self, args: BankChange) -> BankChangeResult:
        """A no-op tool, the subject of the workflow benchmark."""
        return BankChangeResult(vendor=args.vendor, changed=False)
