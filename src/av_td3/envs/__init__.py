"""Driving environments behind one contract (see ``contract.py``)."""
