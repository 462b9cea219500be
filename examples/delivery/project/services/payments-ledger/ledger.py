"""payments-ledger: a double-entry ledger (standard library only)."""

import os
from collections import defaultdict
from decimal import Decimal

CURRENCY = os.getenv("LEDGER_CURRENCY", "EUR")
PORT = int(os.getenv("PORT", "8003"))


class UnbalancedEntry(ValueError):
    """A journal entry whose debits and credits differ."""


class Ledger:
    def __init__(self):
        self._balances = defaultdict(Decimal)
        self.entries = []

    def post(self, memo, *legs):
        """Posts `(account, amount)` legs; debits are positive, credits negative."""
        amounts = [Decimal(str(amount)) for _, amount in legs]
        if len(legs) < 2 or sum(amounts) != 0:
            raise UnbalancedEntry(f"{memo}: legs sum to {sum(amounts)} {CURRENCY}, not 0")
        for (account, _), amount in zip(legs, amounts):
            self._balances[account] += amount
        self.entries.append((memo, legs))

    def balance(self, account):
        return self._balances[account]

    def trial_balance(self):
        """Sum of every balance: always zero for a consistent ledger."""
        return sum(self._balances.values(), Decimal(0))
