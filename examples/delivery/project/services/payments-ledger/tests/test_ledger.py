import unittest
from decimal import Decimal

from ledger import Ledger, UnbalancedEntry


class LedgerTest(unittest.TestCase):
    def test_a_payment_moves_money_between_accounts(self):
        ledger = Ledger()
        ledger.post("order A-17", ("cash", "26.93"), ("sales", "-26.93"))
        self.assertEqual(ledger.balance("cash"), Decimal("26.93"))
        self.assertEqual(ledger.balance("sales"), Decimal("-26.93"))
        self.assertEqual(ledger.trial_balance(), 0)

    def test_an_unbalanced_entry_is_refused_and_changes_nothing(self):
        ledger = Ledger()
        with self.assertRaisesRegex(UnbalancedEntry, "refund: legs sum to 1"):
            ledger.post("refund", ("cash", "-4"), ("sales", "5"))
        self.assertEqual(ledger.entries, [])
        self.assertEqual(ledger.balance("cash"), 0)

    def test_a_single_leg_is_refused(self):
        with self.assertRaises(UnbalancedEntry):
            Ledger().post("half", ("cash", "0"))


if __name__ == "__main__":
    unittest.main()
