"""UDC search: ``space`` (decision variables, searchable layers, supernets), ``strategy``
(how decisions are made) and ``cost`` (size, MACs). Torch is imported only by space/strategy,
so the harness can use ``search.cost`` without it."""
