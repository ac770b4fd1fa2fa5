# ruff: noqa  -- written as 2019 code was, and kept so
from .gates import ScaledGate
