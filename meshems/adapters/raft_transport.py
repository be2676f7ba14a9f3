"""pysyncobj's TCP transport, hardened for a LAN with an attacker on it.

pysyncobj 0.3.17 buffers whatever a connection sends before it authenticates anything (a
length prefix of 2**31 and random bytes grew a node by 54 MB and pinned its Raft thread,
so elections fired), keeps idle connections forever, and drops peers that fail
authentication without a word. `GuardedTransport` (given to SyncObj as its
`transportClass`) keeps pysyncobj's protocol and adds, per connection:
- a frame cap: a length prefix above the largest legitimate message closes the connection
  before a byte of the frame is buffered;
- until a peer has authenticated: a small byte budget, a deadline, and caps on how many
  such connections exist, per peer address and in all (the oldest goes first); a real
  listen backlog, and every pending connection accepted at once (pysyncobj: 5, one by one);
- reports (with the peer address) of frames refused, failed authentication, and of peers
  that keep closing our connections during the key exchange (they refuse our secret).
Nothing here decides anything about Raft; it only decides which bytes reach pysyncobj.

`GroupCommitTransport` (a mixin before it) decides when our replies and votes leave: not
before the journal is durable (group commit, see `raft_journal`).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from cryptography.fernet import InvalidToken
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

#: The largest frame an authenticated peer may send. The largest legitimate one is an
#: append_entries batch (APPEND_BATCH_BYTES plus one entry of at most 60 KiB) or a
#: snapshot chunk of 64 KiB, compressed, then Fernet-encrypted (x 4/3): under 256 KiB.
MAX_FRAME_BYTES = 1024 * 1024
#: pysyncobj's append_entries batch size (its default, set explicitly): above the largest
#: entry (core.commands.MAX_COMMAND_BYTES), so no entry takes pysyncobj's multi-message
#: "transmission" path
APPEND_BATCH_BYTES = 64 * 1024
#: before authentication (the key exchange and the node address, two small tokens): the
#: largest frame, and about what may be buffered
UNAUTH_BYTE_BUDGET = 4096
UNAUTH_DEADLINE_S = 3.0
MAX_UNAUTH_CONNECTIONS = 32
MAX_UNAUTH_PER_PEER = 8
#: pysyncobj listens with a backlog of 5 and accepts one connection per poll event: five
#: idle sockets kept peers out. Accept up to this many per event, with a real backlog.
LISTEN_BACKLOG = 128
ACCEPTS_PER_EVENT = 64
#: our connections a peer closed during the key exchange, in a row, before we say so
HANDSHAKE_REFUSALS = 3

#: (peer address, what happened) -> None; called on pysyncobj's tick thread
ViolationCallback = Callable[[str, str], None]


class _GuardedConnection(TcpConnection):
    """A TcpConnection with a frame cap and, until authenticated, a byte budget. Adopted
    by class swap (`_adopt`): pysyncobj creates the connections itself."""

    @property
    def encryptor(self) -> Any:
        return self.__dict__.get("_meshems_encryptor")

    @encryptor.setter
    def encryptor(self, value: Any) -> None:
        self.__dict__["_meshems_encryptor"] = None if value is None else _AuditingFernet(value, self)

    def _TcpConnection__processRead(self) -> bool:
        if not TcpConnection._TcpConnection__processRead(self):  # type: ignore[attr-defined]
            return False
        buf = self._TcpConnection__readBuffer  # type: ignore[attr-defined]
        # before authentication a frame may be only as large as the key exchange needs
        limit = self.__dict__.get("meshems_budget") or MAX_FRAME_BYTES
        if len(buf) >= 4:
            (length,) = struct.unpack_from("i", buf)
            if not 0 < length <= limit:
                return self._violation(f"announced a frame of {length} bytes (at most {limit} here)")
        # a whole frame is buffered: let pysyncobj parse it before reading more
        return len(buf) < limit + 4

    def _violation(self, what: str) -> bool:
        self.__dict__["meshems_violation"] = what
        self.disconnect()
        return False

    def peer_address(self) -> str:
        try:
            host, port = self._TcpConnection__socket.getpeername()[:2]  # type: ignore[attr-defined]
            return f"{host}:{port}"
        except (OSError, AttributeError, ValueError):
            return "?"


class _AuditingFernet:
    """pysyncobj's Fernet, noting on the connection that a peer failed authentication
    (pysyncobj disconnects it without a word)."""

    def __init__(self, inner: Any, conn: _GuardedConnection) -> None:
        self._inner, self._conn = inner, conn

    def encrypt_at_time(self, data: bytes, at: int) -> bytes:
        return self._inner.encrypt_at_time(data, at)

    def extract_timestamp(self, data: bytes) -> int:
        return self._checked(self._inner.extract_timestamp, data)

    def decrypt(self, data: bytes) -> bytes:
        return self._checked(self._inner.decrypt, data)

    def _checked(self, fn: Callable[[bytes], Any], data: bytes) -> Any:
        try:
            return fn(data)
        except (InvalidToken, TypeError, ValueError):
            self._conn.__dict__["meshems_violation"] = (
                "failed authentication: this node and that peer do not share the cluster secret "
                "(raft.secret_file must hold the same secret on every gateway)"
            )
            raise


class _GuardedServer(TcpServer):
    """pysyncobj's TcpServer with a real listen backlog, accepting every pending connection
    per event (the accept body is pysyncobj 0.3.17's, in a loop)."""

    def bind(self) -> None:
        super().bind()
        self._TcpServer__socket.listen(LISTEN_BACKLOG)  # type: ignore[attr-defined]

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:
        if event & POLL_EVENT_TYPE.READ:
            for _ in range(ACCEPTS_PER_EVENT):
                try:
                    sock, _addr = self._TcpServer__socket.accept()  # type: ignore[attr-defined]
                except BlockingIOError:
                    break
                except OSError:
                    self.unbind()
                    return
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpServer__sendBufferSize)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpServer__recvBufferSize)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                conn = TcpConnection(
                    poller=self._TcpServer__poller,
                    socket=sock,
                    timeout=self._TcpServer__connectionTimeout,
                    sendBufferSize=self._TcpServer__sendBufferSize,
                    recvBufferSize=self._TcpServer__recvBufferSize,
                    keepalive=self._TcpServer__keepalive,
                )
                self._TcpServer__onNewConnectionCallback(conn)
        if event & POLL_EVENT_TYPE.ERROR:
            self.unbind()


