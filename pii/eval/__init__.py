"""Measuring inversions: the results schema (what metrics.json holds), the judge, the leaderboard,
the gallery and the speed benchmark. It reads runs; it never starts one."""
