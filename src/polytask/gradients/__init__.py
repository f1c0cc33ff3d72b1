"""Gradient modes: how the per-task gradients are taken and combined by a balancer.

One object per mode, each in its own file and registered in `MODES`; `backward` dispatches to
them for users' own training loops.
"""
