"""The backtest (issue 12 §3): how much would the rules save, and what would they break?

:mod:`monitor.backtest.score` (the oracle and the scores, pure), :mod:`monitor.backtest.run` (the
scenario through the simulator and the daemon's pipeline on a manual clock); the scenarios are
:mod:`monitor.sim.scenarios`.
"""
