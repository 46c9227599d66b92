"""Removal as a stage: the library API (``remove``, ``Remover``), the per-photo pipeline that
``clearbg remove`` and both batch engines run, and the one result record they all write."""
