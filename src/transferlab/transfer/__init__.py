"""What is reused and how: the target model (a source's prefix, the rest re-initialised, a new head) and the
strategies that decide what trains."""