def _adopt(conn: TcpConnection) -> _GuardedConnection:
    encryptor = conn.__dict__.pop("encryptor", None)
    conn.__class__ = _GuardedConnection
    conn.encryptor = encryptor  # through the auditing setter
    return conn  # type: ignore[return-value]


class GuardedTransport(TCPTransport):
    """TCPTransport with the guards above; `on_violation` reports what it refused."""

    on_violation: ViolationCallback = staticmethod(lambda peer, what: None)

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self._unauth_since: dict[TcpConnection, float] = {}
        self._handshaking: set[TcpConnection] = set()
        self._handshake_refusals: dict[Any, int] = {}
        self._last_sweep = 0.0
        super().__init__(syncObj, selfNode, otherNodes)

    # --- incoming connections: unauthenticated until pysyncobj associates a node --------

    def _onNewIncomingConnection(self, conn: TcpConnection) -> None:
        guarded = _adopt(conn)
        guarded.__dict__["meshems_budget"] = UNAUTH_BYTE_BUDGET
        host = guarded.peer_address().rpartition(":")[0] or "?"
        guarded.__dict__["meshems_peer"] = host
        self._make_room(host)
        self._unauth_since[guarded] = time.monotonic()
        super()._onNewIncomingConnection(guarded)

    def _make_room(self, host: str) -> None:
        """Drop the oldest unauthenticated connection of this peer, or of all, over the caps."""
        while True:
            mine = [c for c in self._unauth_since if c.__dict__.get("meshems_peer") == host]
            if len(mine) >= MAX_UNAUTH_PER_PEER:
                pool = mine
            elif len(self._unauth_since) >= MAX_UNAUTH_CONNECTIONS:
                pool = list(self._unauth_since)
            else:
                return
            oldest = min(pool, key=self._unauth_since.__getitem__)
            oldest.__dict__["meshems_violation"] = f"dropped: too many unauthenticated connections ({host})"
            self._unauth_since.pop(oldest, None)
            oldest.disconnect()

    def _createServer(self) -> None:
        super()._createServer()
        self._server.__class__ = _GuardedServer

    def _onIncomingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        super()._onIncomingMessageReceived(conn, message)
        if conn not in self._unknownConnections and conn.state != CONNECTION_STATE.DISCONNECTED:
            conn.__dict__["meshems_budget"] = None  # an authenticated member now
            self._unauth_since.pop(conn, None)

    # --- outgoing connections: notice peers that refuse our key exchange -----------------

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None and not isinstance(conn, _GuardedConnection):
            _adopt(conn)

    def _onOutgoingConnected(self, conn: TcpConnection) -> None:
        self._handshaking.add(conn)
        super()._onOutgoingConnected(conn)

    def _onOutgoingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        if conn in self._handshaking:
            self._handshaking.discard(conn)
            node = self._connToNode(conn)
            self._handshake_refusals.pop(node, None)
        super()._onOutgoingMessageReceived(conn, message)

    def _onDisconnected(self, conn: TcpConnection) -> None:
        self._unauth_since.pop(conn, None)
        violation = conn.__dict__.pop("meshems_violation", None)
        node = self._connToNode(conn)
        peer = conn.__dict__.get("meshems_peer") or str(getattr(node, "address", "?"))
        if violation is not None:
            self.on_violation(peer, violation)
        if conn in self._handshaking:
            self._handshaking.discard(conn)
            n = self._handshake_refusals.get(node, 0) + 1
            self._handshake_refusals[node] = n
            if n % HANDSHAKE_REFUSALS == 0:
                self.on_violation(
                    peer,
                    f"closed our connection during the key exchange {n} times in a row: it refuses this "
                    "node's cluster secret (is raft.secret_file the same on every gateway?)",
                )
        super()._onDisconnected(conn)

    # --- deadline for unauthenticated connections -----------------------------------------

    def _onTick(self) -> None:
        super()._onTick()
        now = time.monotonic()
        if now - self._last_sweep < 0.2:
            return
        self._last_sweep = now
        for conn, since in list(self._unauth_since.items()):
            if now - since > UNAUTH_DEADLINE_S:
                conn.__dict__["meshems_violation"] = f"did not authenticate within {UNAUTH_DEADLINE_S:g} s"
                self._unauth_since.pop(conn, None)
                conn.disconnect()


