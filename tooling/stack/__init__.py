"""The local stack: real Kafka (KRaft) and Redis as local processes, for dev, demo and tests."""

from tooling.stack.errors import StackError
from tooling.stack.manager import LocalStack, ProcessStatus, StackStatus, UpResult

__all__ = ["LocalStack", "ProcessStatus", "StackError", "StackStatus", "UpResult"]
