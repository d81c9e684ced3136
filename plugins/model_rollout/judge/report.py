"""placeholder"""


def fixed_horizon_report(*a, **k):
    raise NotImplementedError