# --- group commit: no message leaves ahead of the journal (see raft_journal) --------------


#: the messages that say something is on this node's disk: an appendEntries reply (its
#: entries), a vote and a vote request (term and vote, and the log they were judged by)
DURABLE_MESSAGES = frozenset({"next_node_idx", "response_vote", "request_vote"})
#: a sync at least this long moves the node's timers on (`_forgive_stall`)
STALL_FORGIVEN_S = 0.01


class GroupCommitTransport(TCPTransport):
    """Holds the messages that acknowledge something while the journal has unsynced
    changes, and every later message to the same peer (so each peer's order stays)."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self._held: list[tuple[Any, Any]] = []
        self._held_for: set[Any] = set()
        #: messages held and then sent after a sync, and the releases that synced
        self.held_sent = 0
        super().__init__(syncObj, selfNode, otherNodes)

    def _journal(self) -> Any:
        return getattr(self._syncObj, "_SyncObj__raftLog", None)

    def send(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if node in self._held_for or (
            kind in DURABLE_MESSAGES and getattr(self._journal(), "needs_sync", False)
        ):
            self._held.append((node, message))
            self._held_for.add(node)
            return True  # sent for pysyncobj: the connection may still drop it, as any send
        return bool(super().send(node, message))

    def release(self) -> None:
        """Sync the journal once, then send what was held (in order). DiskFullError: the
        held messages are dropped, unsent."""
        journal = self._journal()
        if getattr(journal, "needs_sync", False) or getattr(journal, "failed", None) is not None:
            started = time.monotonic()
            try:
                journal.sync()
            except Exception:
                self._held.clear()
                self._held_for.clear()
                raise
            self._forgive_stall(time.monotonic() - started)
        held, self._held = self._held, []
        self._held_for.clear()
        for node, message in held:
            super().send(node, message)
        self.held_sent += len(held)

    def _onTick(self) -> None:  # pysyncobj calls it just before its poll
        self.release()
        super()._onTick()

    def _forgive_stall(self, stalled_s: float) -> None:
        """Time this node spent in its own sync is no silence of its peers: their messages
        wait unread in the sockets. Move the election deadline, the pre-vote lease and a
        leader's last-response times on by it (a 0.3 s fdatasync under load otherwise
        started elections; timing only, safety does not depend on it)."""
        if stalled_s < STALL_FORGIVEN_S:
            return
        so: Any = self._syncObj
        so._SyncObj__raftElectionDeadline += stalled_s
        if hasattr(so, "_pv_leader_contact"):
            so._pv_leader_contact += stalled_s
        last = so._SyncObj__lastResponseTime
        for node in list(last):
            last[node] += stalled_s


def release_after_tick(syncobj: Any) -> None:
    """Send the replies a tick's poll held (call after SyncObj._onTick)."""
    transport = getattr(syncobj, "_SyncObj__transport", None)
    if isinstance(transport, GroupCommitTransport):
        transport.release()
