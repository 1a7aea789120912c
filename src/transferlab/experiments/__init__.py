"""Experiments: many ``fit`` runs and what they say together. ``compare`` (did transfer help?), ``rank`` (which
source?) and ``sweep`` (how many blocks to reuse?), sharing :mod:`.common` for their output folders."""
