"""The history a nemesis run records: one Op per client request.

Times are time.monotonic_ns() of the one process that ran the clients, so they
are comparable across client threads. An op's interval is [call, ret]: the
request left after `call` and its answer arrived before `ret`.

Status is what the client knows about the outcome:
  ok       the answer says the operation took effect (a read: it returned `value`);
  fail     it certainly did not take effect (a refusal that the API documents as
           "not applied", or a connection that was never opened);
  unknown  it may or may not have taken effect (504, a timeout or a broken
           connection after the request was sent); `ret` is None, which the checker
           reads as "returned at infinity".
"""

from dataclasses import dataclass, field
from typing import Optional

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"


@dataclass
class Op:
    id: int
    client: int
    node: int  # 1-based node the request was sent to
    key: str
    kind: str  # a workload's operation name: "read", "write", ...
    arg: Optional[str]  # what the op asked for (the value written), or None
    call: int  # monotonic ns
    ret: Optional[int] = None  # monotonic ns; None while running or if unknown
    status: str = UNKNOWN
    result: Optional[str] = None  # what the op returned (the value read), if ok
    detail: str = ""  # HTTP status or error, for reports
    extra: dict = field(default_factory=dict)

    def describe(self, t0: int = 0) -> str:
        """One line: timing relative to t0 (seconds), node, op, outcome."""
        call = (self.call - t0) / 1e9
        ret = "    inf" if self.ret is None else "%7.3f" % ((self.ret - t0) / 1e9)
        if self.kind == "write":
            what = "write %s := %r" % (self.key, self.arg)
        elif self.kind == "read":
            what = "read  %s -> %r" % (self.key, self.result) if self.status == OK else \
                "read  %s" % self.key
        else:
            what = "%s %s %r -> %r" % (self.kind, self.key, self.arg, self.result)
        return "[%8.3f, %s] c%-2d node%d  %-44s %s%s" % (
            call, ret, self.client, self.node, what, self.status,
            (" (" + self.detail + ")") if self.detail and self.status != OK else "")


@dataclass
class Event:
    """A fault-schedule event (the nemesis's own log)."""
    t: int  # monotonic ns
    action: str  # "kill", "restart", "pause", "resume", "partition", "heal", ...
    text: str

    def describe(self, t0: int = 0) -> str:
        return "[%8.3f] nemesis  %-9s %s" % ((self.t - t0) / 1e9, self.action, self.text)
