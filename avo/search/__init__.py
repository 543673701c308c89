"""Search strategies (avo, greedy), the acceptance rule, the stagnation supervisor, budgets."""
